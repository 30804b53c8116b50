//! The offline demo model: no network, clearly labelled, streams a reply word by word and can exercise the
//! approval flow (ask it to "delete record 7"), so `switchboard serve` alone is a working demo.

use std::time::Duration;

use async_trait::async_trait;
use futures_util::StreamExt;

use super::*;

/// The tool the demo agent offers; executed in-process (see `tools::DEMO_TOOL`).
pub(crate) const DEMO_TOOL_NAME: &str = "delete_record";
/// The demo agent's OTP-gated tool (`auth_level = "end_user"`), also in-process.
pub(crate) const DEMO_GATED_TOOL_NAME: &str = "get_account_balance";

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
        return Ok(format!("[demo model] {} Anything else?", in_words(&m.text_content())));
    }
    let user =
        request.messages.iter().rev().find(|m| m.role == "user").map(ChatMessage::text_content).unwrap_or_default();
    let offers = |name: &str| request.tools.iter().any(|t| t.name == name);
    let asked = user.to_lowercase();
    let call = |name: &str, arguments: serde_json::Value| ToolCall {
        id: format!("call_{}", uuid::Uuid::new_v4().simple()),
        kind: "function".into(),
        function: FunctionCall { name: name.into(), arguments: arguments.to_string() },
    };
    if offers("request_identity_intake") && asked.contains("quote") {
        let fields = serde_json::json!({"fields": ["email", {"key": "name"}], "reason": "to send you the quote"});
        return Err(call("request_identity_intake", fields));
    }
    if offers(DEMO_GATED_TOOL_NAME) && asked.contains("balance") {
        return Err(call(DEMO_GATED_TOOL_NAME, serde_json::json!({})));
    }
    if offers(DEMO_TOOL_NAME) && asked.contains("delete") {
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
    if let Some(passage) = knowledge_passage(request) {
        return Ok(format!("[demo model] From the help centre: {passage}"));
    }
    let shown: String = user.chars().take(200).collect();
    Ok(format!(
        "[demo model] Hello! I am Switchboard's offline demo model. You said: \"{shown}\". \
         Set llm.base_url to talk to a real model, or try: \"delete record 7\" (approval), \"what is your return \
         policy\" (citations), \"I'd like a quote\" (an identity card), \"what is my balance\" (the OTP gate)."
    ))
}

/// A tool's result as a person would say it: the demo never shows a visitor raw JSON.
fn in_words(result: &str) -> String {
    let result = result.trim();
    if result.starts_with("User denied") {
        return "Understood: I did not do it.".into();
    }
    if let Some(why) = result.strip_prefix("tool '").and_then(|r| r.split_once("' was not run: ")).map(|(_, why)| why) {
        return format!("I could not do that: {why}.");
    }
    let Ok(value) = serde_json::from_str::<serde_json::Value>(result) else {
        return format!("Done: {result}.");
    };
    match value.get("status").and_then(serde_json::Value::as_str) {
        Some("submitted") => {
            let mut said = Vec::new();
            if let Some(fields) = value["values"].as_object() {
                for (k, v) in fields {
                    match v {
                        serde_json::Value::String(text) => said.push(format!("{k} {text}")),
                        serde_json::Value::Array(answers) => {
                            for a in answers {
                                let options: Vec<&str> = a["options"]
                                    .as_array()
                                    .map(|o| o.iter().filter_map(serde_json::Value::as_str).collect())
                                    .unwrap_or_default();
                                let header = a["header"].as_str().unwrap_or("your choice");
                                said.push(format!("{header}: {}", options.join(", ")));
                            }
                        }
                        _ => {}
                    }
                }
            }
            if said.is_empty() {
                "Thanks, I have your answer.".into()
            } else {
                format!("Thanks, I have {}.", said.join("; "))
            }
        }
        Some("declined") => "No problem, we can go on without that.".into(),
        Some(other) => format!("That ended without an answer ({}).", other.replace('_', " ")),
        None => "Done.".into(),
    }
}

/// The first passage of the knowledge given to the model before the turn, if any.
fn knowledge_passage(request: &ChatRequest) -> Option<String> {
    let context = request.messages.iter().rev().take(2).find_map(|m| {
        let text = m.text_content();
        (m.role == "system" && text.starts_with("[Relevant knowledge]")).then_some(text)
    })?;
    // "[Relevant knowledge]\n[1] <title>\n<passage lines>\n[2] …": the first passage, without headings.
    let passage: Vec<&str> = context
        .lines()
        .skip(2)
        .take_while(|l| !l.starts_with("[2] "))
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .collect();
    (!passage.is_empty()).then(|| passage.join(" "))
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
                    Ok(ModelEvent::Usage(crate::llm::Usage {
                        prompt_tokens,
                        completion_tokens: 8,
                        cost_micro_usd: None,
                    })),
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
                    Ok(ModelEvent::Usage(crate::llm::Usage { prompt_tokens, completion_tokens, cost_micro_usd: None }))
                });
                Ok(Box::pin(tokens.chain(usage)))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::in_words;

    #[test]
    fn tool_results_are_said_in_words_never_as_json() {
        assert_eq!(in_words("record 7 deleted"), "Done: record 7 deleted.");
        assert_eq!(in_words("User denied: user rejected the action"), "Understood: I did not do it.");
        assert_eq!(
            in_words("tool 'pay' was not run: the identity was not verified in time"),
            "I could not do that: the identity was not verified in time."
        );
        let submitted = r#"{"status":"submitted","values":{"email":"ada@example.org","name":"Ada"}}"#;
        assert_eq!(in_words(submitted), "Thanks, I have email ada@example.org; name Ada.");
        let chips = r#"{"status":"submitted","values":{"answers":[{"header":"Plan","options":["Pro"]}]}}"#;
        assert_eq!(in_words(chips), "Thanks, I have Plan: Pro.");
        assert_eq!(in_words(r#"{"status":"declined","kind":"choices"}"#), "No problem, we can go on without that.");
        assert_eq!(in_words(r#"{"status":"no_response"}"#), "That ended without an answer (no response).");
        for r in [submitted, chips] {
            assert!(!in_words(r).contains('{'), "no JSON for a visitor");
        }
    }
}
