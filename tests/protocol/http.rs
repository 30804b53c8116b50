//! The HTTP surface: admin publish, connections, metrics.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn admin_publish_http_surface_and_metrics() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(http_url(&pod, "/health")).send().await.expect("health").text().await.expect("t"), "ok");
    let mut ready = false;
    for _ in 0..50 {
        if http.get(http_url(&pod, "/readyz")).send().await.expect("readyz").status() == 200 {
            ready = true;
            break;
        }
        sleep_ms(100).await;
    }
    assert!(ready, "/readyz never became ready");
    let mut v1 = connect(&pod, false).await;
    let mut ext = connect(&pod, true).await;
    let sid = create_session(&mut ext).await;
    let publish = |body: Value, key: Option<&str>| {
        let mut r = http.post(http_url(&pod, "/admin/publish")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let key = "publish-key-0123456789";
    let body =
        json!({"target": {"type": "user", "id": "anonymous"}, "event": {"type": "order_shipped", "orderId": "A1"}});
    // The admin API's error vocabulary, as JSON, on every refusal.
    for (key, status, code) in [(None, 401, "UNAUTHENTICATED"), (Some("wrong-key-0123456789"), 401, "INVALID_TOKEN")] {
        let r = publish(body.clone(), key).await.expect("send");
        assert_eq!(r.status(), status);
        assert_eq!(r.json::<Value>().await.expect("a JSON body")["error"]["code"], code);
    }
    // A 10 MiB body is refused from its Content-Length, before it is read, with the same JSON shape.
    let answer = {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let mut tcp = tokio::net::TcpStream::connect(pod.addr).await.expect("tcp");
        let head = format!(
            "POST /admin/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\n\
             Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            10 * 1024 * 1024
        );
        tcp.write_all(head.as_bytes()).await.expect("head");
        let _ = tcp.write_all(&[b' '; 4096]).await;
        let mut answer = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), tcp.read_to_end(&mut answer)).await;
        String::from_utf8_lossy(&answer).into_owned()
    };
    assert!(answer.starts_with("HTTP/1.1 413"), "{answer}");
    let json_body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let refused: Value = serde_json::from_str(json_body.trim()).expect("a JSON body, not plain text");
    assert_eq!(refused["error"]["code"], "VALIDATION_ERROR", "{refused}");
    let r = publish(body, Some(key)).await.expect("send");
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"accepted": true}));
    assert_eq!(v1.recv().await, json!({"type": "order_shipped", "orderId": "A1"}));
    assert_eq!(ext.recv().await, json!({"type": "order_shipped", "orderId": "A1"}));
    // Session target: logged with a seq, only attached sockets get it.
    let r = publish(json!({"target": {"type": "session", "id": sid}, "event": {"type": "ticket_updated"}}), Some(key))
        .await
        .expect("send");
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"accepted": true, "seq": 1}));
    let mut got = ext.recv().await;
    assert!(got.as_object_mut().and_then(|o| o.remove("epoch")).is_some_and(|e| e.is_string()), "{got}");
    assert_eq!(got, json!({"type": "ticket_updated", "sessionId": sid, "seq": 1}));
    v1.expect_silence(Duration::from_millis(200)).await;
    // A body that is not exactly a target and an event object is refused, never published somewhere else.
    for bad in [
        json!({"target": {"type": "planet", "id": "x"}, "event": {}}),
        json!({"target": {"type": "session"}, "event": {}}),
        json!({"target": {"type": "org", "id": ""}, "event": {}}),
        json!({"target": {"type": "org", "id": "x"}, "event": "not an object"}),
        json!({"target": {"type": "org", "id": "x", "orgg": "typo"}, "event": {}}),
        json!({"target": {"type": "org", "id": "x"}, "event": {}, "extra": 1}),
    ] {
        let r = publish(bad.clone(), Some(key)).await.expect("send");
        assert_eq!(r.status(), 400, "{bad}");
        let body = r.json::<Value>().await.expect("json");
        assert_eq!(body["error"]["code"], "VALIDATION_ERROR", "{bad}: {body}");
    }
    // Registry view.
    let conns: Value = http
        .get(http_url(&pod, &format!("/admin/connections?session={sid}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(conns["connections"].as_array().map(Vec::len), Some(1));
    let metrics = http.get(http_url(&pod, "/metrics")).send().await.expect("metrics").text().await.expect("t");
    for m in [
        "switchboard_connections 2",
        "switchboard_events_published_total 1",
        "switchboard_errors_total{code=\"SESSION_NOT_FOUND\"} 0",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}:\n{metrics}");
    }
}

/// The metric names README.md's metrics table lists (first column, between its markers).
fn readme_metric_names() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let table = readme.split("<!-- metrics-table").nth(1).and_then(|t| t.split("<!-- end metrics-table").next());
    let rows = table.expect("README has a metrics table").lines().filter_map(|l| l.trim().strip_prefix("| `"));
    rows.flat_map(|row| {
        let first = row.split(" | ").next().unwrap_or("");
        first.split(", ").map(|n| n.trim_matches('`').split('{').next().unwrap_or("").to_string()).collect::<Vec<_>>()
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_every_metric_the_readme_lists_in_a_parsable_exposition() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    // A priced model and an MCP server (down: nothing listens there), so their labelled families have samples.
    cfg.llm.prices.insert(
        "gpt-4o-mini".into(),
        switchboard::config::ModelPrice { input_usd_per_mtok: 1.0, output_usd_per_mtok: 1.0 },
    );
    cfg.mcp.servers = vec![switchboard::config::McpServerConfig {
        name: "down".into(),
        url: format!("http://127.0.0.1:{}/mcp", support::ports::free_port()),
        headers: Default::default(),
        header_values: Default::default(),
        timeout_ms: 500,
        allow: vec![],
        deny: vec![],
    }];
    cfg.agents[0].mcp_servers = vec!["down".into()];
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    llm.push(Reply::tool_call("c0", "down__echo", &json!({})));
    llm.push(Reply::text_with_usage(&["hi ", "there"], 3, 2));
    send_message(&mut c, &sid, "r1", "hello").await;
    until_terminal(&mut c, "r1").await;

    let names = readme_metric_names();
    assert!(names.len() >= 20, "the README table lists the metrics: {names:?}");
    let m = scrape(&pod).await;
    for name in &names {
        let served = m.0.samples.iter().any(|s| &s.metric == name);
        assert!(served, "README lists {name}, /metrics does not serve it");
    }
    // Typed values, read through the parser.
    assert_eq!(m.value("switchboard_connections", &[]), 1.0);
    assert_eq!(m.value("switchboard_turns_started_total", &[]), 1.0);
    assert_eq!(m.value("switchboard_turns_total", &[("outcome", "completed")]), 1.0);
    assert_eq!(m.value("switchboard_errors_total", &[("code", "TURN_IN_PROGRESS")]), 0.0);
    assert!(m.value("switchboard_events_published_total", &[]) >= 3.0, "202 is not logged; tokens and the end are");
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
    assert!(
        (m.value("switchboard_cost_usd_total", &[("model", "gpt-4o-mini")]) - 5e-6).abs() < 1e-12,
        "5 tokens at $1/M"
    );
    assert_eq!(m.value("switchboard_mcp_server_up", &[("server", "down")]), 0.0);
    assert_eq!(
        m.value("switchboard_mcp_calls_total", &[("server", "down"), ("tool", "echo"), ("outcome", "error")]),
        1.0
    );
    let ttft = m.0.samples.iter().find(|s| s.metric == "switchboard_llm_time_to_first_token_seconds");
    match ttft.map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().map(|b| b.count), Some(2.0), "two model calls observed: {buckets:?}")
        }
        other => panic!("time to first token is not a histogram: {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_refuses_server_fields_and_unknown_sessions_and_is_idempotent() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, true).await;
    let sid = create_session(&mut c).await;
    let http = reqwest::Client::new();
    let publish = |body: Value, key: Option<&'static str>| {
        let mut req = http.post(http_url(&pod, "/admin/publish")).bearer_auth("publish-key-0123456789").json(&body);
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send()
    };
    for field in ["seq", "sessionId", "epoch"] {
        let r = publish(json!({"target": {"type": "session", "id": sid}, "event": {"type": "x", field: 1}}), None)
            .await
            .expect("send");
        assert_eq!(r.status(), 400, "{field}");
        let body: Value = r.json().await.expect("json");
        assert!(body["error"]["message"].as_str().unwrap_or("").contains(field), "{body}");
    }
    let unknown =
        json!({"target": {"type": "session", "id": "00000000-0000-0000-0000-000000000000"}, "event": {"type": "x"}});
    let r = publish(unknown, None).await.expect("send");
    assert_eq!(r.status(), 404);

    // The same Idempotency-Key twice: one event in the log, the first answer again.
    let event = json!({"target": {"type": "session", "id": sid}, "event": {"type": "order_shipped", "n": 1}});
    let first: Value = publish(event.clone(), Some("order-1-shipped")).await.expect("send").json().await.expect("json");
    let again = publish(event.clone(), Some("order-1-shipped")).await.expect("send");
    assert_eq!(again.status(), 202);
    assert_eq!(again.json::<Value>().await.expect("json"), first);
    let got = c.recv().await;
    assert_eq!((got["type"].as_str(), got["seq"].as_u64()), (Some("order_shipped"), first["seq"].as_u64()));
    c.expect_silence(Duration::from_millis(300)).await;
    let logged = pod.backends().log.read_after(&sid, 0, 100).await.expect("log");
    assert_eq!(logged.iter().filter(|(_, e)| e.contains("order_shipped")).count(), 1, "published once");
    // Another key publishes again.
    let other: Value = publish(event, Some("order-1-shipped-2")).await.expect("send").json().await.expect("json");
    assert_eq!(other["seq"].as_u64(), first["seq"].as_u64().map(|s| s + 1));
}
