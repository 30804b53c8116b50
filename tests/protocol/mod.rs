//! One pod speaking the protocol over real sockets: an in-test OpenAI-compatible model, in-test webhooks.
//! Every frame a v1 client receives is checked against the v1 shapes.

use crate::{harness, support};

mod admin;
mod approvals;
mod http;
mod interactions;
mod knowledge;
mod limits;
mod otp;
mod requests;
mod sockets;
mod tenancy;
mod turns;
mod widget;

use std::time::Duration;

use harness::*;
use serde_json::{json, Value};
use support::llm::{FakeLlm, Reply};
use support::tools::{Behaviour, FakeTools};
use support::ws::Frame;
use switchboard::protocol::shapes::check_v1_frame;
fn assert_v1(frames: &[Value]) {
    for f in frames {
        check_v1_frame(f).unwrap_or_else(|e| panic!("not a v1 frame: {e}\n{f}"));
    }
}

async fn setup() -> (FakeLlm, FakeTools) {
    (FakeLlm::start().await, FakeTools::start().await)
}

async fn still_open(c: &mut support::ws::Client) {
    c.send(&json!({"action": "ping", "requestId": "alive"})).await;
    let p = c.recv().await;
    assert_eq!((p["type"].as_str(), p["requestId"].as_str()), (Some("pong"), Some("alive")), "{p}");
}
