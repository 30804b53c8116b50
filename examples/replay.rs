//! How long `resume_session` takes to replay 1,000 missed events (target: under 50 ms).
//!
//! `cargo run --release --example replay` (BENCH_EVENTS: missed events, default 1000; BENCH_ROUNDS: default 30).
//!
//! It starts its own `redis-server` on a free port and one pod in-process on it, logs BENCH_EVENTS stream-token
//! events (~150 bytes each, as a turn's tokens are) into one session through the backend, then, round after
//! round, opens a fresh extended WebSocket, sends `resume_session {afterSeq: 0}` and times from the send until
//! the last missed event has arrived (the ack, the log reads and every frame written). Results are printed;
//! docs/benchmarks.md records them.

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

fn env_or(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[tokio::main]
async fn main() {
    let events = env_or("BENCH_EVENTS", 1_000);
    let rounds = env_or("BENCH_ROUNDS", 30);
    let redis_port = free_port();
    let dir = std::env::temp_dir().join(format!("replay-bench-{redis_port}"));
    let _ = std::fs::create_dir_all(&dir);
    let mut redis = Command::new("redis-server")
        .args(["--port", &redis_port.to_string(), "--save", "", "--appendonly", "no"])
        .current_dir(&dir)
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server");
    let up = Instant::now();
    while Command::new("redis-cli")
        .args(["-p", &redis_port.to_string(), "PING"])
        .output()
        .map(|o| o.stdout)
        .unwrap_or_default()
        != b"PONG\n"
    {
        assert!(up.elapsed() < Duration::from_secs(10), "redis did not start");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let toml = format!(
        "bind = \"127.0.0.1:0\"\nredis_url = \"redis://127.0.0.1:{redis_port}\"\n[limits]\nlog_len = {}\n\
         [[agents]]\nid = \"bench\"\nname = \"Bench\"\nsystem_prompt = \"\"\n",
        events.max(1_000)
    );
    let config = switchboard::config::Config::load_text(Some(("replay", &toml)), Vec::new()).expect("config");
    let pod = switchboard::server::start(config).await.expect("pod");
    let url = format!("ws://{}/ws", pod.addr);

    // A session owned by the (anonymous) caller, then its missed events, logged in batches as a turn does.
    let mut request = url.clone().into_client_request().expect("request");
    request.headers_mut().insert("Sec-WebSocket-Protocol", "switchboard".parse().expect("header"));
    let (mut ws, _) = tokio_tungstenite::connect_async(request.clone()).await.expect("connect");
    let create = json!({"action": "create_conversation_session", "requestId": "c", "agentId": "bench"});
    ws.send(Message::text(create.to_string())).await.expect("send");
    let sid = loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed") };
        let v: Value = serde_json::from_str(t.as_str()).expect("json");
        if v["requestId"] == "c" {
            break v["data"]["sessionId"].as_str().expect("sessionId").to_string();
        }
    };
    drop(ws);
    let token = "tok ".repeat(8);
    let batch: Vec<String> = (0..events)
        .map(|i| {
            json!({"type": "stream_token", "requestId": "r-replay", "token": format!("{token}{i}"),
                   "data": {"requestId": "r-replay", "token": format!("{token}{i}")}, "timestamp": 1_795_000_000_000u64})
            .to_string()
        })
        .collect();
    for chunk in batch.chunks(100) {
        pod.backends().log.append_batch(&sid, chunk.to_vec()).await.expect("append");
    }

    let mut times = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        let (mut ws, _) = tokio_tungstenite::connect_async(request.clone()).await.expect("connect");
        let resume = json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 0});
        let started = Instant::now();
        ws.send(Message::text(resume.to_string())).await.expect("send");
        loop {
            let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("closed") };
            let v: Value = serde_json::from_str(t.as_str()).expect("json");
            if v["seq"].as_u64() == Some(events as u64) {
                break;
            }
        }
        times.push(started.elapsed());
    }
    times.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let at = |q: f64| times[((times.len() as f64 * q) as usize).min(times.len() - 1)];
    println!(
        "replay of {events} missed events on resume_session, {rounds} rounds: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        ms(at(0.5)),
        ms(at(0.99)),
        ms(times[times.len() - 1])
    );
    let _ = redis.kill();
    let _ = redis.wait();
    let _ = std::fs::remove_dir_all(&dir);
}
