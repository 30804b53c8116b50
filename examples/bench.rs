//! Switchboard benchmark: cross-pod delivery latency, server CPU per streamed turn, RSS per idle socket.
//!
//! `cargo build --release && cargo run --release --example bench -- [latency|max|turns|idle|all]`
//! (BENCH_WORKERS sets the number of concurrent publishers, default 8; BENCH_TURN_ROUNDS the rounds of the
//! turns scenario, default 3; BENCH_CHUNK_DELAY_MS and BENCH_CHUNK_BURST pace the fake model's chunks).
//!
//! It starts its own `redis-server` on a free port and two pods from `target/release/switchboard` (override with
//! SWITCHBOARD_BIN) as child processes, so CPU time and RSS are read from `/proc/<pid>` of the pods alone, with
//! an in-process OpenAI-compatible model streaming 800-character replies. To measure another server speaking
//! the protocol, set BENCH_WS_A / BENCH_WS_B (ws URLs), BENCH_HTTP_A (publish base URL), BENCH_KEY and
//! BENCH_PIDS (comma-separated server pids for CPU/RSS); the turns scenario then needs that server configured
//! with the model at BENCH_MODEL_PORT. Results are printed; docs/benchmarks.md records them.

use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::{free_port, now_ns, ChildGuard};

const KEY: &str = "bench-publish-key-0123456789";

/// (cpu seconds, rss KiB) of a process.
fn proc_stats(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    (ticks / 100.0, common::rss_kib(pid))
}

struct Env {
    ws: [String; 2],
    http: [String; 2],
    pids: Vec<u32>,
    /// The bench's own Redis, when it started one: its command counts are reported per turn.
    redis_port: Option<u16>,
    /// Its process, whose CPU time counts with the pods' (Redis is shared by the whole deployment).
    redis_pid: Option<u32>,
    _children: Vec<ChildGuard>,
}

async fn fake_model() -> u16 {
    // 800 characters, streamed in 100 chunks.
    let reply: String = "All good. ".repeat(80);
    // BENCH_CHUNK_DELAY_MS paces the chunks like a real model streaming tokens (default 0: the whole reply in
    // one response body, which lets a server coalesce a turn's events).
    let delay = std::env::var("BENCH_CHUNK_DELAY_MS").ok().and_then(|d| d.parse::<u64>().ok()).unwrap_or(0);
    let app = axum::Router::new().route(
        "/v1/chat/completions",
        axum::routing::post(move || {
            let reply = reply.clone();
            async move {
                let mut events: Vec<String> = reply
                    .as_bytes()
                    .chunks(8)
                    .map(|chunk| {
                        let t = String::from_utf8_lossy(chunk);
                        format!("data: {}\n\n", json!({"choices": [{"index": 0, "delta": {"content": t}}]}))
                    })
                    .collect();
                events.push(format!(
                    "data: {}\n\n",
                    json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 100, "total_tokens": 120}})
                ));
                events.push("data: [DONE]\n\n".to_string());
                let headers = [("content-type", "text/event-stream")];
                if delay == 0 {
                    return (headers, events.concat()).into_response();
                }
                // BENCH_CHUNK_BURST=n writes n chunks at once every n × delay (same average pace, fewer writes).
                let burst = std::env::var("BENCH_CHUNK_BURST").ok().and_then(|b| b.parse::<usize>().ok()).unwrap_or(1);
                let writes: Vec<String> = events.chunks(burst.max(1)).map(|c| c.concat()).collect();
                let pause = Duration::from_millis(delay * burst.max(1) as u64);
                let paced = futures_util::stream::iter(writes).then(move |e| async move {
                    tokio::time::sleep(pause).await;
                    Ok::<_, std::convert::Infallible>(e)
                });
                (headers, axum::body::Body::from_stream(paced)).into_response()
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind model");
    let port = listener.local_addr().expect("addr").port();
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}

async fn start_env(model_port: u16) -> Env {
    if let Ok(a) = std::env::var("BENCH_WS_A") {
        let pids = std::env::var("BENCH_PIDS").unwrap_or_default().split(',').filter_map(|p| p.parse().ok()).collect();
        let b = std::env::var("BENCH_WS_B").unwrap_or_else(|_| a.clone());
        let http = std::env::var("BENCH_HTTP_A").unwrap_or_default();
        return Env {
            ws: [a, b],
            http: [http.clone(), http],
            pids,
            redis_port: None,
            redis_pid: None,
            _children: vec![],
        };
    }
    // BENCH_SERVER=reference runs the seed's reference server (REFERENCE_BIN) the same way, side by side.
    let reference = std::env::var("BENCH_SERVER").is_ok_and(|v| v == "reference");
    let bin = if reference {
        std::env::var("REFERENCE_BIN").unwrap_or_else(|_| "/tmp/ref/bin/smooth-operator-server".into())
    } else {
        std::env::var("SWITCHBOARD_BIN").unwrap_or_else(|_| "target/release/switchboard".into())
    };
    let rport = free_port();
    let redis = Command::new("redis-server")
        .args(["--port", &rport.to_string(), "--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .expect("redis-server on PATH");
    let redis_pid = redis.id();
    let mut children = vec![ChildGuard(redis)];
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut ws = Vec::new();
    let mut http = Vec::new();
    let mut pids = Vec::new();
    for _ in 0..2 {
        let port = free_port();
        let mut cmd = Command::new(&bin);
        if reference {
            cmd.env("SMOOTH_AGENT_BIND", "127.0.0.1")
                .env("SMOOTH_AGENT_PORT", port.to_string())
                .env("SMOOAI_GATEWAY_URL", format!("http://127.0.0.1:{model_port}/v1"))
                .env("SMOOAI_GATEWAY_KEY", "bench")
                .env("SMOOTH_AGENT_BACKPLANE", "redis")
                .env("SMOOTH_AGENT_BACKPLANE_URL", format!("redis://127.0.0.1:{rport}"));
        } else {
            cmd.arg("serve");
        }
        let child = cmd
            .env("SWITCHBOARD_BIND", format!("127.0.0.1:{port}"))
            .env("SWITCHBOARD_REDIS_URL", format!("redis://127.0.0.1:{rport}"))
            .env("SWITCHBOARD_AUTH__RESUME_SECRET", "bench-resume-secret-0123456789abcdef")
            .env("SWITCHBOARD_AUTH__PUBLISH_KEYS", KEY)
            .env("SWITCHBOARD_LLM__BASE_URL", format!("http://127.0.0.1:{model_port}/v1"))
            .env("SWITCHBOARD_LIMITS__MESSAGES_PER_MINUTE", "100000")
            .env("SWITCHBOARD_LIMITS__MESSAGES_PER_USER_PER_MINUTE", "10000000")
            .env("SWITCHBOARD_LIMITS__SOCKETS_PER_USER", "100000")
            .env("SWITCHBOARD_LIMITS__TURNS_PER_USER", "100000")
            // Every bench client is the same anonymous caller on one address.
            .env("SWITCHBOARD_LIMITS__SESSIONS_PER_USER_PER_MINUTE", "10000000")
            .env("SWITCHBOARD_LIMITS__READS_PER_USER_PER_MINUTE", "10000000")
            .env("SWITCHBOARD_LIMITS__OUTBOUND_QUEUE", "4096")
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {bin} (cargo build --release first): {e}"));
        pids.push(child.id());
        children.push(ChildGuard(child));
        ws.push(format!("ws://127.0.0.1:{port}/ws"));
        http.push(format!("http://127.0.0.1:{port}"));
    }
    let client = reqwest::Client::new();
    for h in &http {
        for _ in 0..100 {
            let ready = client.get(format!("{h}/readyz")).send().await.is_ok_and(|r| r.status() == 200)
                || client.get(format!("{h}/health")).send().await.is_ok_and(|r| r.status() == 200);
            if ready {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    Env {
        ws: [ws[0].clone(), ws[1].clone()],
        http: [http[0].clone(), http[1].clone()],
        pids,
        redis_port: Some(rport),
        redis_pid: Some(redis_pid),
        _children: children,
    }
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(url: &str) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    // Plain v1 connections, so both servers do the same work.
    let req = url.into_client_request().expect("url");
    tokio_tungstenite::connect_async(req).await.expect("connect").0
}

async fn recv(ws: &mut Ws) -> Value {
    loop {
        match ws.next().await {
            Some(Ok(Message::Text(t))) => {
                let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                if v["type"] != "keepalive" {
                    return v;
                }
            }
            Some(Ok(_)) => continue,
            other => panic!("socket ended: {other:?}"),
        }
    }
}

async fn create(ws: &mut Ws) -> String {
    let frame = json!({"action": "create_conversation_session", "requestId": "c", "agentId": "11111111-1111-1111-1111-111111111111"});
    ws.send(Message::Text(frame.to_string().into())).await.expect("send");
    recv(ws).await["data"]["sessionId"].as_str().unwrap_or_default().to_string()
}

/// Milliseconds at fraction `p` of sorted nanosecond latencies (NaN when none).
fn pct(sorted: &[u64], p: f64) -> f64 {
    common::percentile(sorted, p).map_or(f64::NAN, |ns| ns as f64 / 1e6)
}

/// Publishes session events on pod A at `rate`/s for `secs`; a socket on pod B receives them.
async fn latency(env: &Env, rate: u64, secs: u64) {
    let mut sub = connect(&env.ws[1]).await;
    let sid = create(&mut sub).await;
    let total = rate * secs;
    let received = tokio::spawn(async move {
        let mut lat = Vec::with_capacity(total as usize);
        let deadline = Instant::now() + Duration::from_secs(secs + 10);
        while (lat.len() as u64) < total && Instant::now() < deadline {
            match tokio::time::timeout(Duration::from_secs(5), sub.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => {
                    let v: Value = serde_json::from_str(t.as_str()).unwrap_or(Value::Null);
                    if let Some(sent) = v["t"].as_u64() {
                        lat.push(now_ns().saturating_sub(sent));
                    }
                }
                Ok(Some(Ok(_))) => {}
                _ => break,
            }
        }
        lat
    });
    let client = reqwest::Client::builder().pool_max_idle_per_host(512).build().expect("client");
    let url = format!("{}/admin/publish", env.http[0]);
    let workers: u64 = std::env::var("BENCH_WORKERS").ok().and_then(|w| w.parse().ok()).unwrap_or(8);
    let per_worker = total / workers;
    let interval = Duration::from_nanos(1_000_000_000 * workers / rate);
    let mut tasks = Vec::new();
    // Each worker fires its publishes on its own clock without waiting for the previous answer (up to
    // IN_FLIGHT at once, over the keep-alive pool), so a slow round trip does not lower the offered rate: the
    // load generator is not the bottleneck it measures.
    const IN_FLIGHT: usize = 64;
    for _ in 0..workers {
        let (client, url, sid) = (client.clone(), url.clone(), sid.clone());
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
            let slots = Arc::new(tokio::sync::Semaphore::new(IN_FLIGHT));
            let mut inflight = tokio::task::JoinSet::new();
            for _ in 0..per_worker {
                tick.tick().await;
                let Ok(slot) = slots.clone().acquire_owned().await else { break };
                let (client, url, sid) = (client.clone(), url.clone(), sid.clone());
                inflight.spawn(async move {
                    let sent = now_ns();
                    let body = json!({"target": {"type": "session", "id": sid}, "event": {"type": "bench", "t": sent}});
                    let _ = client.post(&url).bearer_auth(KEY).json(&body).send().await;
                    drop(slot);
                    now_ns().saturating_sub(sent)
                });
            }
            let mut rtts = Vec::with_capacity(per_worker as usize);
            while let Some(rtt) = inflight.join_next().await {
                rtts.extend(rtt.ok());
            }
            rtts
        }));
    }
    let start = Instant::now();
    let mut rtts = Vec::new();
    for t in tasks {
        rtts.extend(t.await.unwrap_or_default());
    }
    let sent_secs = start.elapsed().as_secs_f64();
    rtts.sort_unstable();
    let mut lat = received.await.unwrap_or_default();
    lat.sort_unstable();
    println!(
        "latency rate={rate}/s sent={} in {:.2}s (offered {:.0}/s) received={} p50={:.3}ms p99={:.3}ms max={:.3}ms \
         (publish HTTP round trip p50={:.3}ms p99={:.3}ms)",
        per_worker * workers,
        sent_secs,
        (per_worker * workers) as f64 / sent_secs,
        lat.len(),
        pct(&lat, 0.5),
        pct(&lat, 0.99),
        pct(&lat, 1.0),
        pct(&rtts, 0.5),
        pct(&rtts, 0.99)
    );
}

/// Publishes as fast as `workers` concurrent publishers can for `secs`; reports events/s delivered to a socket
/// on the other pod.
async fn max_rate(env: &Env, secs: u64, workers: usize) {
    let mut sub = connect(&env.ws[1]).await;
    let sid = create(&mut sub).await;
    let stop_at = Instant::now() + Duration::from_secs(secs);
    let counter = tokio::spawn(async move {
        let mut n = 0u64;
        let deadline = stop_at + Duration::from_secs(2);
        while let Ok(Some(Ok(m))) = tokio::time::timeout_at(deadline.into(), sub.next()).await {
            if matches!(m, Message::Text(_)) {
                n += 1;
            }
        }
        n
    });
    let client = reqwest::Client::builder().pool_max_idle_per_host(workers).build().expect("client");
    let url = format!("{}/admin/publish", env.http[0]);
    let sent = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let (client, url, sid, sent) = (client.clone(), url.clone(), sid.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            while Instant::now() < stop_at {
                let body = json!({"target": {"type": "session", "id": sid}, "event": {"type": "bench", "t": now_ns()}});
                if client.post(&url).bearer_auth(KEY).json(&body).send().await.is_ok() {
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let received = counter.await.unwrap_or(0);
    let sent = sent.load(Ordering::Relaxed);
    println!(
        "max workers={workers} published={sent} ({:.0}/s) delivered={received} ({:.0}/s) over {secs}s",
        sent as f64 / secs as f64,
        received as f64 / secs as f64
    );
}

/// Redis `INFO commandstats` as command → (calls, µs spent) (empty when the bench did not start Redis).
async fn redis_calls(port: Option<u16>) -> std::collections::BTreeMap<String, (u64, u64)> {
    use fred::prelude::{ClientLike, Config};
    let mut out = std::collections::BTreeMap::new();
    let Some(port) = port else { return out };
    let Ok(config) = Config::from_url(&format!("redis://127.0.0.1:{port}")) else { return out };
    let Ok(client) = fred::prelude::Builder::from_config(config).build() else { return out };
    if client.init().await.is_err() {
        return out;
    }
    let text: String = client.info(Some(fred::types::InfoKind::CommandStats)).await.unwrap_or_default();
    let _ = client.quit().await;
    for line in text.lines() {
        let Some((name, stats)) = line.strip_prefix("cmdstat_").and_then(|l| l.split_once(':')) else { continue };
        let field = |f: &str| stats.split(',').find_map(|kv| kv.strip_prefix(f)).and_then(|c| c.parse().ok());
        out.insert(name.to_string(), (field("calls=").unwrap_or(0), field("usec=").unwrap_or(0)));
    }
    out
}

/// C clients × T turns; server CPU per turn from /proc.
async fn turns(env: &Env, clients: usize, per_client: usize) {
    let calls_before = redis_calls(env.redis_port).await;
    let before: Vec<f64> = env.pids.iter().map(|p| proc_stats(*p).0).collect();
    let redis_before = env.redis_pid.map(|p| proc_stats(p).0);
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let frames_total = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..clients {
        let url = env.ws[i % 2].clone();
        let done = done.clone();
        let errors = errors.clone();
        let frames = frames_total.clone();
        tasks.push(tokio::spawn(async move {
            let mut ws = connect(&url).await;
            let sid = create(&mut ws).await;
            if sid.is_empty() {
                errors.fetch_add(per_client as u64, Ordering::Relaxed);
                return;
            }
            for t in 0..per_client {
                let rid = format!("r{t}");
                let f =
                    json!({"action": "send_message", "requestId": rid, "sessionId": sid, "message": "benchmark turn"});
                ws.send(Message::Text(f.to_string().into())).await.expect("send");
                loop {
                    let v = recv(&mut ws).await;
                    frames.fetch_add(1, Ordering::Relaxed);
                    if v["requestId"] == rid.as_str()
                        && matches!(v["type"].as_str(), Some("eventual_response" | "error" | "cancelled"))
                    {
                        if v["type"] != "eventual_response" && errors.fetch_add(1, Ordering::Relaxed) == 0 {
                            println!("  first failed turn: {v}");
                        }
                        break;
                    }
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let after: Vec<f64> = env.pids.iter().map(|p| proc_stats(*p).0).collect();
    let redis_cpu = env.redis_pid.map(|p| proc_stats(p).0).zip(redis_before).map(|(a, b)| a - b);
    let cpu: f64 = after.iter().zip(&before).map(|(a, b)| a - b).sum();
    let n = done.load(Ordering::Relaxed);
    let frames_per_turn = frames_total.load(Ordering::Relaxed) as f64 / n.max(1) as f64;
    let per_turn = |secs: f64| secs * 1000.0 / n.max(1) as f64;
    println!(
        "turns clients={clients} turns={n} wall={elapsed:.2}s server_cpu={cpu:.2}s cpu_per_turn={:.3}ms frames_per_turn={frames_per_turn:.1} (800-char replies, 100 chunks)",
        per_turn(cpu)
    );
    let failed = errors.load(Ordering::Relaxed);
    if failed > 0 {
        println!("  WARNING: {failed} turns did not end with eventual_response: these figures are not comparable");
    }
    if let Some(r) = redis_cpu {
        // /proc ticks are 10 ms: over a round of 800 turns that is 0.0125 ms per turn of resolution.
        println!("  redis_cpu_per_turn={:.3}ms pods+redis_per_turn={:.3}ms", per_turn(r), per_turn(cpu + r));
    }
    let calls_after = redis_calls(env.redis_port).await;
    let delta = |c: &String, a: &(u64, u64)| {
        let b = calls_before.get(c).copied().unwrap_or((0, 0));
        ((a.0 - b.0) as f64 / n.max(1) as f64, (a.1 - b.1) as f64 / n.max(1) as f64)
    };
    let mut per_turn: Vec<(String, f64, f64)> = calls_after
        .iter()
        .map(|(c, a)| {
            let (calls, usec) = delta(c, a);
            (c.clone(), calls, usec)
        })
        .filter(|(_, v, _)| *v > 0.0)
        .collect();
    per_turn.sort_by(|a, b| b.1.total_cmp(&a.1));
    if !per_turn.is_empty() {
        let total: f64 = per_turn.iter().map(|(_, v, _)| v).sum();
        let top: Vec<String> = per_turn.iter().take(30).map(|(c, v, _)| format!("{c}={v:.1}")).collect();
        // A script's time includes its inner commands' (which are listed too): the top is by time, not a sum.
        per_turn.sort_by(|a, b| b.2.total_cmp(&a.2));
        let slow: Vec<String> = per_turn.iter().take(8).map(|(c, _, u)| format!("{c}={u:.1}")).collect();
        println!("  redis µs in commands per turn (scripts include their inner calls): {}", slow.join(" "));
        println!("  redis commands per turn: {total:.1} ({})", top.join(" "));
    }
}

/// N idle sockets each holding a session on pod B; RSS delta per socket, from the start and between half and all
/// of them (the second leaves out what the pod's first sockets grow once: buffers, maps, allocator pages, which
/// made the first figure vary by ±0.5 KiB run to run).
async fn idle(env: &Env, n: usize) {
    let pid = env.pids.get(1).copied();
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = pid.map(|p| proc_stats(p).1).unwrap_or(0);
    let mut sockets = Vec::with_capacity(n);
    let mut half = None;
    for chunk in 0..n.div_ceil(200) {
        if half.is_none() && sockets.len() >= n / 2 {
            tokio::time::sleep(Duration::from_secs(2)).await;
            half = Some((sockets.len(), pid.map(|p| proc_stats(p).1).unwrap_or(0)));
        }
        let mut batch = Vec::new();
        for _ in 0..200.min(n - chunk * 200) {
            let url = env.ws[1].clone();
            batch.push(tokio::spawn(async move {
                let mut ws = connect(&url).await;
                // BENCH_IDLE_BARE=1: sockets without a session, to see what the session part costs.
                if std::env::var("BENCH_IDLE_BARE").is_err() {
                    create(&mut ws).await;
                }
                ws
            }));
        }
        for b in batch {
            if let Ok(ws) = b.await {
                sockets.push(ws);
            }
        }
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = pid.map(|p| proc_stats(p).1).unwrap_or(0);
    let (half_n, half_rss) = half.unwrap_or((0, before));
    println!(
        "idle sockets={} rss_before={}KiB rss_after={}KiB per_socket={:.2}KiB second_half_per_socket={:.2}KiB",
        sockets.len(),
        before,
        after,
        (after.saturating_sub(before)) as f64 / sockets.len().max(1) as f64,
        (after.saturating_sub(half_rss)) as f64 / sockets.len().saturating_sub(half_n).max(1) as f64
    );
}

#[tokio::main]
async fn main() {
    let what = std::env::args().nth(1).unwrap_or_else(|| "all".into());
    let model_port = fake_model().await;
    let env = start_env(model_port).await;
    if what == "latency" || what == "all" {
        latency(&env, 1_000, 5).await;
        latency(&env, 10_000, 5).await;
    }
    if what == "max" || what == "all" {
        max_rate(&env, 5, 32).await;
    }
    if what == "turns" || what == "all" {
        // The first round also pays for the pods' heap growing to its working set (page faults); the later
        // rounds are the steady state a long-running pod sees. Every round is printed.
        let rounds = std::env::var("BENCH_TURN_ROUNDS").ok().and_then(|r| r.parse().ok()).unwrap_or(3);
        for round in 1..=rounds {
            print!("round {round}{}: ", if round == 1 { " (cold)" } else { "" });
            turns(&env, 40, 20).await;
        }
    }
    if what == "idle" || what == "all" {
        idle(&env, 10_000).await;
    }
}
