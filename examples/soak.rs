//! Soak benchmark: two pods (the release binary, as child processes) on one Redis, 1,000 extended sockets
//! running paced streamed turns, approvals and session publishes continuously, for 30 minutes by default.
//!
//! `cargo build --release --bin switchboard --example soak && target/release/examples/soak`
//! (SOAK_SECONDS, default 1800; SOAK_SOCKETS, default 1000; SOAK_TURN_EVERY_S: mean seconds between one
//! socket's turns, default 30; SOAK_PUBLISH_PER_S, default 20; SOAK_REPORT_S, default 60).
//!
//! Every socket speaks the `switchboard` subprotocol and checks each session event's `seq` against the last
//! one (a repeat is a duplicate, a jump is a loss), every turn must end with exactly one terminal event, and
//! every token carries the time the model sent it, so the report gives the latency a token gains between the
//! model's chunk and the client's frame. Each report line also has each pod's RSS (from /proc) and Redis's
//! `used_memory`. docs/benchmarks.md records the results.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{env_or, free_port, now_ns, rss_kib, ChildGuard};

const KEY: &str = "soak-publish-key-0123456789";

fn redis_used_memory(port: u16) -> u64 {
    let out = Command::new("redis-cli").args(["-p", &port.to_string(), "INFO", "memory"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().find_map(|l| l.strip_prefix("used_memory:")?.trim().parse().ok()).unwrap_or(0)
}

#[derive(Default)]
struct Counters {
    turns: AtomicU64,
    approvals: AtomicU64,
    events: AtomicU64,
    publishes_sent: AtomicU64,
    publishes_seen: AtomicU64,
    duplicated: AtomicU64,
    lost: AtomicU64,
    bad_endings: AtomicU64,
    socket_failures: AtomicU64,
    /// Token latencies (µs) since the last report.
    latencies: Mutex<Vec<u64>>,
}

/// The model: 10 tokens 20 ms apart, each stamped with the time it is written; a tool call for "delete";
/// a short answer after a tool result. Also serves the soak agent's tool webhook.
async fn fake_model_and_tool() -> u16 {
    let chat = axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let headers = [("content-type", "text/event-stream")];
        let usage = format!(
            "data: {}\n\ndata: [DONE]\n\n",
            json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 10}})
        );
        if last["role"] == "user" && last["content"].as_str().is_some_and(|c| c.contains("delete")) {
            let call = json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": format!("call_{}", now_ns()),
                "type": "function", "function": {"name": "delete_record", "arguments": "{\"id\":\"7\"}"}}]}}]});
            return (headers, format!("data: {call}\n\n{usage}")).into_response();
        }
        let chunks = futures_util::stream::iter(0..11).then(move |i| {
            let usage = usage.clone();
            async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                let text = if i < 10 {
                    format!(
                        "data: {}\n\n",
                        json!({"choices": [{"index": 0, "delta": {"content": format!("t{} ", now_ns())}}]})
                    )
                } else {
                    usage
                };
                Ok::<_, std::convert::Infallible>(text)
            }
        });
        (headers, axum::body::Body::from_stream(chunks)).into_response()
    });
    let tool = axum::routing::post(|| async { axum::Json(json!({"result": "deleted"})) });
    let app = axum::Router::new().route("/v1/chat/completions", chat).route("/tools/delete_record", tool);
    common::serve_model(app).await
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    let mut req = url.into_client_request().expect("url");
    req.headers_mut().insert("Sec-WebSocket-Protocol", "switchboard".parse().expect("header"));
    tokio_tungstenite::connect_async(req).await.expect("connect").0
}

/// Checks a session event's seq against the last one; returns false for a duplicate.
fn check_seq(last: &mut u64, v: &Value, c: &Counters) -> bool {
    let Some(seq) = v["seq"].as_u64() else { return true };
    c.events.fetch_add(1, Ordering::Relaxed);
    if seq <= *last {
        c.duplicated.fetch_add(1, Ordering::Relaxed);
        return false;
    }
    if seq > *last + 1 {
        c.lost.fetch_add(seq - *last - 1, Ordering::Relaxed);
    }
    *last = seq;
    true
}

/// One socket: a session, then turns at random intervals (one in ten asks for the gated tool, approved).
async fn client(
    n: usize,
    url: String,
    sessions: Arc<Mutex<Vec<String>>>,
    c: Arc<Counters>,
    until: Instant,
    every: u64,
) {
    let mut ws = connect(&url).await;
    let create = json!({"action": "create_conversation_session", "requestId": "c", "agentId": "soak"});
    if ws.send(Message::text(create.to_string())).await.is_err() {
        c.socket_failures.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let sid = loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if let Some(s) = v["data"]["sessionId"].as_str() {
                    break s.to_string();
                }
            }
            Some(Ok(_)) => {}
            _ => {
                c.socket_failures.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    };
    sessions.lock().push(sid.clone());
    let mut last_seq = 0u64;
    let mut turn = 0u64;
    // Start spread over one interval, so the load is even.
    let mut next = Instant::now() + Duration::from_millis(rand::random::<u64>() % (every * 1000).max(1));
    let mut running: Option<String> = None;
    loop {
        let wait =
            if running.is_some() { Duration::from_secs(30) } else { next.saturating_duration_since(Instant::now()) };
        tokio::select! {
            msg = ws.next() => {
                let Some(Ok(msg)) = msg else {
                    c.socket_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                };
                let Message::Text(t) = msg else { continue };
                let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                if !check_seq(&mut last_seq, &v, &c) {
                    continue;
                }
                match v["type"].as_str().unwrap_or("") {
                    "stream_token" => {
                        if let Some(sent) = v["token"].as_str().and_then(|t| t.trim().strip_prefix('t')).and_then(|t| t.parse::<u64>().ok()) {
                            c.latencies.lock().push(now_ns().saturating_sub(sent) / 1_000);
                        }
                    }
                    "write_confirmation_required" => {
                        let confirm = json!({"action": "confirm_tool_action", "requestId": "ok", "sessionId": sid, "approved": true});
                        let _ = ws.send(Message::text(confirm.to_string())).await;
                        c.approvals.fetch_add(1, Ordering::Relaxed);
                    }
                    "soak_note" => { c.publishes_seen.fetch_add(1, Ordering::Relaxed); }
                    "eventual_response" | "cancelled" | "error" if v["requestId"].as_str() == running.as_deref() => {
                        if v["type"] != "eventual_response" {
                            c.bad_endings.fetch_add(1, Ordering::Relaxed);
                        }
                        c.turns.fetch_add(1, Ordering::Relaxed);
                        running = None;
                        next = Instant::now() + Duration::from_millis(every * 500 + rand::random::<u64>() % (every * 1000).max(1));
                    }
                    _ => {}
                }
            }
            _ = tokio::time::sleep(wait) => {
                if running.is_some() {
                    c.bad_endings.fetch_add(1, Ordering::Relaxed); // a turn silent for 30 s
                    running = None;
                    continue;
                }
                if Instant::now() >= until {
                    return;
                }
                turn += 1;
                let rid = format!("s{n}-{turn}");
                let text = if (n as u64 + turn) % 10 == 0 { "please delete record 7" } else { "tell me something" };
                let m = json!({"action": "send_message", "requestId": rid, "sessionId": sid, "message": text});
                if ws.send(Message::text(m.to_string())).await.is_err() {
                    c.socket_failures.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                running = Some(rid);
            }
        }
    }
}

/// Milliseconds at fraction `p` of sorted microsecond latencies (0 when none).
fn pct(sorted: &[u64], p: f64) -> f64 {
    common::percentile(sorted, p).map_or(0.0, |us| us as f64 / 1000.0)
}

#[tokio::main]
async fn main() {
    let seconds = env_or::<u64>("SOAK_SECONDS", 1_800);
    let sockets = env_or::<u64>("SOAK_SOCKETS", 1_000) as usize;
    let every = env_or::<u64>("SOAK_TURN_EVERY_S", 30);
    let publish_per_s = env_or::<u64>("SOAK_PUBLISH_PER_S", 20);
    let report_s = env_or::<u64>("SOAK_REPORT_S", 60);
    let bin = std::env::var("SWITCHBOARD_BIN").unwrap_or_else(|_| "target/release/switchboard".into());
    let model = fake_model_and_tool().await;
    let redis = common::LocalRedis::start("soak").await;
    let agents = json!([{"id": "soak", "name": "Soak", "confirm_tools": ["delete_*"], "tools": [{"name": "delete_record",
        "url": format!("http://127.0.0.1:{model}/tools/delete_record")}]}]);
    let mut pods = Vec::new();
    let mut ws_urls = Vec::new();
    let mut http = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let child = Command::new(&bin)
            .arg("serve")
            .env("SWITCHBOARD_BIND", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_REDIS_URL", format!("redis://127.0.0.1:{}", redis.port))
            .env("SWITCHBOARD_AUTH__RESUME_SECRET", "bench-resume-secret-0123456789abcdef")
            .env("SWITCHBOARD_AUTH__PUBLISH_KEYS", KEY)
            .env("SWITCHBOARD_LLM__BASE_URL", format!("http://127.0.0.1:{model}/v1"))
            .env("SWITCHBOARD_AGENTS", agents.to_string())
            .env("SWITCHBOARD_LIMITS__MESSAGES_PER_USER_PER_MINUTE", "10000000")
            .env("SWITCHBOARD_LIMITS__SOCKETS_PER_USER", "100000")
            .env("SWITCHBOARD_LIMITS__TURNS_PER_USER", "100000")
            .env("SWITCHBOARD_LIMITS__SESSIONS_PER_CONNECTION", "10")
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (cargo build --release first): {e}"));
        pods.push(ChildGuard(child));
        ws_urls.push(format!("ws://127.0.0.1:{port}/ws"));
        http.push(format!("http://127.0.0.1:{port}"));
    }
    let web = reqwest::Client::new();
    for h in &http {
        for _ in 0..100 {
            if web.get(format!("{h}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    let pids: Vec<u32> = pods.iter().map(|p| p.0.id()).collect();
    let counters = Arc::new(Counters::default());
    let sessions = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let mut tasks = Vec::new();
    for n in 0..sockets {
        let url = ws_urls[n % 2].clone();
        tasks.push(tokio::spawn(client(n, url, sessions.clone(), counters.clone(), until, every)));
        if n % 50 == 49 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    // Session publishes from "another service", spread over both pods.
    let publisher = {
        let (c, sessions, http, web) = (counters.clone(), sessions.clone(), http.clone(), web.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(1_000_000 / publish_per_s.max(1)));
            let mut n = 0u64;
            while Instant::now() < until {
                tick.tick().await;
                let sid = {
                    let s = sessions.lock();
                    if s.is_empty() {
                        continue;
                    }
                    s[rand::random::<usize>() % s.len()].clone()
                };
                n += 1;
                let body = json!({"target": {"type": "session", "id": sid}, "event": {"type": "soak_note", "n": n}});
                let to = &http[(n % 2) as usize];
                if web
                    .post(format!("{to}/admin/publish"))
                    .bearer_auth(KEY)
                    .json(&body)
                    .send()
                    .await
                    .is_ok_and(|r| r.status().is_success())
                {
                    c.publishes_sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        })
    };
    println!("soak: {sockets} sockets on 2 pods, a turn every ~{every} s per socket, {publish_per_s} publishes/s, {seconds} s");
    println!(
        "{:>6} {:>8} {:>7} {:>9} {:>9} {:>5} {:>5} {:>5} {:>9} {:>9} {:>11} {:>8} {:>8}",
        "t(s)",
        "turns",
        "approv",
        "events",
        "pub seen",
        "lost",
        "dup",
        "bad",
        "rss A MiB",
        "rss B MiB",
        "redis MiB",
        "tok p50",
        "tok p99"
    );
    let mut all_lat: Vec<u64> = Vec::new();
    let mut report = tokio::time::interval(Duration::from_secs(report_s));
    report.tick().await;
    loop {
        report.tick().await;
        let c = &counters;
        let mut lat = std::mem::take(&mut *c.latencies.lock());
        lat.sort_unstable();
        println!(
            "{:>6} {:>8} {:>7} {:>9} {:>9} {:>5} {:>5} {:>5} {:>9.1} {:>9.1} {:>11.1} {:>7.1}ms {:>7.1}ms",
            started.elapsed().as_secs(),
            c.turns.load(Ordering::Relaxed),
            c.approvals.load(Ordering::Relaxed),
            c.events.load(Ordering::Relaxed),
            c.publishes_seen.load(Ordering::Relaxed),
            c.lost.load(Ordering::Relaxed),
            c.duplicated.load(Ordering::Relaxed),
            c.bad_endings.load(Ordering::Relaxed),
            rss_kib(pids[0]) as f64 / 1024.0,
            rss_kib(pids[1]) as f64 / 1024.0,
            redis_used_memory(redis.port) as f64 / 1_048_576.0,
            pct(&lat, 0.5),
            pct(&lat, 0.99)
        );
        all_lat.extend(lat);
        if Instant::now() >= until {
            break;
        }
    }
    let _ = publisher.await;
    for t in tasks {
        let _ = tokio::time::timeout(Duration::from_secs(40), t).await;
    }
    let c = &counters;
    all_lat.sort_unstable();
    let sent = c.publishes_sent.load(Ordering::Relaxed);
    let seen = c.publishes_seen.load(Ordering::Relaxed);
    println!("\nsummary: {} turns ({} with an approval), {} session events, lost {}, duplicated {}, turns without a single clean ending {}, socket failures {}",
        c.turns.load(Ordering::Relaxed), c.approvals.load(Ordering::Relaxed), c.events.load(Ordering::Relaxed),
        c.lost.load(Ordering::Relaxed), c.duplicated.load(Ordering::Relaxed), c.bad_endings.load(Ordering::Relaxed),
        c.socket_failures.load(Ordering::Relaxed));
    println!("publishes: {sent} accepted, {seen} delivered to their session's socket");
    println!("token latency (model chunk written → client frame read): p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms over {} tokens",
        pct(&all_lat, 0.5), pct(&all_lat, 0.99), pct(&all_lat, 1.0), all_lat.len());
}
