//! OpenAI-compatible `/chat/completions` client with SSE streaming, streamed tool-call assembly, usage
//! reporting (`stream_options.include_usage`), a whole-call deadline and retry with backoff on connect
//! errors, 429 and 5xx — only before the first byte of the stream, so no token is ever sent twice.

use std::collections::BTreeMap;
use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;
use serde_json::{json, Value};
use tokio::time::Instant;

use super::*;
use crate::config::LlmConfig;

pub struct OpenAiModel {
    http: reqwest::Client,
    url: String,
    api_key: String,
    timeout: Duration,
    max_retries: u32,
}

impl OpenAiModel {
    pub fn new(config: &LlmConfig) -> Self {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .pool_idle_timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self {
            http,
            url: format!("{}/chat/completions", config.base_url.trim_end_matches('/')),
            api_key: config.api_key.clone(),
            timeout: Duration::from_secs(config.timeout_s),
            max_retries: config.max_retries,
        }
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
}

fn retryable(status: u16) -> bool {
    status == 429 || status >= 500
}

#[async_trait]
impl ChatModel for OpenAiModel {
    async fn stream(&self, request: ChatRequest) -> Result<ModelStream, LlmError> {
        let deadline = Instant::now() + self.timeout;
        let body = Self::body(&request);
        let mut attempt = 0u32;
        let response = loop {
            let mut req = self.http.post(&self.url).json(&body).header("Accept", "text/event-stream");
            if !self.api_key.is_empty() {
                req = req.bearer_auth(&self.api_key);
            }
            let result = tokio::time::timeout_at(deadline, req.send()).await.map_err(|_| LlmError::Timeout)?;
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
                    let text = resp.text().await.unwrap_or_default();
                    let err = LlmError::Status { status, body: text.chars().take(300).collect() };
                    if !retryable(status) || attempt >= self.max_retries {
                        return Err(err);
                    }
                    tracing::warn!(status, attempt, "model endpoint refused, retrying");
                    retry_after
                }
                Err(e) => {
                    if attempt >= self.max_retries {
                        return Err(LlmError::Unreachable(e.to_string()));
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

        let bytes = response.bytes_stream();
        let stream = async_stream(bytes, deadline);
        Ok(Box::pin(stream))
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
}

fn async_stream<S>(bytes: S, deadline: Instant) -> impl futures_util::Stream<Item = Result<ModelEvent, LlmError>> + Send
where
    S: futures_util::Stream<Item = Result<bytes::Bytes, reqwest::Error>> + Send + Unpin + 'static,
{
    let state = SseState {
        bytes,
        buf: Vec::new(),
        start: 0,
        calls: BTreeMap::new(),
        pending: Default::default(),
        deadline,
        done: false,
    };
    futures_util::stream::unfold(state, |mut st| async move {
        loop {
            if let Some(ev) = st.pending.pop_front() {
                return Some((ev, st));
            }
            if st.done {
                return None;
            }
            // Whole lines first.
            if let Some(len) = st.buf[st.start..].iter().position(|b| *b == b'\n') {
                let (from, to) = (st.start, st.start + len);
                st.start = to + 1;
                let buf = std::mem::take(&mut st.buf);
                {
                    let line = String::from_utf8_lossy(&buf[from..to]);
                    let line = line.trim_end_matches(['\r', '\n']);
                    if let Some(data) = line.strip_prefix("data:") {
                        st.handle_data(data.trim());
                    }
                }
                st.buf = buf;
                continue;
            }
            match tokio::time::timeout_at(st.deadline, st.bytes.next()).await {
                Err(_) => {
                    st.done = true;
                    return Some((Err(LlmError::Timeout), st));
                }
                Ok(None) => {
                    // The server closed without [DONE]: flush what was assembled.
                    st.finish();
                    continue;
                }
                Ok(Some(Err(e))) => {
                    st.done = true;
                    return Some((Err(LlmError::Stream(e.to_string())), st));
                }
                Ok(Some(Ok(chunk))) => {
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
        let pieces: Vec<Result<bytes::Bytes, reqwest::Error>> =
            body.as_bytes().chunks(size).map(|c| Ok(bytes::Bytes::copy_from_slice(c))).collect();
        let deadline = Instant::now() + std::time::Duration::from_secs(5);
        let mut events = Box::pin(async_stream(futures_util::stream::iter(pieces), deadline));
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
}
