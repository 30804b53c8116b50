//! Model access: an OpenAI-compatible streaming client ([`openai`]) and the offline demo model ([`demo`]),
//! both behind [`ChatModel`]. A model call yields a stream of [`ModelEvent`]s; tool calls arrive assembled
//! (streamed argument fragments are joined by the client). The OpenAI client reads a flowing stream in windows
//! ([`window`]) so a paced stream costs one wakeup per window, not one per chunk, and says when a window's burst
//! is complete ([`ModelEvent::Idle`]).

pub(crate) mod demo;
pub(crate) mod openai;
pub(crate) mod sse;
pub(crate) mod window;

use std::pin::Pin;

use async_trait::async_trait;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// One message in OpenAI chat format.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ChatMessage {
    pub role: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_calls: Option<Vec<ToolCall>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool_call_id: Option<String>,
}

impl ChatMessage {
    pub(crate) fn text(role: &str, text: &str) -> Self {
        Self { role: role.into(), content: Some(Value::String(text.into())), tool_calls: None, tool_call_id: None }
    }
    pub(crate) fn tool_result(tool_call_id: &str, text: &str) -> Self {
        Self {
            role: "tool".into(),
            content: Some(Value::String(text.into())),
            tool_calls: None,
            tool_call_id: Some(tool_call_id.into()),
        }
    }
    /// The text of a string content, or the joined text parts of a multi-part content.
    pub(crate) fn text_content(&self) -> String {
        match &self.content {
            Some(Value::String(s)) => s.clone(),
            Some(Value::Array(parts)) => {
                parts.iter().filter_map(|p| p.get("text").and_then(Value::as_str)).collect::<Vec<_>>().join(" ")
            }
            _ => String::new(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ToolCall {
    pub id: String,
    #[serde(rename = "type", default = "function_type")]
    pub kind: String,
    pub function: FunctionCall,
}

fn function_type() -> String {
    "function".into()
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct FunctionCall {
    pub name: String,
    pub arguments: String,
}

/// A tool offered to the model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct ToolSpec {
    pub name: String,
    pub description: String,
    pub parameters: Value,
}

#[derive(Debug, Clone)]
pub(crate) struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub tools: Vec<ToolSpec>,
    /// The turn's org's own model key (`llm.org_keys`); `None` = the deployment's `llm.api_key`.
    pub api_key: Option<String>,
    /// The last message is a cut assistant reply the endpoint is to continue (`continue_final_message`).
    pub continue_final: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum ModelEvent {
    Token(String),
    Reasoning(String),
    /// All tool calls of the response, in index order, arguments complete.
    ToolCalls(Vec<ToolCall>),
    Usage(Usage),
    /// The events so far are all the model has sent for now: a read window's burst is complete ([`window`]),
    /// so what was gathered from it can go out at once.
    Idle,
}

#[derive(Debug, Clone, thiserror::Error)]
pub(crate) enum LlmError {
    #[error("model endpoint unreachable: {0}")]
    Unreachable(String),
    #[error("model endpoint answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("model call timed out")]
    Timeout,
    #[error("model stream broken: {0}")]
    Stream(String),
    /// The client cannot be built from the configuration (reported at boot).
    #[error("model client setup: {0}")]
    Setup(String),
}

pub(crate) type ModelStream = Pin<Box<dyn Stream<Item = Result<ModelEvent, LlmError>> + Send>>;

/// A chat model.
#[async_trait]
pub(crate) trait ChatModel: Send + Sync {
    /// Starts a streamed completion. Errors before the stream starts (after retries) come here; errors
    /// mid-stream come as stream items.
    async fn stream(&self, request: ChatRequest) -> Result<ModelStream, LlmError>;
}

/// Token counts, as the model reports them per call and as a turn sums them over its calls.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub(crate) struct Usage {
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// What the turn's model calls cost, in millionths of a dollar; None while the model has no price
    /// (`llm.prices`). Summed by the turn, not reported by the model.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_micro_usd: Option<u64>,
}
