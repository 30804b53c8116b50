//! `turn.summarize`: the messages the history budget leaves out are summarised by the model instead of being
//! dropped silently. The summary is stored in the conversation with the index it covers up to, reused by every
//! later turn while it still covers what is left out, and extended (the previous summary plus the messages left
//! out since) when more is. The model call runs in the turn's task, before its first answer call, so the
//! client's 202 never waits for it; it is priced and counted like any call. A failed summary is logged and the
//! turn goes on without it.

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};

use super::{TurnState, Turns};
use crate::backend::{Direction, StoredMessage, Summary};
use crate::llm::{ChatMessage, ChatRequest, ModelEvent};

/// What the summarising call is told.
const INSTRUCTION: &str = "Summarise the earlier part of this conversation between a user and an assistant in a \
    few sentences, keeping names, numbers, decisions and open questions. Reply with the summary only.";

/// Work for the turn's task: a summary of everything before message `upto`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SummaryJob {
    pub upto: u64,
    /// The summary so far (of the messages before the ones below).
    pub previous: Option<String>,
    /// `(role, text)` of the messages left out since `previous`, oldest first.
    pub messages: Vec<(String, String)>,
}

/// What the model is told of the messages before the replayed history.
#[derive(Debug, PartialEq)]
pub(super) enum Earlier {
    /// Nothing is left out.
    Nothing,
    /// The stored summary covers what is left out.
    Summary(String),
    /// A summary must be made (or extended) first.
    Job(SummaryJob),
}

fn role(m: &StoredMessage) -> &'static str {
    if m.direction == Direction::Inbound {
        "user"
    } else {
        "assistant"
    }
}

/// Decides from the stored summary, the messages of the history window the budget `dropped` (oldest first)
/// and the absolute index of the first message replayed.
pub(super) fn plan(stored: Option<Summary>, dropped: &[StoredMessage], first_kept: u64) -> Earlier {
    if first_kept == 0 {
        return Earlier::Nothing;
    }
    let window_start = first_kept.saturating_sub(dropped.len() as u64);
    let (previous, since) = match stored {
        Some(s) if s.upto == first_kept => return Earlier::Summary(s.text),
        // Covers part of what is left out: extended with the rest.
        Some(s) if s.upto < first_kept => (Some(s.text), s.upto),
        // None yet, or one that covers more than is left out now (a larger budget): made again.
        _ => (None, 0),
    };
    let messages = dropped
        .iter()
        .enumerate()
        .filter(|(i, _)| window_start + *i as u64 >= since)
        .map(|(_, m)| (role(m).to_string(), m.text.clone()))
        .collect();
    Earlier::Job(SummaryJob { upto: first_kept, previous, messages })
}

/// The system message that tells the model what came before the replayed history.
pub(super) fn message(text: &str) -> ChatMessage {
    ChatMessage::text("system", &format!("Summary of the earlier conversation: {text}"))
}

/// Where the summary goes: after the agent's system prompt, before the history.
fn insert_at(state: &TurnState) -> usize {
    usize::from(state.messages.first().is_some_and(|m| m.role == "system"))
}

impl Turns {
    /// Makes the summary the turn was planned with (if any), stores it and puts it before the history.
    pub(super) async fn summarise(&self, state: &mut TurnState) {
        let Some(job) = state.summary_job.take() else { return };
        let mut transcript = String::new();
        if let Some(p) = &job.previous {
            transcript.push_str(&format!("(Summary so far: {p})\n"));
        }
        for (role, text) in &job.messages {
            transcript.push_str(&format!("{role}: {text}\n"));
        }
        let request = ChatRequest {
            model: state.model.clone(),
            messages: vec![ChatMessage::text("system", INSTRUCTION), ChatMessage::text("user", &transcript)],
            tools: Vec::new(),
            api_key: self.config.llm.org_key(&state.org_id).map(str::to_string),
            continue_final: false,
        };
        let mut text = String::new();
        let (mut input, mut output) = (0, 0);
        let made = async {
            let mut stream = self.model.stream(request).await.map_err(|e| e.to_string())?;
            while let Some(ev) = stream.next().await {
                match ev.map_err(|e| e.to_string())? {
                    ModelEvent::Token(t) => text.push_str(&t),
                    ModelEvent::Usage(u) => (input, output) = (input + u.prompt_tokens, output + u.completion_tokens),
                    _ => {}
                }
            }
            Ok::<_, String>(())
        }
        .await;
        self.count_call(state, input, output).await;
        if let Err(e) = made.and_then(|()| if text.trim().is_empty() { Err("empty summary".into()) } else { Ok(()) }) {
            tracing::warn!(error = %e, session_id = %state.session_id, "no summary of the earlier conversation");
            return;
        }
        let summary = Summary { upto: job.upto, text: text.trim().to_string() };
        if let Err(e) = self.backends.sessions.set_summary(&state.conversation_id, &summary).await {
            tracing::warn!(error = %e, session_id = %state.session_id, "could not store the conversation's summary");
        }
        let at = insert_at(state);
        state.messages.insert(at, message(&summary.text));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(dir: Direction, text: &str) -> StoredMessage {
        StoredMessage { id: text.into(), direction: dir, text: text.into(), created_at: String::new() }
    }

    #[test]
    fn a_summary_is_made_once_reused_and_extended() {
        let dropped = [msg(Direction::Inbound, "a"), msg(Direction::Outbound, "b")];
        assert_eq!(plan(None, &[], 0), Earlier::Nothing);
        let made = plan(None, &dropped, 2);
        assert_eq!(
            made,
            Earlier::Job(SummaryJob {
                upto: 2,
                previous: None,
                messages: vec![("user".into(), "a".into()), ("assistant".into(), "b".into())]
            })
        );
        let stored = Summary { upto: 2, text: "S".into() };
        assert_eq!(plan(Some(stored.clone()), &dropped, 2), Earlier::Summary("S".into()), "reused");
        // Two more messages left out: window [2, 4) dropped, the summary covers up to 2.
        let more = [msg(Direction::Inbound, "c"), msg(Direction::Outbound, "d")];
        let Earlier::Job(job) = plan(Some(stored), &more, 4) else { panic!("extended") };
        assert_eq!((job.previous.as_deref(), job.messages.len(), job.upto), (Some("S"), 2, 4));
        // The window reaches back before the summary's end: only what it does not cover is sent.
        let wide = [msg(Direction::Inbound, "b"), msg(Direction::Inbound, "c")];
        let Earlier::Job(job) = plan(Some(Summary { upto: 3, text: "T".into() }), &wide, 4) else { panic!() };
        assert_eq!(job.messages, vec![("user".to_string(), "c".to_string())]);
    }
}
