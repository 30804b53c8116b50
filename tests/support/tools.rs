//! An HTTP tool webhook server for tests.
//!
//! Switchboard's tools are webhooks owned by the host application, and the interesting cases are how the
//! gateway treats them when they misbehave (errors, non-2xx, slowness, garbage, oversized output) and what
//! it sends (body, `Idempotency-Key`). Each tool name gets a [`Behaviour`] and every call is recorded.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::task::JoinHandle;

/// How one tool answers.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// 200 `{"result": value}`.
    Ok(Value),
    /// 200 `{"error": msg}`: the tool ran and reports a failure.
    ToolError(String),
    /// This status with an empty JSON object body.
    Status(u16),
    /// Sleeps `ms` milliseconds, then answers like [`Behaviour::Ok`]; for timeout tests.
    Delay(u64, Value),
    /// 200 with the body `not json`.
    BadJson,
    /// 200 with this JSON body as is (other webhook contracts: retrieval, OTP delivery).
    Raw(Value),
    /// 200 `{"result": "xxx…"}` with this many `x`s; for output-size limits.
    Huge(usize),
}

/// One recorded webhook call.
#[derive(Debug, Clone)]
pub struct Call {
    /// The request body (a JSON string holding the raw text if it was not JSON).
    pub body: Value,
    /// The `Idempotency-Key` header, which the gateway sets to the tool call id.
    pub idempotency_key: Option<String>,
    /// The `X-Switchboard-Signature` header, when the gateway signs its calls.
    pub signature: Option<String>,
    /// The raw body, for checking a signature.
    pub raw: Vec<u8>,
}

struct ToolsState {
    behaviours: Mutex<HashMap<String, Behaviour>>,
    calls: Mutex<Vec<(String, Call)>>,
}

/// The fake webhook server; stops accepting connections when dropped.
pub struct FakeTools {
    addr: SocketAddr,
    state: Arc<ToolsState>,
    server: JoinHandle<()>,
}

impl FakeTools {
    /// Binds 127.0.0.1:0 and serves `/tools/{name}` on the current tokio runtime.
    pub async fn start() -> FakeTools {
        let state = Arc::new(ToolsState { behaviours: Mutex::new(HashMap::new()), calls: Mutex::new(Vec::new()) });
        let app = Router::new().route("/tools/{name}", any(tool)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake tools");
        let addr = listener.local_addr().expect("fake tools addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake tools server");
        });
        FakeTools { addr, state, server }
    }

    /// `http://127.0.0.1:PORT/tools/NAME`, the `url` to put in the tool's config.
    pub fn url(&self, name: &str) -> String {
        format!("http://{}/tools/{name}", self.addr)
    }

    /// The bound address, for tests that build URLs of their own (e.g. an unknown path).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Sets how `name` answers from now on (default: `Ok("done")`).
    pub fn set(&self, name: &str, behaviour: Behaviour) {
        self.state.behaviours.lock().insert(name.to_string(), behaviour);
    }

    /// Calls made to `name` so far, in arrival order. A call is recorded when it arrives, before any
    /// [`Behaviour::Delay`], so a call the gateway gave up on still shows.
    pub fn calls(&self, name: &str) -> Vec<Call> {
        self.state.calls.lock().iter().filter(|(n, _)| n == name).map(|(_, c)| c.clone()).collect()
    }

    /// Number of calls to any tool.
    pub fn total_calls(&self) -> usize {
        self.state.calls.lock().len()
    }

    /// Waits until `name` has been called at least `n` times, panicking after `timeout`.
    pub async fn wait_for_calls(&self, name: &str, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls(name);
            if calls.len() >= n {
                return calls;
            }
            if Instant::now() >= deadline {
                panic!("tool {name} got {} calls within {timeout:?}, expected {n}", calls.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeTools {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn tool(
    State(state): State<Arc<ToolsState>>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let raw = body.to_vec();
    let body: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let header = |n: &str| headers.get(n).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    let (idempotency_key, signature) = (header("idempotency-key"), header("x-switchboard-signature"));
    state.calls.lock().push((name.clone(), Call { body, idempotency_key, signature, raw }));
    let behaviour = state.behaviours.lock().get(&name).cloned().unwrap_or_else(|| Behaviour::Ok(json!("done")));

    match behaviour {
        Behaviour::Ok(v) => axum::Json(json!({"result": v})).into_response(),
        Behaviour::ToolError(msg) => axum::Json(json!({"error": msg})).into_response(),
        Behaviour::Status(code) => {
            let status = StatusCode::from_u16(code).expect("valid HTTP status in Behaviour::Status");
            (status, axum::Json(json!({}))).into_response()
        }
        Behaviour::Delay(ms, v) => {
            tokio::time::sleep(Duration::from_millis(ms)).await;
            axum::Json(json!({"result": v})).into_response()
        }
        Behaviour::BadJson => ([(header::CONTENT_TYPE, "application/json")], "not json").into_response(),
        Behaviour::Raw(v) => axum::Json(v).into_response(),
        Behaviour::Huge(n) => axum::Json(json!({"result": "x".repeat(n)})).into_response(),
    }
}
