//! The real binary as two pods on one Redis: a turn parked on pod A and approved on pod B is one trace
//! exported over OTLP to an in-test receiver; SIGTERM drains each pod and it exits in time.

use crate::{harness, support};

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use harness::{send_message, until_terminal, AGENT};
use parking_lot::Mutex;
use serde_json::{json, Value};
use support::llm::{FakeLlm, Reply};
use support::redis::RedisServer;
use support::tools::{Behaviour, FakeTools};
use support::ws::Client;

/// An OTLP/HTTP (JSON) receiver: stores every export request body.
async fn otlp_receiver() -> (String, Arc<Mutex<Vec<Value>>>) {
    let got: Arc<Mutex<Vec<Value>>> = Arc::default();
    let store = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        axum::routing::post(move |body: axum::body::Bytes| {
            let store = store.clone();
            async move {
                if let Ok(v) = serde_json::from_slice::<Value>(&body) {
                    store.lock().push(v);
                }
                axum::Json(json!({}))
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move { axum::serve(listener, app).await });
    (format!("http://{addr}"), got)
}

struct Pod {
    child: Child,
    port: u16,
}

impl Drop for Pod {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn spawn_pod(name: &str, redis: &str, prefix: &str, llm: &FakeLlm, tools: &FakeTools, otlp: &str) -> Pod {
    let port = support::ports::free_port();
    let agents = json!([{
        "id": AGENT, "name": "Aria", "confirm_tools": ["delete_*"],
        "tools": [{"name": "delete_record", "url": tools.url("delete_record")}]
    }]);
    let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env_clear()
        .env("SWITCHBOARD_BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_REDIS_URL", redis)
        .env("SWITCHBOARD_AUTH__RESUME_SECRET", "test-resume-secret-0123456789abcdef")
        .env("SWITCHBOARD_REDIS_KEY_PREFIX", prefix)
        .env("SWITCHBOARD_LLM__BASE_URL", llm.base_url())
        .env("SWITCHBOARD_AGENTS", agents.to_string())
        .env("SWITCHBOARD_DRAIN__PRE_STOP_S", "0")
        .env("SWITCHBOARD_DRAIN__TIMEOUT_S", "2")
        .env("SWITCHBOARD_LOG_FORMAT", "json")
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", otlp)
        .env("OTEL_BSP_SCHEDULE_DELAY", "100")
        .env("HOSTNAME", name)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn switchboard");
    Pod { child, port }
}

async fn wait_ready(pod: &Pod) {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let url = format!("http://127.0.0.1:{}/readyz", pod.port);
        if http.get(&url).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        assert!(Instant::now() < deadline, "pod on {} never became ready", pod.port);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// `(trace id, span name, service.instance.id, attributes)` of every exported span.
fn spans(bodies: &[Value]) -> Vec<(String, String, String, Value)> {
    let mut out = Vec::new();
    for b in bodies {
        for rs in b["resourceSpans"].as_array().into_iter().flatten() {
            let instance = rs["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.instance.id")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or("")
                .to_string();
            for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                for s in ss["spans"].as_array().into_iter().flatten() {
                    out.push((
                        s["traceId"].as_str().unwrap_or("").to_string(),
                        s["name"].as_str().unwrap_or("").to_string(),
                        instance.clone(),
                        s["attributes"].clone(),
                    ));
                }
            }
        }
    }
    out
}

fn attr<'a>(attrs: &'a Value, key: &str) -> Option<&'a Value> {
    attrs.as_array()?.iter().find(|a| a["key"] == key).map(|a| &a["value"])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_across_two_pods_is_one_trace_and_sigterm_drains() {
    let redis = RedisServer::start();
    let (llm, tools) = (FakeLlm::start().await, FakeTools::start().await);
    tools.set("delete_record", Behaviour::Ok(json!("deleted")));
    let (otlp, exported) = otlp_receiver().await;
    let prefix = support::unique_id("sbt");
    let mut a = spawn_pod("pod-a", &redis.url(), &prefix, &llm, &tools, &otlp);
    let mut b = spawn_pod("pod-b", &redis.url(), &prefix, &llm, &tools, &otlp);
    wait_ready(&a).await;
    wait_ready(&b).await;

    let mut on_a = Client::connect(&format!("ws://127.0.0.1:{}/ws", a.port)).await;
    let sid = harness::create_session(&mut on_a).await;
    llm.push(Reply::tool_call("call-x", "delete_record", &json!({"id": "9"})));
    send_message(&mut on_a, &sid, "r-trace", "delete 9").await;
    on_a.recv_until(|v| v["type"] == "stream_chunk").await;
    let mut on_b = Client::connect(&format!("ws://127.0.0.1:{}/ws", b.port)).await;
    llm.push(Reply::text_with_usage(&["Deleted."], 12, 2));
    on_b.send(&json!({"action": "confirm_tool_action", "requestId": "ok", "sessionId": sid, "approved": true})).await;
    let frames = until_terminal(&mut on_b, "r-trace").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");

    // Both pods' turn spans share one trace id.
    let deadline = Instant::now() + Duration::from_secs(15);
    let (trace, all) = loop {
        let all = spans(&exported.lock());
        let turn_a: Vec<_> = all.iter().filter(|s| s.1 == "agent.turn" && s.2 == "pod-a").collect();
        let turn_b: Vec<_> = all.iter().filter(|s| s.1 == "agent.turn" && s.2 == "pod-b").collect();
        if let Some(shared) = turn_a.iter().find_map(|x| turn_b.iter().find(|y| y.0 == x.0).map(|_| x.0.clone())) {
            break (shared, all);
        }
        assert!(
            Instant::now() < deadline,
            "no trace spanning both pods; spans: {:?}",
            all.iter().map(|s| (&s.1, &s.2)).collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(!trace.is_empty());
    // GenAI semantic conventions on the model call, and the tool call on pod B in the same trace.
    let chat =
        all.iter().find(|s| s.0 == trace && s.1.starts_with("chat ") && s.2 == "pod-b").expect("chat span on pod B");
    assert_eq!(attr(&chat.3, "gen_ai.request.model").and_then(|v| v["stringValue"].as_str()), Some("gpt-4o-mini"));
    assert_eq!(attr(&chat.3, "gen_ai.operation.name").and_then(|v| v["stringValue"].as_str()), Some("chat"));
    assert!(attr(&chat.3, "gen_ai.usage.input_tokens").is_some());
    assert!(all.iter().any(|s| s.0 == trace && s.1 == "execute_tool delete_record" && s.2 == "pod-b"));

    // SIGTERM: each pod drains and exits on its own, well within a grace period.
    for pod in [&mut a, &mut b] {
        let pid = pod.child.id().to_string();
        assert!(Command::new("kill").args(["-TERM", &pid]).status().expect("kill").success());
    }
    for pod in [&mut a, &mut b] {
        let started = Instant::now();
        let status = loop {
            if let Some(s) = pod.child.try_wait().expect("wait") {
                break s;
            }
            assert!(started.elapsed() < Duration::from_secs(10), "pod did not exit after SIGTERM");
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        assert!(status.success(), "exit status {status}");
    }
}
