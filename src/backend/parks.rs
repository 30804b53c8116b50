//! Parked turns: a turn waiting for a person (an approval, an interaction card, a one-time code) is a durable
//! record any pod can take up, so the answer may arrive anywhere and the pod that parked may be gone.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BResult;

/// A gated tool call waiting for a human.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PendingCall {
    pub tool_call_id: String,
    pub tool_name: String,
    pub arguments: String,
}

/// What a parked turn waits for. Only a `Confirm` park can be decided by `confirm_tool_action`; every kind
/// is taken once (answer, cancel, timeout) with [`ConfirmStore::take`].
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Gate {
    /// A gated tool waiting for approve / deny.
    #[default]
    Confirm,
    /// A raise tool waiting for the person's card.
    Interaction {
        interaction_id: String,
        /// `identity_intake` or `choices`.
        interaction_kind: String,
        /// The canonical spec the answer is validated against.
        spec: serde_json::Value,
        reason: String,
    },
    /// A tool waiting for the session's OTP verification.
    Otp { auth_level: String },
}

impl Gate {
    /// The stored spelling (the Redis record keeps it beside the JSON so scripts can check it).
    pub fn name(&self) -> &'static str {
        match self {
            Gate::Confirm => "confirm",
            Gate::Interaction { .. } => "interaction",
            Gate::Otp { .. } => "otp",
        }
    }
}

/// A parked turn: everything needed to resume it on any pod.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ParkedTurn {
    pub session_id: String,
    pub turn_id: String,
    pub request_id: String,
    /// The call being asked about now (the oldest undecided gated call).
    pub call: PendingCall,
    /// What the turn waits for (records parked before gates existed are confirmations).
    #[serde(default)]
    pub gate: Gate,
    /// Unix ms after which the call is denied.
    pub expires_at_ms: i64,
    /// The turn engine's serialized state (opaque to the store).
    pub state: serde_json::Value,
}

/// The outcome of a decision.
#[derive(Debug, Clone, PartialEq)]
pub enum Decided {
    /// This caller won: it must resume the turn with the decision.
    Claimed(Box<ParkedTurn>),
    /// The call was decided before; the first decision stands.
    AlreadyDecided {
        tool_call_id: String,
        approved: bool,
        request_id: String,
    },
    NoPending,
}

/// Pending human-in-the-loop confirmations (one parked call per session at a time).
#[async_trait]
pub trait ConfirmStore: Send + Sync {
    /// Stores the parked turn (replacing any previous one of the session).
    async fn park(&self, parked: &ParkedTurn) -> BResult<()>;
    async fn get(&self, session_id: &str) -> BResult<Option<ParkedTurn>>;
    /// Atomically decides the pending call of a [`Gate::Confirm`] park (any other park: `NoPending`). `tool_call_id = None` answers the pending call; a call id that was
    /// already decided returns the first decision; `approved` is recorded for repeats.
    async fn decide(&self, session_id: &str, tool_call_id: Option<&str>, approved: bool) -> BResult<Decided>;
    /// The session's most recent decision `(tool_call_id, approved, request_id)`, for repeated v1 confirms.
    async fn last_decision(&self, session_id: &str) -> BResult<Option<(String, bool, String)>>;
    /// Atomically removes the parked turn (cancel, an answer, a timeout). Exactly one caller gets `Some`. With
    /// `call`, only the park of that call is taken (an answer for one park never takes a newer one that replaced
    /// it); `None` takes whatever is parked.
    async fn take(&self, session_id: &str, call: Option<&str>) -> BResult<Option<ParkedTurn>>;
    /// Sessions whose pending call expired at `now_ms`, at most `max`.
    async fn expired(&self, now_ms: i64, max: usize) -> BResult<Vec<String>>;
    /// Parked turns waiting for a decision, across all pods. Read from the deadline index: a record that
    /// vanished without the index noticing (its session expired) counts until its deadline passes.
    async fn pending_count(&self) -> BResult<u64>;
}
