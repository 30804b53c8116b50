//! A scripted OpenAI-compatible model server over real HTTP.
//!
//! The gateway's model client must cope with what real endpoints do on the wire: SSE framing, tool-call
//! arguments split across chunks, a trailing usage chunk with no choices, error statuses, streams that stall.
//! A fake at the HTTP level tests all of that (and the real `reqwest` stack) while keeping each test's
//! model output exact and deterministic: the test pushes [`Reply`]s, each request consumes one.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// One scripted model response; each request to `/v1/chat/completions` consumes the next one.
#[derive(Debug, Clone)]
pub enum Reply {
    /// Streams each chunk as `delta.content`, then `finish_reason: "stop"`, then the usage chunk if set.
    Text { chunks: Vec<String>, usage: Option<(u32, u32)> },
    /// Streams tool calls `(id, name, arguments_json)`, each call's arguments split over several chunks as
    /// OpenAI does, then `finish_reason: "tool_calls"`.
    ToolCalls { calls: Vec<(String, String, String)>, usage: Option<(u32, u32)> },
    /// Answers with this HTTP status and an OpenAI-style JSON error body, without a stream.
    Status(u16),
    /// Sends the headers and one content chunk ("…"), then never finishes: for cancel and timeout tests.
    Hang,
    /// Like [`Reply::Text`] with `delay_ms` before every event after the first.
    Slow { chunks: Vec<String>, delay_ms: u64, usage: Option<(u32, u32)> },
}

impl Reply {
    /// A text reply split into the given chunks, without usage.
    pub fn text<S: AsRef<str>>(chunks: &[S]) -> Reply {
        Reply::Text { chunks: chunks.iter().map(|c| c.as_ref().to_string()).collect(), usage: None }
    }

    /// A text reply split into the given chunks, with `(prompt_tokens, completion_tokens)` usage.
    pub fn text_with_usage<S: AsRef<str>>(chunks: &[S], prompt: u32, completion: u32) -> Reply {
        Reply::Text {
            chunks: chunks.iter().map(|c| c.as_ref().to_string()).collect(),
            usage: Some((prompt, completion)),
        }
    }

    /// A single tool call; `arguments` is a JSON value serialized the way the model would emit it.
    pub fn tool_call(id: &str, name: &str, arguments: &Value) -> Reply {
        Reply::ToolCalls { calls: vec![(id.to_string(), name.to_string(), arguments.to_string())], usage: None }
    }
}

/// What the server shares with its handlers and the test.
struct LlmState {
    script: Arc<Mutex<VecDeque<Reply>>>,
    default_reply: Mutex<Reply>,
    requests: Mutex<Vec<Value>>,
    auth_headers: Mutex<Vec<Option<String>>>,
    completed_streams: AtomicUsize,
    dropped_streams: AtomicUsize,
}

/// The fake model server; stops accepting connections when dropped.
pub struct FakeLlm {
    addr: SocketAddr,
    state: Arc<LlmState>,
    server: JoinHandle<()>,
}

impl FakeLlm {
    /// Binds 127.0.0.1:0 and serves on the current tokio runtime.
    pub async fn start() -> FakeLlm {
        let state = Arc::new(LlmState {
            script: Arc::new(Mutex::new(VecDeque::new())),
            default_reply: Mutex::new(Reply::text(&["ok"])),
            requests: Mutex::new(Vec::new()),
            auth_headers: Mutex::new(Vec::new()),
            completed_streams: AtomicUsize::new(0),
            dropped_streams: AtomicUsize::new(0),
        });
        let app = Router::new().route("/v1/chat/completions", post(chat_completions)).with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind fake llm");
        let addr = listener.local_addr().expect("fake llm addr");
        let server = tokio::spawn(async move {
            axum::serve(listener, app).await.expect("fake llm server");
        });
        FakeLlm { addr, state, server }
    }

    /// `http://127.0.0.1:PORT/v1`; the client under test appends `/chat/completions`.
    pub fn base_url(&self) -> String {
        format!("http://{}/v1", self.addr)
    }

    /// The bound address, for tests that build URLs of their own (e.g. a wrong path).
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Appends a reply to the script.
    pub fn push(&self, reply: Reply) {
        self.state.script.lock().push_back(reply);
    }

    /// The script queue itself, for tests that want to inspect or rearrange what is left.
    pub fn script(&self) -> Arc<Mutex<VecDeque<Reply>>> {
        self.state.script.clone()
    }

    /// Replaces the reply used once the script is empty (initially the text "ok" without usage).
    pub fn set_default(&self, reply: Reply) {
        *self.state.default_reply.lock() = reply;
    }

    /// Every request body received so far, in arrival order (non-JSON bodies as a JSON string).
    pub fn requests(&self) -> Vec<Value> {
        self.state.requests.lock().clone()
    }

    /// The `Authorization` header of every request, in the same order as [`FakeLlm::requests`].
    pub fn auth_headers(&self) -> Vec<Option<String>> {
        self.state.auth_headers.lock().clone()
    }

    /// Requests received so far; cheaper than [`FakeLlm::requests`] for "was the model called?" checks.
    pub fn request_count(&self) -> usize {
        self.state.requests.lock().len()
    }

    /// Waits until at least `n` requests have arrived, panicking after `timeout`: the gateway calls the
    /// model asynchronously, so a test must wait before asserting on what it sent.
    pub async fn wait_for_requests(&self, n: usize, timeout: Duration) -> Vec<Value> {
        let deadline = Instant::now() + timeout;
        loop {
            let reqs = self.requests();
            if reqs.len() >= n {
                return reqs;
            }
            if Instant::now() >= deadline {
                panic!("fake LLM got {} requests within {timeout:?}, expected {n}", reqs.len());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Streams whose every event was handed to the HTTP server.
    pub fn completed_streams(&self) -> usize {
        self.state.completed_streams.load(Ordering::SeqCst)
    }

    /// Streams the client abandoned before they finished (a cancelled or timed-out `Hang`/`Slow` reply shows
    /// up here), so tests can assert the gateway really closed the upstream request.
    pub fn dropped_streams(&self) -> usize {
        self.state.dropped_streams.load(Ordering::SeqCst)
    }

    /// Waits until at least `n` streams were dropped by the client, panicking after `timeout`.
    pub async fn wait_for_dropped_streams(&self, n: usize, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        while self.dropped_streams() < n {
            if Instant::now() >= deadline {
                panic!("fake LLM saw {} dropped streams within {timeout:?}, expected {n}", self.dropped_streams());
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        self.server.abort();
    }
}

async fn chat_completions(State(state): State<Arc<LlmState>>, headers: HeaderMap, body: Bytes) -> Response {
    let body: Value =
        serde_json::from_slice(&body).unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&body).into_owned()));
    let model = body.get("model").and_then(Value::as_str).unwrap_or("fake-model").to_string();
    let auth = headers.get(header::AUTHORIZATION).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
    // Record and pick the reply under one lock order so concurrent requests number themselves consistently.
    let (n, reply) = {
        let mut reqs = state.requests.lock();
        reqs.push(body);
        state.auth_headers.lock().push(auth);
        let reply = state.script.lock().pop_front();
        (reqs.len(), reply.unwrap_or_else(|| state.default_reply.lock().clone()))
    };
    let chunk = ChunkWriter { id: format!("chatcmpl-fake-{n}"), model };

    match reply {
        Reply::Status(code) => {
            let status = StatusCode::from_u16(code).expect("valid HTTP status in Reply::Status");
            let body = json!({"error": {
                "message": format!("fake upstream error {code}"),
                "type": "fake_error",
                "code": code,
            }});
            (status, axum::Json(body)).into_response()
        }
        Reply::Text { chunks, usage } => sse(state, chunk.text_events(&chunks, usage), None, false),
        Reply::Slow { chunks, delay_ms, usage } => {
            sse(state, chunk.text_events(&chunks, usage), Some(Duration::from_millis(delay_ms)), false)
        }
        Reply::ToolCalls { calls, usage } => sse(state, chunk.tool_call_events(&calls, usage), None, false),
        Reply::Hang => sse(state, vec![chunk.content("…", true)], None, true),
    }
}

/// Builds a streaming response fed by a producer task, so a delayed or hanging stream is real time passing
/// on the server, and a client that goes away is noticed (the send fails) and counted.
fn sse(state: Arc<LlmState>, events: Vec<String>, delay: Option<Duration>, hang: bool) -> Response {
    let (tx, rx) = mpsc::channel::<Bytes>(1);
    tokio::spawn(async move {
        for (i, event) in events.into_iter().enumerate() {
            if i > 0 {
                if let Some(d) = delay {
                    tokio::time::sleep(d).await;
                }
            }
            if tx.send(Bytes::from(event)).await.is_err() {
                state.dropped_streams.fetch_add(1, Ordering::SeqCst);
                return;
            }
        }
        if hang {
            // Never finish; the only way out is the client hanging up, which drops the body and `rx`.
            tx.closed().await;
            state.dropped_streams.fetch_add(1, Ordering::SeqCst);
            return;
        }
        state.completed_streams.fetch_add(1, Ordering::SeqCst);
    });
    let stream =
        futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|b| (Ok::<_, Infallible>(b), rx)) });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(stream))
        .expect("build SSE response")
}

/// Formats `chat.completion.chunk` events for one response (same id and model throughout, as OpenAI does).
struct ChunkWriter {
    id: String,
    model: String,
}

impl ChunkWriter {
    fn event(&self, choices: Value, usage: Option<Value>) -> String {
        let mut chunk = json!({
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": 1_700_000_000u64,
            "model": self.model,
            "choices": choices,
        });
        if let Some(u) = usage {
            chunk["usage"] = u;
        }
        format!("data: {chunk}\n\n")
    }

    fn delta(&self, delta: Value, finish_reason: Option<&str>) -> String {
        self.event(json!([{"index": 0, "delta": delta, "finish_reason": finish_reason}]), None)
    }

    fn content(&self, text: &str, first: bool) -> String {
        if first {
            self.delta(json!({"role": "assistant", "content": text}), None)
        } else {
            self.delta(json!({"content": text}), None)
        }
    }

    /// The finish chunk, then the usage chunk (`choices: []`, like `stream_options.include_usage`), then `[DONE]`.
    fn tail(&self, finish_reason: &str, usage: Option<(u32, u32)>, out: &mut Vec<String>) {
        out.push(self.delta(json!({}), Some(finish_reason)));
        if let Some((prompt, completion)) = usage {
            out.push(self.event(
                json!([]),
                Some(json!({
                    "prompt_tokens": prompt,
                    "completion_tokens": completion,
                    "total_tokens": prompt + completion,
                })),
            ));
        }
        out.push("data: [DONE]\n\n".to_string());
    }

    fn text_events(&self, chunks: &[String], usage: Option<(u32, u32)>) -> Vec<String> {
        let mut out: Vec<String> = chunks.iter().enumerate().map(|(i, c)| self.content(c, i == 0)).collect();
        self.tail("stop", usage, &mut out);
        out
    }

    fn tool_call_events(&self, calls: &[(String, String, String)], usage: Option<(u32, u32)>) -> Vec<String> {
        let mut out = Vec::new();
        for (index, (id, name, arguments)) in calls.iter().enumerate() {
            let mut head = json!({"tool_calls": [{
                "index": index,
                "id": id,
                "type": "function",
                "function": {"name": name, "arguments": ""},
            }]});
            if index == 0 {
                head["role"] = json!("assistant");
                head["content"] = Value::Null;
            }
            out.push(self.delta(head, None));
            for piece in split_in_three(arguments) {
                out.push(self.delta(json!({"tool_calls": [{"index": index, "function": {"arguments": piece}}]}), None));
            }
        }
        self.tail("tool_calls", usage, &mut out);
        out
    }
}

/// Splits on char boundaries into up to three non-empty pieces, so the client must reassemble arguments
/// that are not valid JSON until the last fragment arrives.
pub fn split_in_three(s: &str) -> Vec<&str> {
    let chars: Vec<usize> = s.char_indices().map(|(i, _)| i).collect();
    let n = chars.len();
    let cut = |k: usize| if k >= n { s.len() } else { chars[k] };
    let (a, b) = (cut(n / 3), cut(2 * n / 3));
    [&s[..a], &s[a..b], &s[b..]].into_iter().filter(|p| !p.is_empty()).collect()
}
