//! The agent turn engine. A turn is a loop of model calls and tool calls whose whole state
//! ([`TurnState`]) is serializable: when a gated tool needs a human, the state is stored as a parked turn
//! and the task ends; the decision, arriving at any pod, resumes it from the stored state.
//!
//! Every door reaches turns through one service, [`Turns`] (start, answer, cancel, status). Every event goes
//! through the session log, so it reaches every attached socket on every pod, in order. A turn ends with
//! exactly one terminal event: `eventual_response`, `cancelled` or `error`.

mod answer;
mod budget;
mod drive;
mod durable;
mod emitter;
mod gates;
mod history;
mod otp_gate;
mod park;
#[cfg(test)]
mod races;
mod spend;
mod start;
mod steps;
mod summary;
mod sweeper;
mod takeover;
mod task;
mod turns;

use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use self::answer::{Answer, Verdict};
use self::emitter::{Emitter, Halt};
use self::gates::stamp_identity;
use self::start::auto_context;
pub(crate) use self::start::{ClientSide, StartRequest, TurnInput};
pub(crate) use self::sweeper::sweep_loop;
pub(crate) use self::turns::{Parts, Turns};
use crate::backend::TurnInfo;
use crate::error::{ClientError, ErrorCode};
use crate::ids::{ConversationId, RequestId, SessionId, TurnId};
use crate::llm::{ChatMessage, ToolCall, Usage};
use crate::tools::ToolOutcome;

/// Everything a turn needs to continue, on any pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TurnState {
    pub turn_id: TurnId,
    pub request_id: RequestId,
    pub session_id: SessionId,
    pub conversation_id: ConversationId,
    pub agent_id: String,
    pub model: String,
    pub stream: bool,
    pub messages: Vec<ChatMessage>,
    pub iteration: u32,
    pub usage: Usage,
    /// Tool calls of the last model response not yet run, in order.
    pub pending: Vec<ToolCall>,
    pub files: Vec<Value>,
    /// Whose turn it is (given to tool webhooks). Default: empty, for a turn parked before this field existed.
    #[serde(default)]
    pub user_id: String,
    #[serde(default)]
    pub org_id: String,
    /// W3C traceparent of the turn's span, so a resumed turn on another pod joins the same trace.
    #[serde(default)]
    pub traceparent: Option<String>,
    /// The client's render capabilities: which interaction cards it can show.
    #[serde(default)]
    pub supports: Vec<String>,
    /// The user's message, until the turn's task has looked up its knowledge: set by `prepare`, taken
    /// before the first model call, so a retrieval (up to `knowledge.timeout_ms`) never delays the 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge_query: Option<String>,
    /// Knowledge given to the model before the turn, cited first.
    #[serde(default)]
    pub knowledge_auto: Vec<crate::knowledge::Hit>,
    /// Knowledge the model found with `knowledge_search`, cited after.
    #[serde(default)]
    pub knowledge_tool: Vec<crate::knowledge::Hit>,
    /// Tools the client runs itself (AG-UI frontend tools): offered to the model; a call to one ends the turn
    /// for the client to run it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub client_tools: Vec<crate::llm::ToolSpec>,
    /// A summary of the messages the history budget left out, to be made before the first model call
    /// (`turn.summarize`); taken by the turn's task.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub summary_job: Option<summary::SummaryJob>,
    /// What the client already has of a model reply cut by its pod's death: the next model call continues it.
    /// Set by a takeover, taken by that call.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub continue_from: Option<String>,
    /// The call that runs now, in a durable step written just before it runs (see `durable.rs`); none in the
    /// running state itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub running_call: Option<String>,
}

impl TurnState {
    /// The lease record of this turn, held by `pod_id` (empty while parked).
    pub(crate) fn lease_info(&self, pod_id: &str) -> TurnInfo {
        TurnInfo::new(&self.turn_id, &self.request_id, pod_id)
    }
}

/// A person's answer to the first pending call.
#[derive(Debug, Clone)]
pub(crate) struct Decision {
    pub tool_call_id: String,
    pub resolution: Resolution,
}

/// How a parked call was answered.
#[derive(Debug, Clone)]
pub(crate) enum Resolution {
    /// Approved: the tool runs.
    Approved,
    /// Denied (by the person, or by the timeout): the model gets the reason as an error result.
    Denied(String),
    /// The call's result was decided outside the tool: an interaction's answer, a refused OTP gate.
    Result(ToolOutcome),
    /// The session was verified (OTP): the call goes through its gates again, which it now passes.
    Verified,
}

/// How a turn segment ended.
enum Outcome {
    Completed {
        text: String,
        message_id: String,
    },
    Parked,
    Failed(ClientError),
    /// The lease is no longer this turn's (it stalled past `turn.lease_ms`): whoever took it over ends the
    /// turn; this task emits nothing more.
    LeaseLost,
    /// The pod drained past `drain.timeout_s`, or an append failed (the store is failing over): the turn's lease
    /// is made to lapse at once, and a sweeper takes the turn over from its last durable step.
    HandedOff,
}

impl From<Halt> for Outcome {
    fn from(h: Halt) -> Outcome {
        match h {
            Halt::LeaseLost => Outcome::LeaseLost,
            Halt::Failed(e) => Outcome::Failed(e),
        }
    }
}

impl From<Halt> for ClientError {
    fn from(h: Halt) -> ClientError {
        match h {
            Halt::LeaseLost => ClientError::new(ErrorCode::TurnInterrupted, "the turn lost its lease"),
            Halt::Failed(e) => e,
        }
    }
}

/// The key of a user's running turns (`limits.turns_per_user`), counted across pods.
pub(crate) fn hold_key(org_id: &str, user_id: &str) -> String {
    format!("turns:{}", crate::backend::user_key(org_id, user_id))
}

/// `stream_*` events are skipped for `stream: false`.
fn emit_stream(em: &Emitter, state: &TurnState, event: &Value) {
    if state.stream {
        em.send(event);
    }
}
