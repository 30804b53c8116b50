//! AG-UI 1.0 on the wire: the `RunAgentInput` a client posts and the events the server streams back, in the
//! shapes of `@ag-ui/core` 1.0 (every optional field left out rather than `null`: the client's schemas refuse
//! `null` where they know a field).

use serde::Deserialize;
use serde_json::{json, Value};

/// `RunAgentInput`: what a client posts to run the agent on a thread. Unknown keys are ignored, as the
/// client's own schemas do.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct RunAgentInput {
    pub(super) thread_id: String,
    pub(super) run_id: String,
    #[serde(default)]
    pub(super) messages: Vec<Message>,
    /// Frontend tools: offered to the model; a call to one ends the run for the client to run it.
    #[serde(default)]
    pub(super) tools: Vec<Tool>,
    /// Answers to the interrupts the previous run ended with.
    #[serde(default)]
    pub(super) resume: Vec<ResumeEntry>,
}

/// One message of the thread as the client holds it (only what the server reads).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct Message {
    #[serde(default)]
    pub(super) id: String,
    pub(super) role: String,
    #[serde(default)]
    pub(super) content: Value,
    /// A `tool` message: the call it answers.
    #[serde(default)]
    pub(super) tool_call_id: Option<String>,
    /// An `assistant` message: the calls it made.
    #[serde(default)]
    pub(super) tool_calls: Vec<MessageToolCall>,
}

#[derive(Debug, Deserialize)]
pub(super) struct MessageToolCall {
    pub(super) id: String,
    pub(super) function: MessageFunction,
}

#[derive(Debug, Deserialize)]
pub(super) struct MessageFunction {
    pub(super) name: String,
    #[serde(default)]
    pub(super) arguments: String,
}

impl Message {
    /// The text of a `content` that is a string or a list of parts (its `text` parts joined).
    pub(super) fn text(&self) -> String {
        match &self.content {
            Value::String(s) => s.clone(),
            Value::Array(parts) => parts
                .iter()
                .filter(|p| p["type"] == "text")
                .filter_map(|p| p["text"].as_str())
                .collect::<Vec<_>>()
                .join("\n"),
            _ => String::new(),
        }
    }
}

/// A frontend tool: `{name, description, parameters?}`.
#[derive(Debug, Clone, Deserialize)]
pub(super) struct Tool {
    pub(super) name: String,
    #[serde(default)]
    pub(super) description: String,
    #[serde(default)]
    pub(super) parameters: Option<Value>,
}

/// `{interruptId, status: "resolved" | "cancelled", payload?}`.
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct ResumeEntry {
    pub(super) interrupt_id: String,
    pub(super) status: ResumeStatus,
    #[serde(default)]
    pub(super) payload: Value,
}

#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub(super) enum ResumeStatus {
    Resolved,
    Cancelled,
}

/// Most frontend tools one run may offer.
const MAX_TOOLS: usize = 64;

/// The input's frontend tools as the model is offered them; names as the model APIs accept them.
pub(super) fn client_tools(tools: &[Tool]) -> Result<Vec<crate::llm::ToolSpec>, String> {
    if tools.len() > MAX_TOOLS {
        return Err(format!("at most {MAX_TOOLS} tools"));
    }
    tools
        .iter()
        .map(|t| {
            let ok = !t.name.is_empty()
                && t.name.len() <= 64
                && t.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok {
                return Err(format!("tool name '{}' must be 1-64 of A-Z a-z 0-9 _ -", t.name));
            }
            let parameters = t.parameters.clone().filter(Value::is_object);
            Ok(crate::llm::ToolSpec {
                name: t.name.clone(),
                description: t.description.clone(),
                parameters: parameters.unwrap_or_else(|| json!({"type": "object", "properties": {}})),
            })
        })
        .collect()
}

/// A run after frontend tools ran: the last assistant message that called tools, then the `tool` messages
/// with their results (each must answer one of its calls).
pub(super) fn continuation(messages: &[Message]) -> Result<Vec<crate::llm::ChatMessage>, String> {
    let at = messages
        .iter()
        .rposition(|m| m.role == "assistant" && !m.tool_calls.is_empty())
        .ok_or("a tool result without the assistant message that called the tool")?;
    let call = &messages[at];
    let calls: Vec<crate::llm::ToolCall> = call
        .tool_calls
        .iter()
        .map(|c| crate::llm::ToolCall {
            id: c.id.clone(),
            kind: "function".into(),
            function: crate::llm::FunctionCall {
                name: c.function.name.clone(),
                arguments: c.function.arguments.clone(),
            },
        })
        .collect();
    let text = call.text();
    let mut out = vec![crate::llm::ChatMessage {
        role: "assistant".into(),
        content: (!text.is_empty()).then_some(Value::String(text)),
        tool_calls: Some(calls),
        tool_call_id: None,
    }];
    for m in &messages[at + 1..] {
        let id = m.tool_call_id.as_deref().filter(|id| call.tool_calls.iter().any(|c| c.id == *id));
        match (m.role.as_str(), id) {
            ("tool", Some(id)) => out.push(crate::llm::ChatMessage::tool_result(id, &m.text())),
            ("tool", None) => return Err(format!("tool message '{}' answers no call of the assistant's", m.id)),
            _ => {}
        }
    }
    Ok(out)
}

pub(super) fn run_started(thread_id: &str, run_id: &str) -> Value {
    json!({"type": "RUN_STARTED", "threadId": thread_id, "runId": run_id})
}

pub(super) fn run_finished(thread_id: &str, run_id: &str, outcome: Value) -> Value {
    json!({"type": "RUN_FINISHED", "threadId": thread_id, "runId": run_id, "outcome": outcome})
}

pub(super) fn run_error(message: &str, code: &str) -> Value {
    json!({"type": "RUN_ERROR", "message": message, "code": code})
}

pub(super) fn messages_snapshot(messages: Vec<Value>) -> Value {
    json!({"type": "MESSAGES_SNAPSHOT", "messages": messages})
}

pub(super) fn text_start(message_id: &str) -> Value {
    json!({"type": "TEXT_MESSAGE_START", "messageId": message_id, "role": "assistant"})
}

pub(super) fn text_content(message_id: &str, delta: &str) -> Value {
    json!({"type": "TEXT_MESSAGE_CONTENT", "messageId": message_id, "delta": delta})
}

pub(super) fn text_end(message_id: &str) -> Value {
    json!({"type": "TEXT_MESSAGE_END", "messageId": message_id})
}

/// `TOOL_CALL_START`, `TOOL_CALL_ARGS` (the whole arguments at once) and `TOOL_CALL_END` of one call.
pub(super) fn tool_call(id: &str, name: &str, arguments: &str, parent: Option<&str>) -> [Value; 3] {
    let mut start = json!({"type": "TOOL_CALL_START", "toolCallId": id, "toolCallName": name});
    if let Some(p) = parent {
        start["parentMessageId"] = json!(p);
    }
    [
        start,
        json!({"type": "TOOL_CALL_ARGS", "toolCallId": id, "delta": arguments}),
        json!({"type": "TOOL_CALL_END", "toolCallId": id}),
    ]
}

pub(super) fn tool_result(message_id: &str, tool_call_id: &str, content: &str) -> Value {
    json!({"type": "TOOL_CALL_RESULT", "messageId": message_id, "toolCallId": tool_call_id, "content": content,
           "role": "tool"})
}

/// A stored conversation message as an AG-UI `Message`.
pub(super) fn stored_message(m: &crate::backend::StoredMessage) -> Value {
    let role = if m.direction == crate::backend::Direction::Inbound { "user" } else { "assistant" };
    json!({"id": m.id, "role": role, "content": m.text})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_input_reads_as_the_client_sends_it() {
        let input: RunAgentInput = serde_json::from_value(json!({
            "threadId": "t", "runId": "r", "protocolVersion": "1.0", "state": {}, "context": [], "forwardedProps": {},
            "messages": [{"id": "u1", "role": "user", "content": [{"type": "text", "text": "hi"}, {"type": "image",
                          "source": {"type": "url", "value": "https://x"}}]},
                         {"id": "a1", "role": "assistant", "toolCalls": [{"id": "c1", "type": "function",
                          "function": {"name": "where", "arguments": "{}"}}]},
                         {"id": "t1", "role": "tool", "toolCallId": "c1", "content": "Paris"}],
            "tools": [{"name": "where", "description": "the user's city"}],
            "resume": [{"interruptId": "i1", "status": "resolved", "payload": {"approved": true}}]
        }))
        .expect("input");
        assert_eq!(input.messages[0].text(), "hi");
        assert_eq!(input.messages[1].tool_calls[0].function.name, "where");
        assert_eq!(input.messages[2].tool_call_id.as_deref(), Some("c1"));
        assert_eq!(input.resume[0].status, ResumeStatus::Resolved);
        assert!(serde_json::from_value::<RunAgentInput>(json!({"runId": "r", "messages": []})).is_err(), "threadId");
    }
}
