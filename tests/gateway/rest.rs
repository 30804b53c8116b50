//! `POST /api/chat`, approvals, `GET`/`DELETE /api/sessions`, auth, CORS and every bad input.

use std::time::Duration;

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_answers_and_the_namespace_is_an_ordinary_session() {
    let (llm, tools) = setup().await;
    let pod = pod(keyed(&llm, &tools)).await;
    llm.push(Reply::text_with_usage(&["Hello ", "there"], 5, 7));
    let (status, body) = post(&pod, "/api/chat", Some(KEY_A), json!({"message": "hi"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["message"], "Hello there");
    assert_eq!(body["usage"], json!({"input_tokens": 5, "output_tokens": 7, "total_tokens": 12}));
    assert_eq!(body["agent"], "Aria", "the agent's display name, as herald answers");
    let ns = body["namespace"].as_str().expect("namespace").to_string();
    assert!(ns.starts_with("web:"), "{ns}");

    let resp = reqwest::Client::new()
        .get(http_url(&pod, &format!("/api/sessions/{ns}")))
        .bearer_auth(KEY_A)
        .send()
        .await
        .expect("get");
    for (h, v) in [
        ("x-content-type-options", "nosniff"),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "strict-origin-when-cross-origin"),
    ] {
        assert_eq!(resp.headers().get(h).and_then(|v| v.to_str().ok()), Some(v), "{h}");
    }
    let shown: Value = resp.json().await.expect("json");
    let roles: Vec<(&str, &str)> = shown["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .map(|m| (m["role"].as_str().unwrap_or(""), m["content"].as_str().unwrap_or("")))
        .collect();
    assert_eq!(roles, [("user", "hi"), ("assistant", "Hello there")]);
    let (_, list) = get(&pod, "/api/sessions", Some(KEY_A)).await;
    assert!(list
        .as_array()
        .expect("a bare array, as herald lists sessions")
        .iter()
        .any(|s| s["namespace"] == ns.as_str()));

    // The same session through the smooth-operator protocol, with the API key on the socket.
    let url = format!("{}?token={KEY_A}", ws_url(&pod));
    let mut ws = support::ws::Client::connect_with(&url, Some("switchboard"), None).await.expect("ws");
    ws.send(&json!({"action": "list_conversations", "requestId": "l"})).await;
    let listed = ws.recv().await;
    let convs = listed["data"]["conversations"].as_array().expect("conversations").clone();
    assert!(convs.iter().any(|c| c["title"] == "hi"), "{listed}");
    let sid = shown["session_id"].as_str().expect("session_id");
    ws.send(&json!({"action": "resume_session", "requestId": "r", "sessionId": sid, "afterSeq": 0})).await;
    let replay = ws.recv_until(|v| v["type"] == "eventual_response").await;
    assert_eq!(replay[0]["data"]["recovered"], true);
    assert_eq!(tokens(&replay), "Hello there");
    assert!(replay.iter().skip(1).all(|e| e["seq"].as_u64().is_some()), "every replayed event has its seq");

    // Another caller neither sees the namespace nor disturbs it by using the same name.
    assert_eq!(get(&pod, &format!("/api/sessions/{ns}"), Some(KEY_B)).await.0, 404);
    llm.push(Reply::text(&["own"]));
    let (status, other) = post(&pod, "/api/chat", Some(KEY_B), json!({"message": "mine", "namespace": ns})).await;
    assert_eq!((status, other["message"].as_str()), (200, Some("own")));
    let (_, again) = get(&pod, &format!("/api/sessions/{ns}"), Some(KEY_A)).await;
    assert_eq!(again["messages"].as_array().map(Vec::len), Some(2), "the first caller's history is untouched");
}

async fn approval_round_trip(store: Store) {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("deleted")));
    let p = pods(2, keyed(&llm, &tools), &store).await;
    llm.push(Reply::tool_call("call-9", "delete_record", &json!({"id": "7"})));
    llm.push(Reply::text(&["done"]));
    let (status, parked) =
        post(&p[0], "/api/chat", Some(KEY_A), json!({"message": "delete 7", "namespace": "orders-1"})).await;
    assert_eq!(status, 202, "{parked}");
    assert_eq!(parked["status"], "pending_approval");
    assert_eq!(parked["namespace"], "orders-1");
    assert_eq!(
        parked["approval"],
        json!({"call_id": "call-9", "tool_name": "delete_record", "arguments": {"id": "7"}})
    );
    assert_eq!(tools.calls("delete_record").len(), 0, "nothing runs before the decision");

    // Approved on the other pod: the resumed turn answers there.
    let path = "/api/sessions/orders-1/approvals/call-9";
    let (status, done) = post(&p[1], path, Some(KEY_A), json!({"approved": true})).await;
    assert_eq!((status, done["message"].as_str()), (200, Some("done")), "{done}");
    assert_eq!(tools.calls("delete_record").len(), 1);
    // A repeated decision gets the first decision's answer again, and runs nothing.
    let (status, again) = post(&p[0], path, Some(KEY_A), json!({"approved": false})).await;
    assert_eq!((status, again["message"].as_str()), (200, Some("done")), "{again}");
    assert_eq!(tools.calls("delete_record").len(), 1);
    let (status, unknown) =
        post(&p[1], "/api/sessions/orders-1/approvals/nope", Some(KEY_A), json!({"approved": true})).await;
    assert_eq!((status, unknown["code"].as_str()), (404, Some("not_found")));
    let (status, _) = post(&p[1], path, Some(KEY_B), json!({"approved": true})).await;
    assert_eq!(status, 404, "another caller's namespace");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_round_trip_on_memory() {
    approval_round_trip(Store::Memory(switchboard::backend::memory::MemoryBackend::new(&Config::default()))).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn approval_round_trip_across_pods_on_redis() {
    let redis = support::redis::RedisServer::start();
    approval_round_trip(Store::Redis(redis.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_turn_at_a_time_and_delete_cancels_it() {
    let (llm, tools) = setup().await;
    let pod = std::sync::Arc::new(pod(keyed(&llm, &tools)).await);
    llm.push(Reply::Hang);
    let first = tokio::spawn({
        let pod = pod.clone();
        async move { post(&pod, "/api/chat", Some(KEY_A), json!({"message": "long", "namespace": "busy"})).await }
    });
    // The user's message is stored once the turn holds the lease.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, shown) = get(&pod, "/api/sessions/busy", Some(KEY_A)).await;
        if shown["messages"].as_array().is_some_and(|m| !m.is_empty()) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the turn never started");
        sleep_ms(20).await;
    }
    let (status, second) = post(&pod, "/api/chat", Some(KEY_A), json!({"message": "again", "namespace": "busy"})).await;
    assert_eq!((status, second["code"].as_str()), (409, Some("turn_in_progress")), "{second}");

    let (status, deleted) = call(&pod, reqwest::Method::DELETE, "/api/sessions/busy", Some(KEY_A), None).await;
    assert_eq!((status, deleted), (200, json!({"deleted": true})));
    let (status, ended) = first.await.expect("join");
    assert_eq!((status, ended["code"].as_str()), (409, Some("cancelled")), "{ended}");
    assert_eq!(get(&pod, "/api/sessions/busy", Some(KEY_A)).await.0, 404);
    let (_, list) = get(&pod, "/api/sessions", Some(KEY_A)).await;
    assert!(!list.as_array().expect("a bare array, as herald lists sessions").iter().any(|s| s["namespace"] == "busy"));
    assert_eq!(call(&pod, reqwest::Method::DELETE, "/api/sessions/busy", Some(KEY_A), None).await.0, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_gets_its_status_and_code() {
    let (llm, tools) = setup().await;
    let mut cfg = keyed(&llm, &tools);
    cfg.http.cors_origins = vec!["https://app.example".into()];
    let pod = pod(cfg).await;
    let chat = |body: Value| post(&pod, "/api/chat", Some(KEY_A), body);
    let expect = |got: (u16, Value), status: u16, code: &str| {
        assert_eq!((got.0, got.1["code"].as_str()), (status, Some(code)), "{}", got.1);
        assert!(got.1["error"].as_str().is_some_and(|e| !e.is_empty()), "{}", got.1);
    };
    expect(post(&pod, "/api/chat", None, json!({"message": "hi"})).await, 401, "unauthorized");
    expect(
        post(&pod, "/api/chat", Some("garbage-key-0000000000"), json!({"message": "hi"})).await,
        401,
        "unauthorized",
    );
    expect(get(&pod, "/api/sessions", Some("revoked-key-111111111")).await, 401, "unauthorized");
    let raw = reqwest::Client::new()
        .post(http_url(&pod, "/api/chat"))
        .bearer_auth(KEY_A)
        .body("not json")
        .send()
        .await
        .expect("send");
    expect((raw.status().as_u16(), raw.json().await.expect("json")), 400, "invalid_request");
    expect(chat(json!({"message": 5})).await, 400, "invalid_request");
    expect(chat(json!({"text": "no message"})).await, 400, "invalid_request");
    expect(chat(json!({"message": "  "})).await, 400, "invalid_request");
    expect(chat(json!({"message": "x".repeat(10_001)})).await, 400, "invalid_request");
    expect(chat(json!({"message": "x".repeat(2 * 1024 * 1024)})).await, 413, "too_large");
    expect(chat(json!({"message": "hi", "agent": "no-such-agent"})).await, 404, "not_found");
    expect(chat(json!({"message": "hi", "model": "not-offered"})).await, 400, "invalid_request");
    for ns in ["a/b", "a..b", &"n".repeat(300), "tab\there", "nul\u{0}"] {
        expect(chat(json!({"message": "hi", "namespace": ns})).await, 400, "invalid_request");
    }
    expect(get(&pod, "/api/sessions/never-used", Some(KEY_A)).await, 404, "not_found");
    expect(
        post(&pod, "/api/sessions/never-used/approvals/c1", Some(KEY_A), json!({"approved": true})).await,
        404,
        "not_found",
    );
    expect(
        post(&pod, "/api/sessions/never-used/approvals/c1", Some(KEY_A), json!({"approved": "yes"})).await,
        400,
        "invalid_request",
    );
    expect(post(&pod, "/api/chat/stream", Some(KEY_A), json!({"message": ""})).await, 400, "invalid_request");
    assert_eq!(llm.request_count(), 0, "no bad request reached the model");
    let (_, list) = get(&pod, "/api/sessions", Some(KEY_A)).await;
    assert_eq!(list, json!([]), "no refused request left a namespace behind");

    // Another caller's namespace is not there for any route.
    llm.push(Reply::text(&["mine"]));
    assert_eq!(post(&pod, "/api/chat", Some(KEY_B), json!({"message": "hi", "namespace": "b-only"})).await.0, 200);
    expect(call(&pod, reqwest::Method::DELETE, "/api/sessions/b-only", Some(KEY_A), None).await, 404, "not_found");
    expect(get(&pod, "/api/sessions/b-only", Some(KEY_A)).await, 404, "not_found");
    // The model failing (every retry) is 502 model_unavailable.
    llm.push(Reply::Status(503));
    llm.push(Reply::Status(503));
    expect(chat(json!({"message": "hi"})).await, 502, "model_unavailable");
    // A bad key on the socket is refused as on REST; a good one works as a header too.
    assert_eq!(support::ws::Client::connect_err_status(&ws_url(&pod), Some("garbage-key-0000000000")).await, Some(401));
    assert!(support::ws::Client::connect_with(&ws_url(&pod), None, Some(KEY_A)).await.is_ok());

    // CORS: the configured origin is allowed a preflight, another is not.
    let preflight = |origin: &'static str| {
        reqwest::Client::new()
            .request(reqwest::Method::OPTIONS, http_url(&pod, "/api/chat"))
            .header("Origin", origin)
            .header("Access-Control-Request-Method", "POST")
            .header("Access-Control-Request-Headers", "authorization, content-type")
            .send()
    };
    let ok = preflight("https://app.example").await.expect("preflight");
    assert_eq!(
        ok.headers().get("access-control-allow-origin").and_then(|v| v.to_str().ok()),
        Some("https://app.example")
    );
    let refused = preflight("https://evil.example").await.expect("preflight");
    assert!(refused.headers().get("access-control-allow-origin").is_none(), "no CORS grant for another origin");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_caller_whose_pod_dies_mid_turn_retries_on_another_pod() {
    let (llm, tools) = setup().await;
    let redis = support::redis::RedisServer::start();
    let mut p = pods(2, keyed(&llm, &tools), &Store::Redis(redis.url())).await;
    llm.push(Reply::Hang);
    let a = p.remove(0);
    let addr = a.addr;
    let cut = tokio::spawn(async move {
        reqwest::Client::new()
            .post(format!("http://{addr}/api/chat"))
            .bearer_auth(KEY_A)
            .json(&json!({"message": "long", "namespace": "retry-1"}))
            .send()
            .await
    });
    let b = &p[0];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let (_, shown) = get(b, "/api/sessions/retry-1", Some(KEY_A)).await;
        if shown["turn"]["state"] == "running" {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the turn never started: {shown}");
        sleep_ms(20).await;
    }
    // Killed only once its model call is out: under load the turn can be "running" before the request reaches
    // the model, and the hanging reply would then be left for the retry.
    llm.wait_for_requests(1, Duration::from_secs(10)).await;
    a.kill();
    // In a real pod death the caller's connection is cut; here the request task is simply dropped.
    cut.abort();
    // Retrying at once finds the turn still holding the namespace.
    let (status, busy) = post(b, "/api/chat", Some(KEY_A), json!({"message": "retry", "namespace": "retry-1"})).await;
    assert_eq!((status, busy["code"].as_str()), (409, Some("turn_in_progress")));
    // The dead pod's turn is ended by a sweeper (TURN_INTERRUPTED) within the lease (2 s here) + 1 s.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(6);
    while get(b, "/api/sessions/retry-1", Some(KEY_A)).await.1["turn"]["state"] != "idle" {
        assert!(tokio::time::Instant::now() < deadline, "the dead pod's turn never ended");
        sleep_ms(100).await;
    }
    llm.push(Reply::text(&["back"]));
    let (status, done) = post(b, "/api/chat", Some(KEY_A), json!({"message": "retry", "namespace": "retry-1"})).await;
    assert_eq!((status, done["message"].as_str()), (200, Some("back")), "{done}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_callers_and_the_rate_limit() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let (llm, tools) = setup().await;
    let mut cfg = keyed(&llm, &tools);
    cfg.auth.mode = switchboard::config::AuthMode::Jwt;
    cfg.auth.jwt_hs256_secret = "gateway-test-secret-0123456789abcdef".into();
    cfg.limits.messages_per_minute = 1;
    let pod = pod(cfg).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let token = encode(
        &Header::default(),
        &json!({"sub": "carol", "org": "acme", "exp": exp}),
        &EncodingKey::from_secret(b"gateway-test-secret-0123456789abcdef"),
    )
    .expect("token");
    llm.push(Reply::text(&["hi carol"]));
    let (status, body) = post(&pod, "/api/chat", Some(&token), json!({"message": "hi", "namespace": "jwt-1"})).await;
    assert_eq!((status, body["message"].as_str()), (200, Some("hi carol")), "{body}");
    // The token's user, not an API key's, owns the namespace.
    assert_eq!(get(&pod, "/api/sessions/jwt-1", Some(&token)).await.0, 200);
    assert_eq!(get(&pod, "/api/sessions/jwt-1", Some(KEY_A)).await.0, 404);
    let (status, limited) =
        post(&pod, "/api/chat", Some(&token), json!({"message": "again", "namespace": "jwt-1"})).await;
    assert_eq!((status, limited["code"].as_str()), (429, Some("rate_limited")));
    assert_eq!(post(&pod, "/api/chat", None, json!({"message": "hi"})).await.0, 401, "jwt mode needs a credential");
}
