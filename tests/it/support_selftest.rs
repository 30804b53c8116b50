//! Proves the shared test support works against real processes and real sockets, so a failure in a
//! gateway test can be trusted to be the gateway's and not the harness's.

use crate::support;

use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use futures_util::StreamExt;
use serde_json::{json, Value};

use support::llm::{split_in_three, FakeLlm, Reply};
use support::redis::{RedisCluster, RedisSentinel, RedisServer};
use support::tools::{Behaviour, FakeTools};
use support::ws::{Client, Frame, SWITCHBOARD_PROTOCOL};

// ---------------------------------------------------------------- redis

#[test]
fn redis_server_starts_kills_and_restarts_on_same_port() {
    let mut a = RedisServer::start();
    let b = RedisServer::start();
    assert_ne!(a.port(), 6379);
    assert_ne!(a.port(), b.port(), "two servers must get distinct ports");
    assert_eq!(a.url(), format!("redis://127.0.0.1:{}", a.port()));
    assert_eq!(a.cli(&["PING"]), "PONG");
    assert_eq!(a.cli(&["SET", "k", "v"]), "OK");
    assert_eq!(a.cli(&["GET", "k"]), "v");
    // Persistence must be off so a restart really loses data.
    assert_eq!(a.cli(&["CONFIG", "GET", "save"]), "save", "an empty save value (cli() trims the newline)");
    assert_eq!(a.cli(&["CONFIG", "GET", "appendonly"]), "appendonly\nno");

    let port = a.port();
    a.kill();
    assert!(!a.ping(), "killed server still answers");
    assert_eq!(a.cli(&["PING"]), "", "redis-cli to a dead server prints nothing on stdout");
    assert!(b.ping(), "killing one server must not affect another");

    a.restart();
    assert_eq!(a.port(), port);
    assert_eq!(a.cli(&["PING"]), "PONG");
    assert_eq!(a.cli(&["EXISTS", "k"]), "0", "data survived a restart without persistence");

    // Restart of a running server also works (kill first).
    a.restart();
    assert!(a.ping());

    let pid = a.pid().expect("running");
    drop(a);
    assert!(!std::path::Path::new(&format!("/proc/{pid}")).exists(), "redis-server {pid} still exists after drop");
}

#[test]
fn redis_server_pause_makes_it_unresponsive_until_resumed() {
    let server = RedisServer::start();
    server.pause();
    assert!(!server.ping(), "a SIGSTOPped server must not answer");
    server.resume();
    assert!(server.ping());
}

#[test]
fn redis_cluster_forms_and_serves_keys_on_all_nodes() {
    let cluster = RedisCluster::start();
    let ports = cluster.ports();
    assert_eq!(ports.len(), 3);
    assert!(ports.iter().all(|p| *p < 55_000));
    assert_eq!(cluster.url(), format!("redis-cluster://127.0.0.1:{}", ports[0]));
    assert_eq!(cluster.seed_urls(), ports.iter().map(|p| format!("redis://127.0.0.1:{p}")).collect::<Vec<_>>());
    for node in cluster.nodes() {
        let info = node.cli(&["CLUSTER", "INFO"]);
        assert!(info.contains("cluster_state:ok"), "{info}");
        assert!(info.contains("cluster_slots_assigned:16384"), "{info}");
    }
    // Keys spread over slots owned by different nodes; `-c` follows the redirects.
    for i in 0..20 {
        let key = format!("key-{i}");
        assert_eq!(cluster.cli(&["SET", &key, &i.to_string()]), "OK");
        assert_eq!(cluster.cli(&["GET", &key]), i.to_string());
    }
    let nodes_with_keys = cluster.nodes().iter().filter(|n| n.cli(&["DBSIZE"]).parse::<u32>().unwrap() > 0).count();
    assert!(nodes_with_keys > 1, "20 keys all landed on one node");
}

#[test]
fn redis_sentinel_fails_over_to_the_replica() {
    let mut set = RedisSentinel::start();
    assert_eq!(set.url(), format!("redis-sentinel://127.0.0.1:{}/mymaster", set.sentinel_port()));
    assert_eq!(set.current_master_port(), Some(set.master_port()));
    assert_eq!(set.master().cli(&["SET", "k", "v"]), "OK");
    // Not WAIT: each cli() call is its own connection, and WAIT only covers the caller's own writes.
    support::redis::wait_until(Duration::from_secs(5), "the write to reach the replica", || {
        set.replica().cli(&["GET", "k"]) == "v"
    });

    let started = Instant::now();
    set.kill_master();
    let new_port = set.wait_for_failover(Duration::from_secs(30));
    eprintln!("sentinel failover took {:?}", started.elapsed());
    assert_eq!(new_port, set.replica_port());
    assert_eq!(set.current_master_port(), Some(new_port));
    assert_eq!(set.replica().cli(&["GET", "k"]), "v", "replicated data lost");
    assert_eq!(set.replica().cli(&["SET", "k2", "v2"]), "OK", "promoted replica refuses writes");
}

// ---------------------------------------------------------------- fake LLM

/// Splits an SSE body into its `data:` payloads, asserting the framing a real client depends on.
fn sse_data(body: &str) -> Vec<String> {
    assert!(body.ends_with("\n\n"), "SSE body must end with a blank line: {body:?}");
    body.trim_end()
        .split("\n\n")
        .map(|event| {
            event
                .strip_prefix("data: ")
                .unwrap_or_else(|| panic!("SSE event without data: prefix: {event:?}"))
                .to_string()
        })
        .collect()
}

async fn post_chat(llm: &FakeLlm, body: Value) -> reqwest::Response {
    reqwest::Client::new()
        .post(format!("{}/chat/completions", llm.base_url()))
        .bearer_auth("sk-test")
        .json(&body)
        .send()
        .await
        .expect("POST to fake llm")
}

#[tokio::test]
async fn fake_llm_streams_text_usage_and_records_requests() {
    let llm = FakeLlm::start().await;
    assert!(llm.base_url().starts_with("http://127.0.0.1:") && llm.base_url().ends_with("/v1"));
    llm.push(Reply::text_with_usage(&["Hel", "lo ", "world"], 10, 3));
    llm.push(Reply::Status(429));

    let request = json!({"model": "m1", "stream": true, "messages": [{"role": "user", "content": "hi"}]});
    let resp = post_chat(&llm, request.clone()).await;
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "text/event-stream");
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));
    let chunks: Vec<Value> =
        data[..data.len() - 1].iter().map(|d| serde_json::from_str(d).expect("chunk JSON")).collect();
    assert!(chunks.iter().all(|c| c["object"] == "chat.completion.chunk" && c["model"] == "m1"));
    let text: String =
        chunks.iter().filter_map(|c| c["choices"].get(0)?["delta"]["content"].as_str().map(str::to_string)).collect();
    assert_eq!(text, "Hello world");
    assert_eq!(chunks[0]["choices"][0]["delta"]["role"], "assistant");
    let finish: Vec<&Value> = chunks
        .iter()
        .filter_map(|c| c["choices"].get(0))
        .map(|c| &c["finish_reason"])
        .filter(|f| !f.is_null())
        .collect();
    assert_eq!(finish, vec![&json!("stop")]);
    let usage = chunks.last().unwrap();
    assert_eq!(usage["choices"], json!([]));
    assert_eq!(usage["usage"], json!({"prompt_tokens": 10, "completion_tokens": 3, "total_tokens": 13}));

    let resp = post_chat(&llm, request.clone()).await;
    assert_eq!(resp.status(), 429);
    let err: Value = resp.json().await.unwrap();
    assert_eq!(err["error"]["code"], 429);

    // Script exhausted: default "ok" reply.
    let data = sse_data(&post_chat(&llm, request.clone()).await.text().await.unwrap());
    let first: Value = serde_json::from_str(&data[0]).unwrap();
    assert_eq!(first["choices"][0]["delta"]["content"], "ok");

    assert_eq!(llm.request_count(), 3);
    assert_eq!(llm.requests()[0], request);
    assert_eq!(llm.auth_headers(), vec![Some("Bearer sk-test".to_string()); 3]);
    assert_eq!(llm.completed_streams(), 2);
}

#[tokio::test]
async fn fake_llm_streams_fragmented_tool_calls() {
    let llm = FakeLlm::start().await;
    let args0 = json!({"id": "rec-42", "reason": "customer asked ✓"}).to_string();
    let args1 = json!({"q": "shipping"}).to_string();
    llm.push(Reply::ToolCalls {
        calls: vec![
            ("call_0".into(), "delete_record".into(), args0.clone()),
            ("call_1".into(), "search".into(), args1.clone()),
        ],
        usage: Some((20, 7)),
    });

    let resp = post_chat(&llm, json!({"model": "m", "stream": true, "messages": []})).await;
    let data = sse_data(&resp.text().await.unwrap());
    assert_eq!(data.last().map(String::as_str), Some("[DONE]"));

    // Reassemble like an OpenAI client: by index; id/name only on each call's first delta.
    let mut calls: Vec<(String, String, String, usize)> = Vec::new();
    let mut finish = None;
    let mut usage = None;
    for d in &data[..data.len() - 1] {
        let chunk: Value = serde_json::from_str(d).unwrap();
        if let Some(u) = chunk.get("usage") {
            usage = Some(u.clone());
        }
        let Some(choice) = chunk["choices"].get(0) else {
            continue;
        };
        if let Some(f) = choice["finish_reason"].as_str() {
            finish = Some(f.to_string());
        }
        for tc in choice["delta"]["tool_calls"].as_array().into_iter().flatten() {
            let index = tc["index"].as_u64().unwrap() as usize;
            if index == calls.len() {
                assert_eq!(tc["type"], "function");
                calls.push((
                    tc["id"].as_str().expect("id on first delta").into(),
                    tc["function"]["name"].as_str().expect("name on first delta").into(),
                    String::new(),
                    0,
                ));
            } else {
                assert!(tc.get("id").is_none(), "later deltas carry only index and arguments");
            }
            if let Some(piece) = tc["function"]["arguments"].as_str() {
                calls[index].2.push_str(piece);
                if !piece.is_empty() {
                    calls[index].3 += 1;
                }
            }
        }
    }
    assert_eq!(finish.as_deref(), Some("tool_calls"));
    assert_eq!(usage.unwrap()["total_tokens"], 27);
    assert_eq!(calls.len(), 2);
    assert_eq!((calls[0].0.as_str(), calls[0].1.as_str()), ("call_0", "delete_record"));
    assert_eq!(calls[0].2, args0);
    assert_eq!(calls[0].3, 3, "arguments should arrive in three fragments");
    assert_eq!((calls[1].0.as_str(), calls[1].1.as_str()), ("call_1", "search"));
    assert_eq!(calls[1].2, args1);
    serde_json::from_str::<Value>(&calls[0].2).expect("reassembled arguments are JSON");

    assert_eq!(split_in_three("ab"), vec!["a", "b"]);
    assert_eq!(split_in_three("").len(), 0);
    assert_eq!(split_in_three("✓✓✓✓").concat(), "✓✓✓✓");
}

#[tokio::test]
async fn fake_llm_hang_is_noticed_when_the_client_goes_away() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::Hang);
    let resp = post_chat(&llm, json!({"model": "m", "stream": true})).await;
    assert_eq!(resp.status(), 200);
    let mut body = resp.bytes_stream();
    let first = body.next().await.expect("first chunk").expect("read chunk");
    assert!(String::from_utf8_lossy(&first).contains("…"));
    let more = tokio::time::timeout(Duration::from_millis(300), body.next()).await;
    assert!(more.is_err(), "a hanging stream must not send more: {more:?}");
    assert_eq!(llm.dropped_streams(), 0);
    drop(body);
    llm.wait_for_dropped_streams(1, Duration::from_secs(5)).await;
}

#[tokio::test]
async fn fake_llm_slow_reply_spaces_out_events() {
    let llm = FakeLlm::start().await;
    llm.push(Reply::Slow { chunks: vec!["a".into(), "b".into()], delay_ms: 100, usage: None });
    let started = Instant::now();
    let body = post_chat(&llm, json!({"stream": true})).await.text().await.unwrap();
    // Events: a, b, finish, [DONE] → three delays.
    assert!(started.elapsed() >= Duration::from_millis(300), "{:?}", started.elapsed());
    assert_eq!(sse_data(&body).len(), 4);
}

// ---------------------------------------------------------------- fake tools

#[tokio::test]
async fn fake_tools_behaviours_and_call_log() {
    let tools = FakeTools::start().await;
    tools.set("lookup", Behaviour::Ok(json!({"status": "shipped"})));
    tools.set("broken", Behaviour::Status(500));
    tools.set("failing", Behaviour::ToolError("no such order".into()));
    tools.set("garbage", Behaviour::BadJson);
    tools.set("big", Behaviour::Huge(100_000));
    tools.set("slow", Behaviour::Delay(200, json!("late")));
    assert!(tools.url("lookup").ends_with("/tools/lookup"));

    let http = reqwest::Client::new();
    let call = |name: &str, key: Option<&str>| {
        let mut req = http.post(tools.url(name)).json(&json!({"tool": name, "arguments": {"id": 1}}));
        if let Some(k) = key {
            req = req.header("Idempotency-Key", k);
        }
        req.send()
    };

    let resp = call("lookup", Some("call_1")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.json::<Value>().await.unwrap(), json!({"result": {"status": "shipped"}}));
    assert_eq!(call("broken", None).await.unwrap().status(), 500);
    assert_eq!(call("failing", None).await.unwrap().json::<Value>().await.unwrap(), json!({"error": "no such order"}));
    assert_eq!(call("garbage", None).await.unwrap().text().await.unwrap(), "not json");
    let big: Value = call("big", None).await.unwrap().json().await.unwrap();
    assert_eq!(big["result"].as_str().unwrap().len(), 100_000);
    let started = Instant::now();
    let late: Value = call("slow", None).await.unwrap().json().await.unwrap();
    assert!(started.elapsed() >= Duration::from_millis(200));
    assert_eq!(late, json!({"result": "late"}));
    assert_eq!(call("unset", None).await.unwrap().json::<Value>().await.unwrap(), json!({"result": "done"}));

    let calls = tools.calls("lookup");
    assert_eq!(calls.len(), 1);
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("call_1"));
    assert_eq!(calls[0].body, json!({"tool": "lookup", "arguments": {"id": 1}}));
    assert_eq!(tools.calls("broken")[0].idempotency_key, None);
    assert_eq!(tools.total_calls(), 7);
    assert_eq!(tools.wait_for_calls("slow", 1, Duration::from_secs(1)).await.len(), 1);
}

// ---------------------------------------------------------------- ws client

/// A tiny WebSocket server with the traits the client must handle: bearer auth refused with 401 before the
/// upgrade, an optional subprotocol, unsolicited keepalives, echo, and a server-initiated close code.
async fn echo_ws(ws: WebSocketUpgrade, headers: HeaderMap) -> Response {
    match headers.get("authorization").map(|v| v.to_str().unwrap_or("")) {
        Some("Bearer good") | None => {}
        Some(_) => return StatusCode::UNAUTHORIZED.into_response(),
    }
    // Selection happens inside `protocols`, so ask for the result only afterwards.
    let ws = ws.protocols([SWITCHBOARD_PROTOCOL]);
    let protocol = ws.selected_protocol().map(|p| p.to_str().unwrap().to_string());
    ws.on_upgrade(move |socket| echo_session(socket, protocol))
}

async fn echo_session(mut socket: WebSocket, protocol: Option<String>) {
    let keepalive = json!({"type": "keepalive", "data": {"requestId": "r"}}).to_string();
    let _ = socket.send(Message::Text(keepalive.clone().into())).await;
    let hello = json!({"type": "hello", "protocol": protocol}).to_string();
    let _ = socket.send(Message::Text(hello.into())).await;
    while let Some(Ok(msg)) = socket.recv().await {
        let Message::Text(text) = msg else { continue };
        let reply = match serde_json::from_str::<Value>(text.as_str()) {
            Ok(v) if v["action"] == "close" => {
                let frame = CloseFrame { code: 4000, reason: "resume".into() };
                let _ = socket.send(Message::Close(Some(frame))).await;
                return;
            }
            Ok(v) if v["action"] == "noise" => {
                let _ = socket.send(Message::Text(keepalive.clone().into())).await;
                let _ = socket.send(Message::Text("not json".into())).await;
                continue;
            }
            Ok(v) => {
                // A keepalive first, which recv/recv_until must skip.
                let _ = socket.send(Message::Text(keepalive.clone().into())).await;
                json!({"type": "echo", "data": v})
            }
            Err(_) => json!({"type": "len", "len": text.len()}),
        };
        if socket.send(Message::Text(reply.to_string().into())).await.is_err() {
            return;
        }
    }
}

async fn start_echo_server() -> String {
    let app = Router::new().route("/ws", get(echo_ws));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    format!("ws://{addr}/ws")
}

#[tokio::test]
async fn ws_client_against_echo_server() {
    let url = start_echo_server().await;

    // v1: no subprotocol; recv skips the keepalive sent before hello.
    let mut v1 = Client::connect(&url).await;
    assert_eq!(v1.selected_protocol(), None);
    assert_eq!(v1.recv().await, json!({"type": "hello", "protocol": null}));
    v1.send(&json!({"action": "ping", "requestId": "p1"})).await;
    let echo = v1.recv().await;
    assert_eq!(echo["data"]["requestId"], "p1");

    // recv_until collects across events, skipping keepalives.
    for i in 0..3 {
        v1.send(&json!({"action": "ping", "requestId": format!("r{i}")})).await;
    }
    let got = v1.recv_until(|v| v["data"]["requestId"] == "r2").await;
    assert_eq!(got.len(), 3);
    assert!(got.iter().all(|v| v["type"] == "echo"));

    v1.expect_silence(Duration::from_millis(300)).await;

    // Oversized and malformed frames go out verbatim.
    v1.send_raw_bytes(200_000).await;
    assert_eq!(v1.recv().await, json!({"type": "len", "len": 200_000}));
    v1.send_text("{broken").await;
    assert_eq!(v1.recv().await["type"], "len");

    // recv_raw shows keepalives and non-JSON text.
    v1.send(&json!({"action": "noise"})).await;
    match v1.recv_raw().await {
        Frame::Text(v) => assert!(support::ws::is_keepalive(&v), "{v}"),
        other => panic!("expected keepalive, got {other:?}"),
    }
    assert_eq!(v1.recv_raw().await, Frame::NotJson("not json".into()));

    // Server-initiated close with an application code, then the end of the stream.
    v1.send(&json!({"action": "close"})).await;
    assert_eq!(v1.recv_raw().await, Frame::Close(Some(4000)));
    assert_eq!(v1.recv_raw().await, Frame::Closed);

    // Subprotocol and bearer.
    let mut ext =
        Client::connect_with(&url, Some(SWITCHBOARD_PROTOCOL), Some("good")).await.expect("connect with subprotocol");
    assert_eq!(ext.selected_protocol().as_deref(), Some(SWITCHBOARD_PROTOCOL));
    assert_eq!(ext.recv().await["protocol"], SWITCHBOARD_PROTOCOL);
    ext.close().await;

    // A subprotocol the server does not select fails the handshake, as in browsers.
    let err = Client::connect_with(&url, Some("other"), None).await.err().expect("must fail");
    assert_eq!(err.status, None, "{err}");

    // Refused upgrade exposes the HTTP status.
    assert_eq!(Client::connect_err_status(&url, Some("bad")).await, Some(401));
    assert_eq!(Client::connect_err_status(&url, Some("good")).await, None);
    let err = Client::connect_with(&url, None, Some("bad")).await.err().expect("must fail");
    assert_eq!(err.status, Some(401));
}

#[tokio::test]
#[should_panic(expected = "expected silence")]
async fn ws_expect_silence_fails_when_an_event_arrives() {
    let url = start_echo_server().await;
    let mut c = Client::connect(&url).await;
    // The hello event is pending, so this must panic.
    c.expect_silence(Duration::from_millis(500)).await;
}

#[tokio::test]
#[should_panic(expected = "no websocket event within")]
async fn ws_recv_times_out_with_a_clear_message() {
    let url = start_echo_server().await;
    let mut c = Client::connect(&url).await;
    let _hello = c.recv().await;
    c.recv().await;
}
