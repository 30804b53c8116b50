//! Starts real Switchboard pods for integration tests: the library's router on a real socket, an in-test
//! OpenAI-compatible model and in-test tool webhooks.
#![allow(dead_code)]

use std::time::Duration;

use serde_json::{json, Value};
use switchboard::backend::memory::MemoryBackend;
use switchboard::config::{AgentConfig, AuthLevel, Config, InteractionKind, OtpDeliveryMode, ToolConfig, Visibility};
use switchboard::server::{start_with, Running};

use super::support::llm::FakeLlm;
use super::support::tools::FakeTools;
use super::support::ws::Client;

pub const AGENT: &str = "11111111-1111-1111-1111-111111111111";

/// A config for tests: port 0, short timeouts, one agent whose tools are served by `tools`.
pub fn config(llm: &FakeLlm, tools: &FakeTools) -> Config {
    let mut c = Config { bind: "127.0.0.1:0".into(), ..Default::default() };
    c.llm.base_url = llm.base_url();
    c.llm.api_key = "sk-test".into();
    c.llm.timeout_s = 5;
    c.llm.max_retries = 1;
    c.tools.timeout_ms = 1_000;
    c.tools.max_output_bytes = 4_096;
    c.turn.lease_ms = 2_000;
    c.drain.pre_stop_s = 0;
    c.drain.timeout_s = 3;
    c.auth.publish_keys = vec!["publish-key-0123456789".into()];
    // Tests run many clients as the one anonymous user; the per-user bound has its own test.
    c.limits.turns_per_user = 100;
    if plain_reads() {
        c.llm.read_window_ms = Some(0);
    }
    c.agents = vec![AgentConfig {
        id: AGENT.into(),
        name: "Aria".into(),
        system_prompt: "You are a helpful support agent.".into(),
        confirm_tools: vec!["delete_*".into(), "issue_refund".into()],
        models: vec!["gpt-4o".into()],
        tools: ["lookup_order", "delete_record", "issue_refund"]
            .iter()
            .map(|n| ToolConfig {
                name: (*n).into(),
                description: format!("{n} tool"),
                parameters: json!({"type": "object", "properties": {"id": {"type": "string"}}}),
                url: tools.url(n),
                auth_level: AuthLevel::None,
                title: None,
                // A lookup may run twice (a turn taken over after its pod died mid-call).
                idempotent: *n == "lookup_order",
            })
            .collect(),
        interactions: vec![InteractionKind::IdentityIntake, InteractionKind::Choices],
        visibility: Visibility::Public,
        knowledge_sets: None,
        allowed_origins: vec![],
        widget_secret: String::new(),
        org: "default".into(),
        mcp_servers: Vec::new(),
        greeting: None,
    }];
    c
}

/// Adds the OTP gate to `cfg`: an `end_user` tool `pay_invoice` answering "paid", an `admin` tool
/// `admin_reset`, and codes delivered to the in-test webhook `otp` (its calls carry the codes).
pub fn with_otp_gate(cfg: &mut Config, tools: &FakeTools) {
    for (name, level) in [("pay_invoice", AuthLevel::EndUser), ("admin_reset", AuthLevel::Admin)] {
        cfg.agents[0].tools.push(ToolConfig {
            name: name.into(),
            description: String::new(),
            parameters: json!({"type": "object"}),
            url: tools.url(name),
            auth_level: level,
            title: None,
            idempotent: false,
        });
    }
    cfg.otp.delivery = OtpDeliveryMode::Webhook;
    cfg.otp.delivery_url = tools.url("otp");
    tools.set("otp", super::support::tools::Behaviour::Ok(json!("sent")));
    tools.set("pay_invoice", super::support::tools::Behaviour::Ok(json!("paid")));
}

/// `tests/protocol_plain_reads.rs` runs the protocol suite a second time with the windowed model reads off
/// (`llm.read_window_ms = 0`): the same file compiled into a test binary of that name.
fn plain_reads() -> bool {
    std::env::current_exe()
        .ok()
        .and_then(|p| p.file_name().map(|n| n.to_string_lossy().starts_with("protocol_plain_reads")))
        .unwrap_or(false)
}

/// Starts a pod on its own memory backend.
pub async fn pod(config: Config) -> Running {
    test_logs();
    let mem = MemoryBackend::new(&config);
    start_with(config, mem.backends()).await.expect("pod starts")
}

pub fn ws_url(pod: &Running) -> String {
    format!("ws://{}/ws", pod.addr)
}

pub fn http_url(pod: &Running, path: &str) -> String {
    format!("http://{}{}", pod.addr, path)
}

/// Opens a v1 (no subprotocol) or extended connection.
pub async fn connect(pod: &Running, extended: bool) -> Client {
    let proto = extended.then_some("switchboard");
    Client::connect_with(&ws_url(pod), proto, None).await.expect("websocket connects")
}

/// Creates a session and returns its id.
pub async fn create_session(c: &mut Client) -> String {
    c.send(&json!({"action": "create_conversation_session", "requestId": "create", "agentId": AGENT})).await;
    let r = c.recv().await;
    assert_eq!(r["type"], "immediate_response", "{r}");
    assert_eq!(r["status"], 200, "{r}");
    r["data"]["sessionId"].as_str().expect("sessionId").to_string()
}

pub async fn send_message(c: &mut Client, sid: &str, rid: &str, text: &str) {
    c.send(&json!({"action": "send_message", "requestId": rid, "sessionId": sid, "message": text, "stream": true}))
        .await;
}

/// Frames until the turn's terminal event (eventual_response, cancelled or error with that requestId).
pub async fn until_terminal(c: &mut Client, rid: &str) -> Vec<Value> {
    let rid = rid.to_string();
    c.recv_until(move |v| {
        let t = v["type"].as_str().unwrap_or("");
        v["requestId"] == rid.as_str() && matches!(t, "eventual_response" | "cancelled" | "error")
    })
    .await
}

pub fn types(frames: &[Value]) -> Vec<String> {
    frames.iter().map(|f| f["type"].as_str().unwrap_or("?").to_string()).collect()
}

pub fn tokens(frames: &[Value]) -> String {
    frames.iter().filter(|f| f["type"] == "stream_token").map(|f| f["token"].as_str().unwrap_or("")).collect()
}

pub async fn sleep_ms(ms: u64) {
    tokio::time::sleep(Duration::from_millis(ms)).await;
}

/// Where a group of pods keeps its state.
pub enum Store {
    /// One shared in-memory backend (several pods in one process, no Redis).
    Memory(MemoryBackend),
    /// A Redis URL; every group gets its own key prefix.
    Redis(String),
}

/// Server logs in test output when SB_TEST_LOG is set (e.g. `SB_TEST_LOG=debug`).
pub fn test_logs() {
    if let Ok(level) = std::env::var("SB_TEST_LOG") {
        let _ = tracing_subscriber::fmt().with_env_filter(level).with_test_writer().try_init();
    }
}

/// Starts `n` pods sharing one store.
pub async fn pods(n: usize, mut config: Config, store: &Store) -> Vec<Running> {
    test_logs();
    let mut out = Vec::new();
    match store {
        Store::Memory(mem) => {
            for _ in 0..n {
                out.push(start_with(config.clone(), mem.backends()).await.expect("pod starts"));
            }
        }
        Store::Redis(url) => {
            config.redis_url = url.clone();
            config.redis_key_prefix = super::support::unique_id("sb");
            for _ in 0..n {
                out.push(switchboard::server::start(config.clone()).await.expect("pod starts on redis"));
            }
        }
    }
    out
}

pub fn memory_store(config: &Config) -> Store {
    Store::Memory(MemoryBackend::new(config))
}

/// A parsed `/metrics` scrape (Prometheus text format, read with a real parser, not string matching).
pub struct Metrics(pub prometheus_parse::Scrape);

impl Metrics {
    /// The value of the sample `name` whose labels include `labels`; panics when there is none.
    pub fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.find(name, labels).unwrap_or_else(|| panic!("no sample {name}{labels:?} in the scrape"))
    }

    /// The value of the sample `name` whose labels include `labels`, if there is one.
    pub fn find(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.0
            .samples
            .iter()
            .filter(|s| s.metric == name && labels.iter().all(|(k, v)| s.labels.get(k) == Some(*v)))
            .find_map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => Some(v),
                _ => None,
            })
    }
}

/// Scrapes a pod's `/metrics` and parses it.
pub async fn scrape(pod: &Running) -> Metrics {
    scrape_url(&http_url(pod, "/metrics")).await
}

/// Scrapes the `/metrics` at `url` (a pod in another process) and parses it.
pub async fn scrape_url(url: &str) -> Metrics {
    let text = reqwest::get(url).await.expect("metrics").text().await.expect("body");
    let lines = text.lines().map(|l| Ok(l.to_string()));
    Metrics(prometheus_parse::Scrape::parse(lines).unwrap_or_else(|e| panic!("unparsable scrape: {e}\n{text}")))
}
