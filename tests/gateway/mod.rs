//! The orra gateway over real HTTP and sockets: REST turns, the SSE stream, the orra WebSocket dialect, on
//! memory and on Redis, with an in-test model and in-test tool webhooks.

use crate::{harness, support};

mod agui;
mod budget;
mod herald;
mod orra;
mod rest;
mod stream;

use harness::*;
use serde_json::{json, Value};
use support::llm::{FakeLlm, Reply};
use support::tools::{Behaviour, FakeTools};
use switchboard::config::{ApiKeyConfig, Config};

pub const KEY_A: &str = "key-alpha-0123456789";
pub const KEY_B: &str = "key-bravo-0123456789";

async fn setup() -> (FakeLlm, FakeTools) {
    (FakeLlm::start().await, FakeTools::start().await)
}

/// The harness config with two API keys (callers `api-key:alpha` and `api-key:bravo` in org `acme`).
fn keyed(llm: &FakeLlm, tools: &FakeTools) -> Config {
    let mut c = config(llm, tools);
    c.auth.api_keys = vec![
        ApiKeyConfig { name: "alpha".into(), org: "acme".into(), key: KEY_A.into() },
        ApiKeyConfig { name: "bravo".into(), org: "acme".into(), key: KEY_B.into() },
    ];
    c
}

/// One REST call: status and JSON body (Null when the body is not JSON).
async fn call(
    pod: &switchboard::server::Running,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<Value>,
) -> (u16, Value) {
    let mut req = reqwest::Client::new().request(method, http_url(pod, path));
    if let Some(k) = key {
        req = req.bearer_auth(k);
    }
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.expect("request");
    let status = resp.status().as_u16();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or(Value::Null))
}

async fn post(pod: &switchboard::server::Running, path: &str, key: Option<&str>, body: Value) -> (u16, Value) {
    call(pod, reqwest::Method::POST, path, key, Some(body)).await
}

async fn get(pod: &switchboard::server::Running, path: &str, key: Option<&str>) -> (u16, Value) {
    call(pod, reqwest::Method::GET, path, key, None).await
}
