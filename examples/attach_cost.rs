//! What one more session costs a socket that already follows many: Redis commands per
//! `create_conversation_session` and per registry heartbeat, at 1 to 10,000 sessions on one socket.
//!
//! `cargo run --release --example attach_cost` (BENCH_SESSIONS: the largest count, default 10000;
//! BENCH_OLD=1 leaves out `limits.sessions_per_connection`, for a build that predates it).
//!
//! It starts its own `redis-server` on a free port and one pod in-process on it, opens one WebSocket and
//! creates sessions on it one after another, reading Redis's `INFO commandstats` around a window of ten creates
//! at each checkpoint (so the figure is every command the pod sent for those creates: session record, log
//! bounds and epoch, subscribe, registry). Then it idles through one registry heartbeat (every 10 s) and counts
//! what that cost. Results are printed; docs/benchmarks.md records them.

use std::process::Command;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::LocalRedis;

/// Every command Redis has run so far, by name.
fn command_calls(port: u16) -> std::collections::BTreeMap<String, u64> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "INFO", "commandstats"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    out.lines()
        .filter_map(|l| {
            let (name, rest) = l.strip_prefix("cmdstat_")?.split_once(":calls=")?;
            Some((name.to_string(), rest.split(',').next()?.parse().ok()?))
        })
        .collect()
}

fn total(calls: &std::collections::BTreeMap<String, u64>) -> u64 {
    calls.iter().filter(|(name, _)| name.as_str() != "info").map(|(_, n)| n).sum()
}

fn delta(
    before: &std::collections::BTreeMap<String, u64>,
    after: &std::collections::BTreeMap<String, u64>,
) -> Vec<(String, u64)> {
    after
        .iter()
        .filter(|(name, _)| name.as_str() != "info")
        .map(|(name, n)| (name.clone(), n - before.get(name).copied().unwrap_or(0)))
        .filter(|(_, n)| *n > 0)
        .collect()
}

type Socket = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn create(ws: &mut Socket, i: usize) {
    let rid = format!("c{i}");
    let frame = json!({"action": "create_conversation_session", "requestId": rid, "agentId": "bench"});
    ws.send(Message::text(frame.to_string())).await.expect("send");
    loop {
        let Some(Ok(Message::Text(t))) = ws.next().await else { panic!("socket closed") };
        let v: Value = serde_json::from_str(t.as_str()).expect("json");
        if v["requestId"] == rid.as_str() {
            assert_eq!(v["status"], 200, "{v}");
            return;
        }
    }
}

#[tokio::main]
async fn main() {
    let max: usize = std::env::var("BENCH_SESSIONS").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000);
    let redis = LocalRedis::start("attach-cost").await;
    let redis_port = redis.port;
    let quota = if std::env::var("BENCH_OLD").is_ok() {
        String::new()
    } else {
        format!("sessions_per_connection = {}", max + 10)
    };
    let pod = redis.pod("attach_cost", &quota).await;
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{}/ws", pod.addr)).await.expect("connect");

    println!("sessions on the socket | Redis commands per create (mean of 10) | by command");
    let mut made = 0;
    for checkpoint in [1usize, 10, 100, 1_000, 10_000].into_iter().filter(|c| *c <= max) {
        while made + 1 < checkpoint {
            made += 1;
            create(&mut ws, made).await;
        }
        let before = command_calls(redis_port);
        for _ in 0..10 {
            made += 1;
            create(&mut ws, made).await;
        }
        let after = command_calls(redis_port);
        let per = (total(&after) - total(&before)) as f64 / 10.0;
        let by: Vec<String> =
            delta(&before, &after).iter().map(|(n, c)| format!("{n} {:.1}", *c as f64 / 10.0)).collect();
        println!("{checkpoint:>6} | {per:>5.1} | {}", by.join(", "));
    }
    // One heartbeat of the socket (every 10 s) with `made` sessions attached.
    let before = command_calls(redis_port);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_millis(10_500)).await;
    let after = command_calls(redis_port);
    let by: Vec<String> = delta(&before, &after).iter().map(|(n, c)| format!("{n} {c}")).collect();
    println!(
        "idle {:.1} s with {made} sessions (one heartbeat, plus the pod's canary and sweeps): {} commands: {}",
        started.elapsed().as_secs_f64(),
        total(&after) - total(&before),
        by.join(", ")
    );
}
