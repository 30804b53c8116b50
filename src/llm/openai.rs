//! OpenAI-compatible `/chat/completions` client with SSE streaming, streamed tool-call assembly, usage
//! reporting (`stream_options.include_usage`), a whole-call deadline and retry with backoff on connect
//! errors, 429 and 5xx — only before the first byte of the stream, so no token is ever sent twice.

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

use super::sse::SseDecoder;
use super::window::{WindowCtl, WindowedConnector};
use super::*;
use crate::config::LlmConfig;
use crate::util::Backoff;

type HttpClient = Client<hyper_rustls::HttpsConnector<WindowedConnector>, Full<Bytes>>;

/// How much of a refused call's body is read for the error message.
const ERROR_BODY_LIMIT: usize = 64 * 1024;

pub(crate) struct OpenAiModel {
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
    pub(crate) fn new(config: &LlmConfig, window: Duration) -> Result<Self, LlmError> {
        let roots = rustls::RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
        Self::with_roots(config, window, roots)
    }

    /// A client trusting `roots` (tests; a private CA).
    pub(crate) fn with_roots(
        config: &LlmConfig,
        window: Duration,
        roots: rustls::RootCertStore,
    ) -> Result<Self, LlmError> {
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
        if request.continue_final {
            // vLLM's (and transformers' chat template) names: go on with the last assistant message.
            body["continue_final_message"] = Value::Bool(true);
            body["add_generation_prompt"] = Value::Bool(false);
        }
        body
    }

    fn request(&self, body: &Bytes, key: &str) -> Result<hyper::Request<Full<Bytes>>, LlmError> {
        let mut req = hyper::Request::post(self.url.clone())
            .header(hyper::header::CONTENT_TYPE, "application/json")
            .header(hyper::header::ACCEPT, "text/event-stream");
        if !key.is_empty() {
            req = req.header(hyper::header::AUTHORIZATION, format!("Bearer {key}"));
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
        // A tenant's own key (`llm.org_keys`) when the turn has one, else the deployment's.
        let key = request.api_key.as_deref().unwrap_or(&self.api_key);
        let response = self.send(&body, key, deadline).await?;
        let window =
            response.extensions().get::<WindowCtl>().cloned().map(|ctl| ReadWindow { ctl, window: self.window });
        let bytes = response.into_body().into_data_stream();
        let stream = async_stream(bytes, deadline, window);
        Ok(Box::pin(stream))
    }
}

/// What one attempt at the request came to.
enum Attempt {
    Streaming(hyper::Response<hyper::body::Incoming>),
    /// Worth another try, after the server's `Retry-After` if it gave one.
    Retry {
        error: LlmError,
        retry_after: Option<Duration>,
    },
    Failed(LlmError),
}

impl OpenAiModel {
    /// Sends the request until a response starts streaming: retries connect errors, 429 and 5xx with backoff
    /// (or the server's `Retry-After`), at most `llm.max_retries` times, and never past the call's deadline.
    async fn send(
        &self,
        body: &Bytes,
        key: &str,
        deadline: Instant,
    ) -> Result<hyper::Response<hyper::body::Incoming>, LlmError> {
        let mut backoff =
            Backoff::new(Duration::from_millis(200), Duration::from_secs(10)).with_jitter(Duration::from_millis(100));
        let mut attempt = 0u32;
        loop {
            let (error, retry_after) = match self.attempt(body, key, deadline).await? {
                Attempt::Streaming(resp) => return Ok(resp),
                Attempt::Failed(e) => return Err(e),
                Attempt::Retry { error, retry_after } => (error, retry_after),
            };
            if attempt >= self.max_retries {
                return Err(error);
            }
            tracing::warn!(error = %error, attempt, "model endpoint failed, retrying");
            let delay = retry_after.map_or_else(|| backoff.next_delay(), |d| d.min(Duration::from_secs(10)));
            if Instant::now() + delay >= deadline {
                return Err(LlmError::Timeout);
            }
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }

    /// One request; an error body is read (bounded) so the failure can be reported.
    async fn attempt(&self, body: &Bytes, key: &str, deadline: Instant) -> Result<Attempt, LlmError> {
        let req = self.request(body, key)?;
        let result = tokio::time::timeout_at(deadline, self.http.request(req)).await.map_err(|_| LlmError::Timeout)?;
        let resp = match result {
            Ok(resp) if resp.status().is_success() => return Ok(Attempt::Streaming(resp)),
            Ok(resp) => resp,
            Err(e) => return Ok(Attempt::Retry { error: LlmError::Unreachable(error_chain(&e)), retry_after: None }),
        };
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
        let error = LlmError::Status { status, body: text.chars().take(300).collect() };
        Ok(if retryable(status) { Attempt::Retry { error, retry_after } } else { Attempt::Failed(error) })
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

struct StreamState<S> {
    bytes: S,
    decoder: SseDecoder,
    deadline: Instant,
    /// Off until the first event, dropped (so off) with the stream.
    window: Option<ReadWindow>,
    windowed: bool,
    /// Events were yielded since the last `Idle`.
    unannounced: bool,
}

/// Drives the decoder over the response body: reads until the deadline, turns the read window on after the
/// first event, and yields `Idle` when a windowed read finds the connection quiet.
fn async_stream<S, E>(
    bytes: S,
    deadline: Instant,
    window: Option<ReadWindow>,
) -> impl futures_util::Stream<Item = Result<ModelEvent, LlmError>> + Send
where
    S: futures_util::Stream<Item = Result<Bytes, E>> + Send + Unpin + 'static,
    E: std::error::Error + Send + 'static,
{
    let state =
        StreamState { bytes, decoder: SseDecoder::new(), deadline, window, windowed: false, unannounced: false };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.decoder.next_event() {
                st.unannounced = true;
                if !st.windowed {
                    st.windowed = true;
                    if let Some(w) = &st.window {
                        w.ctl.set(w.window);
                    }
                }
                return Some((ev, st));
            }
            if st.decoder.is_done() {
                // Dropping the state drops the window: the connection's next response starts with direct reads.
                return None;
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
                Err(_) => st.decoder.fail(LlmError::Timeout),
                Ok(Some(None)) => st.decoder.end_of_body(),
                Ok(Some(Some(Err(e)))) => st.decoder.fail(LlmError::Stream(error_chain(&e))),
                Ok(Some(Some(Ok(chunk)))) => st.decoder.feed(&chunk),
            }
        }
    })
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
        let request = ChatRequest {
            model: "m".into(),
            messages: vec![ChatMessage::text("user", "hi")],
            tools: vec![],
            api_key: None,
            continue_final: false,
        };
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
            let request = ChatRequest {
                model: "m".into(),
                messages: vec![ChatMessage::text("user", "hi")],
                tools: vec![],
                api_key: None,
                continue_final: false,
            };
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
