//! A turn survives its pod (docs/architecture.md): its durable steps. A step (the whole [`TurnState`] and the
//! log's seq) is written before each model call, after a model response with tool calls, before each tool runs
//! and after each result, fenced by the lease; `takeover.rs` resumes a dead pod's turn from the last one.

use super::emitter::{Emitter, Halt};
use super::{TurnState, Turns};
use crate::llm::ChatMessage;

/// What the model is told of a call that was running when its pod died and may not run again.
pub(crate) const INTERRUPTED_CALL: &str = r#"{"error":"interrupted: the call may have run"}"#;

/// The instruction that follows a cut reply when the endpoint cannot continue a final assistant message.
const CONTINUE: &str = "Your previous reply was cut off after the text above. Continue it exactly from where it \
                        stopped, without repeating any of it.";

/// Writes the turn's step (after logging everything it queued, so the step's seq covers it). A lost lease halts
/// the turn; a store that fails leaves the turn running without this step (a takeover resumes an earlier one),
/// except before a call (see [`before_call`]).
pub(super) async fn step(turns: &Turns, em: &Emitter, state: &TurnState) -> Result<(), Halt> {
    write(turns, em, state, state, false).await
}

/// The step before `call` runs: a pod that takes the turn over knows the call may have run. The state is
/// written with `running_call` set (it is unset in the running state), without copying it.
pub(super) async fn before_call(turns: &Turns, em: &Emitter, state: &TurnState, call: &str) -> Result<(), Halt> {
    #[derive(serde::Serialize)]
    struct Running<'a> {
        #[serde(flatten)]
        state: &'a TurnState,
        running_call: &'a str,
    }
    write(turns, em, state, &Running { state, running_call: call }, true).await
}

/// Writes `step` (the serialized form of `state`) as the turn's durable step. `before_call`: a step that must be
/// stored before the call runs, or a takeover (going on from the step before) could run the call again.
async fn write(
    turns: &Turns,
    em: &Emitter,
    state: &TurnState,
    step: &impl serde::Serialize,
    before_call: bool,
) -> Result<(), Halt> {
    if !turns.config.turn.takeover {
        return Ok(());
    }
    em.flush().await?;
    let json = match serde_json::to_string(step) {
        Ok(j) => j,
        Err(e) => {
            tracing::warn!(error = %e, "a turn's step could not be serialized");
            return Ok(());
        }
    };
    match turns.backends.leases.checkpoint(&state.session_id, &state.turn_id, &json).await {
        Ok(true) => Ok(()),
        Ok(false) => {
            tracing::warn!(session_id = %state.session_id, "the turn's lease is gone: it stops, emitting nothing more");
            em.lease_lost();
            Err(Halt::LeaseLost)
        }
        Err(e) if before_call => {
            // The turn is handed over rather than run the call: its takeover goes on from the step it can read.
            tracing::warn!(error = %e, session_id = %state.session_id, "the step before a call was not stored: the turn stops");
            let e: crate::error::ClientError = e.into();
            em.failed(e.clone());
            Err(Halt::Failed(e))
        }
        Err(e) => {
            tracing::warn!(error = %e, session_id = %state.session_id, "a turn's step was not stored");
            Ok(())
        }
    }
}

/// The messages of a model call that continues the cut reply `partial`, and whether the endpoint is asked to
/// continue the final message itself (`llm.continue_final_message`).
pub(super) fn continuing(turns: &Turns, messages: &mut Vec<ChatMessage>, partial: &str) -> bool {
    messages.push(ChatMessage::text("assistant", partial));
    if turns.config.llm.continue_final_message {
        return true;
    }
    messages.push(ChatMessage::text("system", CONTINUE));
    false
}
