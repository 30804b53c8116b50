//! OpenAI-compatible `/chat/completions` client with SSE streaming, streamed tool-call assembly, usage
//! reporting (`stream_options.include_usage`), a whole-call deadline and retry with backoff on connect
//! errors, 429 and 5xx — only before the first byte of the stream, so no token is ever sent twice.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use futures_util::StreamExt;
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde_json::{json, Value};
use tokio::time::Instant;

use super::window::{WindowCtl, WindowedConnector};
use super::*;
use crate::config::LlmConfig;

type HttpClient = Client<hyper_rustls::HttpsConnector<WindowedConnector>, Full<Bytes>>;

/// How much of a refused call's body is read for the error message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

pub struct OpenAiModel {
    http: HttpClient,
    /// `…/chat/completions`.
    url: hyper::Uri,
    api_key: String,
    timeout: Duration,
    max_retries: u32,
    /// Read window while a response streams (`llm.read_window_ms`, by default `turn.coalesce_ms`; see
    /// [`super::window`]); zero reads each chunk as it arrives (the connection never leaves the reactor).
    window: Duration,
}

impl OpenAiModel {
    /// A client that checks the endpoint's certificate against the Mozilla roots built into the binary.
    pub fn new(config: &LlmConfig, window: Duration) -> Result<Self, LlmError> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        Self::with_roots(config, window, roots)
    }

    /// A client trusting `roots` (tests; a private CA).
    pub fn with_roots(config: &LlmConfig, window: Duration, roots: rustls::RootCertStore) -> Result<Self, LlmError> {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| LlmError::Setup(format!("TLS: {e}")))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let tls = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(WindowedConnector::new(Duration::from_secs(10)));
        let http = Client::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .pool_timer(TokioTimer::new())
            .build(tls);
        let url = format!("{}/chat/completions", config.base_url.trim_end_matches('/'));
        Ok(Self {
            http,
            // Checked as a URL at config load; this catches what a URL allows and an HTTP request line does not.
            url: url.parse().map_err(|e| LlmError::Setup(format!("llm.base_url is not a valid request URL: {e}")))?,
            api_key: config.api_key.clone(),
            timeout: Duration::from_secs(config.timeout_s),
            max_retries: config.max_retries,
            window,
        })
    }

    fn body(request: &ChatRequest) -> Value {
        let mut body = json!({
            "model": request.model,
            "messages": request.messages,
            "stream": true,
            "stream_options": {"include_usage": true},
        });
        if !request.tools.is_empty() {
            let tools: Vec<Value> = request
                .tools
                .iter()
                .map(|t| json!({"type": "function", "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}))
                .collect();
            body["tools"] = Value::Array(tools);
        }
        body
    }

    fn request(&self, body: &Bytes) -> Result<hyper::Request<Full<Bytes>>, LlmError> {
        let mut req = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "text/event-stream");
        if !self.api_key.is_empty() {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {}", self.api_key));
        }
        req.body(Full::new(body.clone())).map_err(|e| LlmError::Unreachable(format!("building the request: {e}")))
    }
}

fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

#[async_trait]
impl ChatModel for OpenAiModel {
    async fn stream(&self, request: ChatRequest) -> Result<ModelStream, LlmError> {
        let deadline = Instant::now() + self.timeout;
        let body = Bytes::from(Self::body(&request).to_string());
        let mut attempt = 0u32;
        let response = loop {
            let req = self.request(&body)?;
            let result =
                tokio::time::timeout_at(deadline, self.http.request(req)).await.map_err(|_| LlmError::Timeout)?;
            let retry_after = match result {
                Ok(resp) if resp.status().is_success() => break resp,
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    let retry_after = resp
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let limited = http_body_util::Limited::new(resp.into_body(), ERROR_BODY_LIMIT);
                    let text = match tokio::time::timeout_at(deadline, limited.collect()).await {
                        Ok(Ok(b)) => String::from_utf8_lossy(&b.to_bytes()).into_owned(),
                        _ => String::new(),
                    };
                    let err = LlmError::Status { status, body: text.chars().take(300).collect() };
                    if !retryable(status) || attempt >= self.max_retries {
                        return Err(err);
                    }
                    tracing::warn!(status, attempt, "model endpoint refused, retrying");
                    retry_after
                }
                Err(e) => {
                    let e = error_chain(&e);
                    if attempt >= self.max_retries {
                        return Err(LlmError::Unreachable(e));
                    }
                    tracing::warn!(error = %e, attempt, "model endpoint unreachable, retrying");
                    None
                }
            };
            let backoff = retry_after
                .unwrap_or_else(|| Duration::from_millis(200 * 2u64.pow(attempt) + rand::random::<u64>() % 100))
                .min(Duration::from_secs(10));
            if Instant::now() + backoff >= deadline {
                return Err(LlmError::Timeout);
            }
            tokio::time::sleep(backoff).await;
            attempt += 1;
        };

        let window =
            response.extensions().get::<WindowCtl>().cloned().map(|ctl| ReadWindow { ctl, window: self.window });
        let bytes = response.into_body().into_data_stream();
        let stream = async_stream(bytes, deadline, window);
        Ok(Box::pin(stream))
    }
}

/// An error with its sources ("client error (Connect): tcp connect error: Connection refused").
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(": ");
        text.push_str(&s.to_string());
        source = s.source();
    }
    text
}

/// The read window of the connection a response streams on: switched on once the first event is parsed (time
/// to first token stays a direct read), off again when the stream ends or is dropped, so the connection's next
/// response starts with direct reads too.
struct ReadWindow {
    ctl: WindowCtl,
    window: Duration,
}

impl Drop for ReadWindow {
    fn drop(&mut self) {
        self.ctl.set(Duration::ZERO);
    }
}

/// Partial tool call while its fragments stream in.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

struct SseState<S> {
    bytes: S,
    /// Received bytes; `buf[start..]` is not parsed yet. Lines are consumed by moving `start`, and the buffer is
    /// compacted once per network read: draining each line off the front moved the rest of a whole response
    /// body per line (quadratic in its size).
    buf: Vec<u8>,
    start: usize,
    calls: BTreeMap<u64, PartialCall>,
    pending: std::collections::VecDeque<Result<ModelEvent, LlmError>>,
    deadline: Instant,
    done: bool,
    /// Off until the first event, dropped (so off) with the stream.
    window: Option<ReadWindow>,
    windowed: bool,
    /// Events were yielded since the last `Idle`.
    unannounced: bool,
}

fn async_stream<S, E>(
    bytes: S,
    deadline: Instant,
    window: Option<ReadWindow>,
) -> impl futures_util::Stream<Item = Result<ModelEvent, LlmError>> + Send
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + 'static,
{
    let state = SseState {
        bytes,
        buf: Vec::new(),
        start: 0,
        calls: BTreeMap::new(),
        pending: Default::default(),
        deadline,
        done: false,
        window,
        windowed: false,
        unannounced: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                st.unannounced = true;
                if !st.windowed {
                    st.windowed = true;
                    if let Some(w) = &st.window {
                        w.ctl.set(w.window);
                    }
                }
                return Some((ev, st));
            }
            if st.done {
                // Dropping the state drops the window: the connection's next response starts with direct reads.
                return None;
            }
            // Whole lines first.
            if let Some(len) = st.buf[st.start..].iter().position(|b| *b == b'\n') {
                let (from, to) = (st.start, st.start + len);
                st.start = to + 1;
                let buf = std::mem::take(&mut st.buf);
                {
                    let bytes = &buf[from..to];
                    // Valid UTF-8 is the rule; the lossy path only for a broken line.
                    let line = std::str::from_utf8(bytes)
                        .map(std::borrow::Cow::Borrowed)
                        .unwrap_or_else(|_| String::from_utf8_lossy(bytes));
                    let line = line.trim_end_matches(['\r', '\n']);
                    if let Some(data) = line.strip_prefix("data:") {
                        st.handle_data(data.trim());
                    }
                }
                st.buf = buf;
                continue;
            }
            // With windows on, also listen for the connection going idle: the burst read so far is complete.
            let idle = st.window.as_ref().filter(|_| st.windowed && st.unannounced).map(|w| w.ctl.clone());
            let bytes = &mut st.bytes;
            let next = tokio::time::timeout_at(st.deadline, async move {
                match idle {
                    Some(ctl) => tokio::select! {
                        biased;
                        b = bytes.next() => Some(b),
                        _ = ctl.idle() => None,
                    },
                    None => Some(bytes.next().await),
                }
            });
            match next.await {
                Ok(None) => {
                    st.unannounced = false;
                    return Some((Ok(ModelEvent::Idle), st));
                }
                Err(_) => {
                    st.done = true;
                    return Some((Err(LlmError::Timeout), st));
                }
                Ok(Some(None)) => {
                    // The server closed without [DONE]: flush what was assembled.
                    st.finish();
                    continue;
                }
                Ok(Some(Some(Err(e)))) => {
                    st.done = true;
                    return Some((Err(LlmError::Stream(error_chain(&e))), st));
                }
                Ok(Some(Some(Ok(chunk)))) => {
                    st.buf.drain(..st.start);
                    st.start = 0;
                    if st.buf.len() + chunk.len() > 4 * 1024 * 1024 {
                        st.done = true;
                        return Some((Err(LlmError::Stream("SSE line longer than 4 MiB".into())), st));
                    }
                    st.buf.extend_from_slice(&chunk);
                }
            }
        }
    })
}

impl<S> SseState<S> {
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        if !self.calls.is_empty() {
            let calls = std::mem::take(&mut self.calls)
                .into_values()
                .map(|p| ToolCall {
                    id: if p.id.is_empty() { format!("call_{}", uuid::Uuid::new_v4().simple()) } else { p.id },
                    kind: "function".into(),
                    function: FunctionCall {
                        name: p.name,
                        arguments: if p.arguments.is_empty() { "{}".into() } else { p.arguments },
                    },
                })
                .collect();
            self.pending.push_back(Ok(ModelEvent::ToolCalls(calls)));
        }
    }

    fn handle_data(&mut self, data: &str) {
        if data == "[DONE]" {
            self.finish();
            return;
        }
        // Typed, borrowing parse: one allocation per token instead of a whole JSON tree per chunk.
        let Ok(chunk) = serde_json::from_str::<SseChunk<'_>>(data) else {
            self.pending.push_back(Err(LlmError::Stream(format!(
                "bad SSE data: {}",
                data.chars().take(100).collect::<String>()
            ))));
            self.done = true;
            return;
        };
        if let Some(err) = chunk.error.filter(|e| !e.is_null()) {
            self.pending.push_back(Err(LlmError::Stream(format!("model error: {err}"))));
            self.done = true;
            return;
        }
        if let Some(u) = chunk.usage {
            self.pending.push_back(Ok(ModelEvent::Usage(Usage {
                prompt_tokens: u.prompt_tokens.unwrap_or(0),
                completion_tokens: u.completion_tokens.unwrap_or(0),
            })));
        }
        for choice in chunk.choices.unwrap_or_default() {
            let Some(delta) = choice.delta else { continue };
            for r in [delta.reasoning_content, delta.reasoning].into_iter().flatten() {
                if !r.is_empty() {
                    self.pending.push_back(Ok(ModelEvent::Reasoning(r.into_owned())));
                }
            }
            if let Some(t) = delta.content.filter(|t| !t.is_empty()) {
                self.pending.push_back(Ok(ModelEvent::Token(t.into_owned())));
            }
            for (pos, c) in delta.tool_calls.unwrap_or_default().into_iter().enumerate() {
                let p = self.calls.entry(c.index.unwrap_or(pos as u64)).or_default();
                if let Some(id) = c.id {
                    p.id = id.into_owned();
                }
                if let Some(f) = c.function {
                    if let Some(n) = f.name {
                        p.name.push_str(&n);
                    }
                    if let Some(a) = f.arguments {
                        p.arguments.push_str(&a);
                    }
                }
            }
        }
    }
}

/// One `chat.completion.chunk`, only the fields used. Strings borrow from the line unless they hold escapes.
#[derive(serde::Deserialize)]
struct SseChunk<'a> {
    #[serde(borrow, default)]
    choices: Option<Vec<SseChoice<'a>>>,
    #[serde(default)]
    usage: Option<SseUsage>,
    #[serde(default)]
    error: Option<Value>,
}

#[derive(serde::Deserialize)]
struct SseChoice<'a> {
    #[serde(borrow, default)]
    delta: Option<SseDelta<'a>>,
}

#[derive(serde::Deserialize)]
struct SseDelta<'a> {
    #[serde(borrow, default)]
    content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning_content: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    reasoning: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    tool_calls: Option<Vec<SseToolCall<'a>>>,
}

#[derive(serde::Deserialize)]
struct SseToolCall<'a> {
    #[serde(default)]
    index: Option<u64>,
    #[serde(borrow, default)]
    id: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    function: Option<SseFunction<'a>>,
}

#[derive(serde::Deserialize)]
struct SseFunction<'a> {
    #[serde(borrow, default)]
    name: Option<std::borrow::Cow<'a, str>>,
    #[serde(borrow, default)]
    arguments: Option<std::borrow::Cow<'a, str>>,
}

#[derive(serde::Deserialize)]
struct SseUsage {
    #[serde(default)]
    prompt_tokens: Option<u64>,
    #[serde(default)]
    completion_tokens: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reply text and usage seen when `body` arrives cut into `size`-byte network reads.
    async fn parse_in_pieces(body: &str, size: usize) -> (String, Option<u64>) {
        let pieces: Vec<Result<Bytes, std::io::Error>> =
            body.as_bytes().chunks(size).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut events = Box::pin(async_stream(futures_util::stream::iter(pieces), deadline, None));
        let (mut text, mut completion) = (String::new(), None);
        while let Some(ev) = events.next().await {
            match ev.expect("event") {
                ModelEvent::Token(t) => text.push_str(&t),
                ModelEvent::Usage(u) => completion = Some(u.completion_tokens),
                _ => {}
            }
        }
        (text, completion)
    }

    #[tokio::test]
    async fn sse_lines_split_across_reads_parse_the_same() {
        let mut body = String::new();
        for word in ["Hel", "lo, ", "wör", "ld"] {
            body.push_str(&format!("data: {}\r\n\r\n", serde_json::json!({"choices": [{"delta": {"content": word}}]})));
        }
        body.push_str(": a comment line\n\n");
        body.push_str("data: {\"choices\": [], \"usage\": {\"prompt_tokens\": 3, \"completion_tokens\": 4}}\n\n");
        body.push_str("data: [DONE]\n\n");
        for size in [1, 2, 3, 7, 64, body.len()] {
            assert_eq!(parse_in_pieces(&body, size).await, ("Hello, wörld".to_string(), Some(4)), "reads of {size}");
        }
    }

    #[tokio::test]
    async fn https_model_urls_go_through_tls_and_a_failed_handshake_is_a_clean_error() {
        use tokio::io::AsyncReadExt;
        // A plain TCP peer: it records the first bytes it gets, then hangs up.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let peer = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut first = [0u8; 3];
            s.read_exact(&mut first).await.expect("read");
            first
        });
        let config =
            LlmConfig { base_url: format!("https://{addr}/v1"), max_retries: 0, timeout_s: 10, ..LlmConfig::default() };
        let model = OpenAiModel::new(&config, Duration::from_millis(50)).expect("client");
        let request = ChatRequest { model: "m".into(), messages: vec![ChatMessage::text("user", "hi")], tools: vec![] };
        match model.stream(request).await {
            Err(LlmError::Unreachable(e)) => assert!(!e.is_empty()),
            Err(e) => panic!("expected an unreachable error, got {e}"),
            Ok(_) => panic!("a peer that hangs up cannot stream"),
        }
        // A TLS handshake record (0x16, version 3.x), not a request in clear text.
        let first = peer.await.expect("peer");
        assert_eq!((first[0], first[1]), (0x16, 0x03), "{first:?}");
    }

    /// An HTTPS endpoint streaming paced SSE chunks: the whole TLS path with read windows on (a window spans
    /// several TLS records, some cut across reads), every token once and in order, and the connection reused.
    #[tokio::test]
    async fn streams_over_tls_with_read_windows_and_reuses_the_connection() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).expect("certificate");
        let cert_der = cert.cert.der().clone();
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(cert.key_pair.serialize_der().into());
        let server_tls =
            rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
                .with_safe_default_protocol_versions()
                .expect("versions")
                .with_no_client_auth()
                .with_single_cert(vec![cert_der.clone()], key)
                .expect("server config");
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(server_tls));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let words: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
        let served = words.clone();
        let server = tokio::spawn(async move {
            // One connection, two requests on it (keep-alive).
            let (tcp, _) = listener.accept().await.expect("accept");
            let mut tls = acceptor.accept(tcp).await.expect("handshake");
            for _ in 0..2 {
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    let mut byte = [0u8; 1];
                    tls.read_exact(&mut byte).await.expect("request head");
                    head.push(byte[0]);
                }
                let head = String::from_utf8_lossy(&head).to_ascii_lowercase();
                let len = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:").map(|v| v.trim().parse::<usize>().expect("length")))
                    .expect("content-length");
                let mut body = vec![0u8; len];
                tls.read_exact(&mut body).await.expect("request body");
                tls.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n",
                )
                .await
                .expect("head");
                let mut events: Vec<String> = served
                    .iter()
                    .map(|w| format!("data: {}\n\n", serde_json::json!({"choices": [{"delta": {"content": w}}]})))
                    .collect();
                events.push("data: [DONE]\n\n".into());
                for e in events {
                    tls.write_all(format!("{:x}\r\n{e}\r\n", e.len()).as_bytes()).await.expect("chunk");
                    tls.flush().await.expect("flush");
                    tokio::time::sleep(Duration::from_millis(4)).await;
                }
                tls.write_all(b"0\r\n\r\n").await.expect("end");
                tls.flush().await.expect("flush");
            }
        });
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cert_der).expect("root");
        let config =
            LlmConfig { base_url: format!("https://localhost:{port}/v1"), timeout_s: 10, ..LlmConfig::default() };
        let model = OpenAiModel::with_roots(&config, Duration::from_millis(25), roots).expect("client");
        for round in 0..2 {
            let request =
                ChatRequest { model: "m".into(), messages: vec![ChatMessage::text("user", "hi")], tools: vec![] };
            let started = Instant::now();
            let mut stream = model.stream(request).await.expect("stream");
            let (mut text, mut idles) = (String::new(), 0u128);
            while let Some(ev) = stream.next().await {
                match ev.expect("event") {
                    ModelEvent::Token(t) => text.push_str(&t),
                    ModelEvent::Idle => idles += 1,
                    _ => {}
                }
            }
            assert_eq!(text, words.concat(), "round {round}");
            // 20 chunks ~4 ms apart in 25 ms windows: a burst per window, not an idle per chunk.
            let windows = started.elapsed().as_millis() / 25;
            assert!(idles >= 1 && idles <= windows + 1, "round {round}: {idles} idle signals in {windows} windows");
        }
        server.await.expect("server");
    }
}
