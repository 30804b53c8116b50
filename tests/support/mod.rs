//! Shared integration-test support: real components the tests drive over real sockets.
//!
//! Every helper here talks to a real process or a real HTTP/WebSocket server on 127.0.0.1, never a
//! mock of Redis, so a test exercises the same code paths production does:
//!
//! - [`redis`]: `redis-server` child processes (single, 3-node cluster, master/replica + Sentinel) that a
//!   test can kill and restart;
//! - [`llm`]: an OpenAI-compatible `/v1/chat/completions` server that streams a scripted SSE reply;
//! - [`tools`]: an HTTP tool webhook server with per-tool behaviour and a call log;
//! - [`ws`]: a WebSocket client with timeouts and assertions suited to the Switchboard protocol.
//!
//! Test files pull this in with `mod support;`; not every test uses every helper, hence the blanket
//! `dead_code` allowance below.
#![allow(dead_code)]

/// AG-UI's official client (`@ag-ui/client` from npm, run by Node) driving a pod.
pub mod agui;
/// A real headless Chromium driven over WebDriver, for the widget.
pub mod browser;
/// Scripted OpenAI-compatible model server.
pub mod llm;
/// MCP servers from the Python SDK and `server-everything`, as child processes.
pub mod mcp;
/// Free ports for processes that must be told theirs up front.
pub mod ports;
/// A switchable TCP proxy standing in for a load balancer.
pub mod proxy;
/// A WebSocket client writing raw frames, for protocol violations.
pub mod raw_ws;
/// Real `redis-server` processes: single, cluster, Sentinel.
pub mod redis;
/// HTTP tool webhook server.
pub mod tools;
/// WebSocket test client.
pub mod ws;

/// Waits, when the current minute has less than 15 s left, for the next one to begin: the per-caller budgets count
/// in fixed minute windows (README, limits), so a test that spends a budget and expects `RATE_LIMITED` must spend
/// it all within one window.
#[allow(dead_code)] // not every test binary counts budgets
pub async fn one_budget_window() {
    let into_minute =
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() % 60_000).unwrap_or(0);
    if into_minute > 45_000 {
        tokio::time::sleep(std::time::Duration::from_millis((60_000 - into_minute) as u64 + 100)).await;
    }
}

/// A fresh identifier for keys, sessions or users, so tests sharing one Redis never see each other's data.
///
/// `tag` is kept as a readable prefix to make leftovers attributable when debugging with `redis-cli`.
pub fn unique_id(tag: &str) -> String {
    format!("{tag}-{}", uuid::Uuid::new_v4().simple())
}
