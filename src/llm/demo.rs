//! The offline demo model: no network, clearly labelled, streams a reply word by word and can exercise the
//! approval flow (ask it to "delete record 7"), so `switchboard serve` alone is a working demo.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::*;

/// The tool the demo agent offers; executed in-process (see `tools::DEMO_TOOL`).
pub(crate) const DEMO_TOOL_NAME: &str = "delete_record";

pub(crate) struct DemoModel {
    /// Delay between streamed words (small, so the demo looks like streaming).
    pub word_delay: Duration,
}

impl Default for DemoModel {
    fn default() -> Self {
        Self { word_delay: Duration::from_millis(25) }
    }
}

fn reply_for(request: &ChatRequest) -> Result<String, ToolCall> {
    let last = request.messages.last();
    if let Some(m) = last.filter(|m| m.role == "tool") {
        return Ok(format!("[demo model] The tool answered: {}. Anything else?", m.text_content()));
    }
    let user =
        request.messages.iter().rev().find(|m| m.role == "user").map(ChatMessage::text_content).unwrap_or_default();
    let offers_tool = request.tools.iter().any(|t| t.name == DEMO_TOOL_NAME);
    if offers_tool && user.to_lowercase().contains("delete") {
        let id: String = user.chars().filter(|c| c.is_ascii_digit()).collect();
        let id = if id.is_empty() { "42".to_string() } else { id };
        return Err(ToolCall {
            id: format!("call_{}", uuid::Uuid::new_v4().simple()),
            kind: "function".into(),
            function: FunctionCall {
                name: DEMO_TOOL_NAME.into(),
                arguments: serde_json::json!({"id": id}).to_string(),
            },
        });
    }
    let shown: String = user.chars().take(200).collect();
    Ok(format!(
        "[demo model] Hello! I am Switchboard's offline demo model. You said: \"{shown}\". \
         Set llm.base_url to talk to a real model, or ask me to \"delete record 7\" to try the approval flow."
    ))
}

#[async_trait]
impl ChatModel for DemoModel {
    async fn stream(&self, request: ChatRequest) -> Result<ModelStream, LlmError> {
        let prompt_tokens: u64 =
            request.messages.iter().map(|m| m.text_content().split_whitespace().count() as u64).sum();
        let delay = self.word_delay;
        match reply_for(&request) {
            Err(call) => {
                let events = vec![
                    Ok(ModelEvent::ToolCalls(vec![call])),
                    Ok(ModelEvent::Usage(crate::llm::Usage { prompt_tokens, completion_tokens: 8 })),
                ];
                Ok(Box::pin(futures_util::stream::iter(events)))
            }
            Ok(text) => {
                let words: Vec<String> = text.split_inclusive(' ').map(str::to_string).collect();
                let completion_tokens = words.len() as u64;
                let tokens = futures_util::stream::iter(words).then(move |w| async move {
                    tokio::time::sleep(delay).await;
                    Ok(ModelEvent::Token(w))
                });
                let usage = futures_util::stream::once(async move {
                    Ok(ModelEvent::Usage(crate::llm::Usage { prompt_tokens, completion_tokens }))
                });
                Ok(Box::pin(tokens.chain(usage)))
            }
        }
    }
}
