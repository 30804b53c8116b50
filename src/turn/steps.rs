//! How a tool step is shown to a visitor: the words beside the tool's name on its `stream_chunk`s. Every place
//! that announces or ends a step (gates, parks, the OTP gate, the drive loop) asks here, and nothing here asks
//! them back.

use super::{TurnState, Turns};
use crate::config::Visibility;
use crate::interactions::{self, Kind};

/// The built-in tool that searches the agent's knowledge.
pub(crate) const KNOWLEDGE_TOOL: &str = "knowledge_search";

/// What a visitor reads for tool `name`: its `tools[].title`, the built-in tools' own words, or on a public
/// agent a generic step (an internal name is never shown there). `None` on an internal agent: the name is fine.
pub(super) fn title(turns: &Turns, state: &TurnState, name: &str) -> Option<String> {
    let agent = turns.agents.get(&state.agent_id)?;
    if let Some(t) = agent.tools.iter().find(|t| t.name == name).and_then(|t| t.title.clone()) {
        return Some(t);
    }
    let builtin = match name {
        KNOWLEDGE_TOOL => Some("Searching the help centre"),
        interactions::FALLBACK_TOOL => Some("Noting your answer"),
        _ if Kind::from_raise_tool(name).is_some() => Some("Asking you a question"),
        _ => None,
    };
    match (builtin, agent.visibility) {
        (Some(words), _) => Some(words.to_string()),
        (None, Visibility::Public) => Some(GENERIC_STEP.to_string()),
        (None, Visibility::Internal) => None,
    }
}

/// A public agent's step without a title of its own.
const GENERIC_STEP: &str = "Working on your request";

/// The approval card's question for tool `name`, in the visitor's words on a public agent.
pub(super) fn approval_question(turns: &Turns, state: &TurnState, name: &str) -> String {
    match title(turns, state, name) {
        None => format!("Tool '{name}' requires confirmation. Allow?"),
        Some(t) if t == GENERIC_STEP => "The next step needs your approval. Allow?".to_string(),
        Some(t) => format!("{t} needs your approval. Allow?"),
    }
}

/// The OTP card's request for tool `name`, in the visitor's words on a public agent.
pub(super) fn verification_request(turns: &Turns, state: &TurnState, name: &str) -> String {
    match title(turns, state, name) {
        None => format!("Verify your identity to continue using '{name}'."),
        Some(t) if t == GENERIC_STEP => "Verify your identity to continue.".to_string(),
        Some(t) => format!("Verify your identity to continue ({t})."),
    }
}
