//! How long `resume_session` takes to replay 1,000 missed events (target: under 50 ms).
//!
//! `cargo run --release --example replay` (BENCH_EVENTS: missed events, default 1000; BENCH_ROUNDS: default 30).
//!
//! It starts its own `redis-server` on a free port and one pod in-process on it, logs BENCH_EVENTS stream-token
//! events (~150 bytes each, as a turn's tokens are) into one session through the backend, then, round after
//! round, opens a fresh extended WebSocket, sends `resume_session {afterSeq: 0}` and times from the send until
//! the last missed event has arrived (the ack, the log reads and every frame written). Results are printed;
//! docs/benchmarks.md records them.

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{env_or, LocalRedis};

#[tokio::main]
async fn main() {
    let events = env_or::<usize>("BENCH_EVENTS", 1_000);
    let rounds = env_or::<usize>("BENCH_ROUNDS", 30);
    let redis = LocalRedis::start("replay-bench").await;
    let pod = redis.pod("replay", &format!("log_len = {}", events.max(1_000))).await;
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
}
