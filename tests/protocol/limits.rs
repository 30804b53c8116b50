//! The listener's limits over raw TCP: a request head that never completes (or never starts) is closed after
//! `http.header_read_timeout_ms`, an idle keep-alive connection after `http.idle_timeout_ms`, and past
//! `limits.connections_per_pod` open connections (WebSockets included) a new one is closed at once; refusals
//! are counted by reason. A WebSocket is not an idle HTTP connection: it outlives the idle limit.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use super::*;

/// Reads until the peer closes (Ok(bytes read)) or `within` passes (Err).
async fn closed_within(tcp: &mut TcpStream, within: Duration) -> Result<Vec<u8>, ()> {
    let mut got = Vec::new();
    let deadline = Instant::now() + within;
    let mut buf = [0u8; 1024];
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return Ok(got),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return Err(()),
        }
    }
}

async fn raw(pod: &switchboard::server::Running) -> TcpStream {
    TcpStream::connect(pod.addr).await.expect("tcp connect")
}

const HEALTH: &[u8] = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_silent_and_idle_connections_are_closed() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.http.header_read_timeout_ms = 600;
    cfg.http.idle_timeout_ms = 1_000;
    let pod = pod(cfg).await;

    // Headers a byte at a time, slower than the limit allows: closed before they are done.
    let mut slow = raw(&pod).await;
    let started = Instant::now();
    let mut closed_early = false;
    for b in HEALTH.iter().take(HEALTH.len() - 2) {
        if slow.write_all(&[*b]).await.is_err() {
            closed_early = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::from_millis(1), slow.read(&mut probe)).await {
            closed_early = true;
            break;
        }
    }
    assert!(closed_early, "a head sent a byte every 100 ms ({} bytes) was never cut off", HEALTH.len());
    assert!(started.elapsed() < Duration::from_secs(3), "closed by the header limit, not by chance");

    // A connection that sends nothing at all.
    let mut silent = raw(&pod).await;
    assert!(closed_within(&mut silent, Duration::from_secs(5)).await.is_ok(), "a silent connection stays open");

    // A full request is answered; the connection then idles and is closed after the idle limit.
    let mut idle = raw(&pod).await;
    idle.write_all(HEALTH).await.expect("write");
    let mut head = [0u8; 64];
    let n = idle.read(&mut head).await.expect("response");
    assert!(String::from_utf8_lossy(&head[..n]).starts_with("HTTP/1.1 200"), "{}", String::from_utf8_lossy(&head));
    assert!(closed_within(&mut idle, Duration::from_secs(6)).await.is_ok(), "an idle keep-alive stays open");

    // A WebSocket is not idle HTTP: well past both limits it still answers.
    let mut ws = connect(&pod, false).await;
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    ws.send(&json!({"action": "ping", "requestId": "still"})).await;
    let pong = ws.recv_until(|v| v["requestId"] == "still").await;
    assert_eq!(pong.last().expect("pong")["type"], "pong");

    let metrics = scrape(&pod).await;
    assert!(metrics.value("switchboard_connections_refused_total", &[("reason", "header_timeout")]) >= 2.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn past_the_connection_cap_a_new_connection_is_closed_and_websockets_count() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.connections_per_pod = 2;
    let pod = pod(cfg).await;
    let mut first = connect(&pod, false).await;
    let mut second = raw(&pod).await;
    second.write_all(HEALTH).await.expect("write");
    let mut buf = [0u8; 64];
    assert!(second.read(&mut buf).await.expect("read") > 0, "the second connection is served");
    // Both slots are taken (one by a WebSocket): the third connection is closed without an answer.
    let mut third = raw(&pod).await;
    let _ = third.write_all(HEALTH).await;
    let answer = closed_within(&mut third, Duration::from_secs(5)).await.expect("closed at once");
    assert!(answer.is_empty(), "no response past the cap: {}", String::from_utf8_lossy(&answer));
    // The WebSocket still works; once it closes its slot is free again.
    first.send(&json!({"action": "ping", "requestId": "p"})).await;
    assert_eq!(first.recv_until(|v| v["requestId"] == "p").await.last().expect("pong")["type"], "pong");
    first.close().await;
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let mut again = raw(&pod).await;
        again.write_all(HEALTH).await.expect("write");
        if let Ok(Ok(n)) = tokio::time::timeout(Duration::from_millis(500), again.read(&mut buf)).await {
            if n > 0 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "the freed slots were never given back");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let metrics = scrape(&pod).await;
    assert!(metrics.value("switchboard_connections_refused_total", &[("reason", "connections_per_pod")]) >= 1.0);
}
