//! Decoding an OpenAI-compatible `text/event-stream` body: line framing (a buffer that is compacted once per
//! network read, whole lines parsed in place) and the `chat.completion.chunk` JSON of each `data:` line into
//! [`ModelEvent`]s, with tool-call fragments assembled until the stream ends. Knows nothing of sockets, read
//! windows or deadlines ([`super::openai`] drives it).

use std::collections::{BTreeMap, VecDeque};

use serde_json::Value;

use super::{FunctionCall, LlmError, ModelEvent, ToolCall, Usage};

/// The longest SSE line accepted (a model that never sends a newline cannot grow the buffer without bound).
const MAX_LINE_BYTES: usize = 4 * 1024 * 1024;

/// Partial tool call while its fragments stream in.
#[derive(Default)]
struct PartialCall {
    id: String,
    name: String,
    arguments: String,
}

/// One response body's decoder: bytes in ([`SseDecoder::feed`]), events out ([`SseDecoder::next_event`]).
#[derive(Default)]
pub(crate) struct SseDecoder {
    /// Received bytes; `buf[start..]` is not parsed yet. Lines are consumed by moving `start`, and the buffer is
    /// compacted once per network read: draining each line off the front moved the rest of a whole response
    /// body per line (quadratic in its size).
    buf: Vec<u8>,
    start: usize,
    calls: BTreeMap<u64, PartialCall>,
    pending: VecDeque<Result<ModelEvent, LlmError>>,
    /// No more events after the pending ones: `[DONE]`, the end of the body, or an error.
    done: bool,
}

impl SseDecoder {
    pub(crate) fn new() -> SseDecoder {
        SseDecoder::default()
    }

    /// The next event decoded from the whole lines received so far; `None` when more bytes are needed (or the
    /// stream is over: see [`SseDecoder::is_done`]).
    pub(crate) fn next_event(&mut self) -> Option<Result<ModelEvent, LlmError>> {
        loop {
            if let Some(ev) = self.pending.pop_front() {
                return Some(ev);
            }
            if self.done {
                return None;
            }
            let len = self.buf[self.start..].iter().position(|b| *b == b'\n')?;
            let (from, to) = (self.start, self.start + len);
            self.start = to + 1;
            let buf = std::mem::take(&mut self.buf);
            {
                let bytes = &buf[from..to];
                // Valid UTF-8 is the rule; the lossy path only for a broken line.
                let line = std::str::from_utf8(bytes)
                    .map(std::borrow::Cow::Borrowed)
                    .unwrap_or_else(|_| String::from_utf8_lossy(bytes));
                let line = line.trim_end_matches(['\r', '\n']);
                if let Some(data) = line.strip_prefix("data:") {
                    self.handle_data(data.trim());
                }
            }
            self.buf = buf;
        }
    }

    /// Appends one network read. An over-long line ends the stream with an error event.
    pub(crate) fn feed(&mut self, chunk: &[u8]) {
        self.buf.drain(..self.start);
        self.start = 0;
        if self.buf.len() + chunk.len() > MAX_LINE_BYTES {
            self.fail(LlmError::Stream("SSE line longer than 4 MiB".into()));
            return;
        }
        self.buf.extend_from_slice(chunk);
    }

    /// The body ended: the tool calls assembled so far are complete (a server may close without `[DONE]`).
    pub(crate) fn end_of_body(&mut self) {
        self.finish();
    }

    /// Ends the stream with `error` as its last event.
    pub(crate) fn fail(&mut self, error: LlmError) {
        if !self.done {
            self.pending.push_back(Err(error));
            self.done = true;
        }
    }

    pub(crate) fn is_done(&self) -> bool {
        self.done && self.pending.is_empty()
    }

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
                cost_micro_usd: None,
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
