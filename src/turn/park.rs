//! Parking a turn: the durable record first, then the events that ask the person, so a pod dying right after
//! a client saw the question cannot lose it. Until the lease is handed over (when the task ends) the turn still
//! counts as running on this pod, so a cancel in between goes through this task and `cancelled` stays the last
//! event.

use std::sync::Arc;

use super::emitter::Emitter;
use super::Turns;
use super::{emit_stream, TurnState};
use crate::backend::{Gate, ParkedTurn, PendingCall};
use crate::error::{ClientError, ErrorCode};
use crate::llm::ToolCall;
use crate::protocol::outbound as out;
use crate::util::now_ms;

/// How a call's gates ended: with its result, or the turn parked on it.
pub(super) enum Step {
    Done(crate::tools::ToolOutcome),
    Parked,
    /// A client tool: the turn ends here and the client runs it.
    Handoff,
}

/// Stores the parked turn: `call` waits for `gate` until `expires_at_ms`.
pub(super) async fn store(
    turns: &Turns,
    state: &TurnState,
    call: &ToolCall,
    gate: Gate,
    expires_at_ms: i64,
) -> Result<(), ClientError> {
    let parked = ParkedTurn {
        session_id: state.session_id.to_string(),
        turn_id: state.turn_id.to_string(),
        request_id: state.request_id.to_string(),
        call: PendingCall {
            tool_call_id: call.id.clone(),
            tool_name: call.function.name.clone(),
            arguments: call.function.arguments.clone(),
        },
        gate,
        expires_at_ms,
        state: {
            let mut stored = state.clone();
            stored.traceparent = crate::telemetry::current_traceparent().or_else(|| state.traceparent.clone());
            serde_json::to_value(&stored).map_err(|e| ClientError::new(ErrorCode::Internal, e.to_string()))?
        },
    };
    turns.backends.confirms.park(&parked).await?;
    Ok(())
}

/// Parks a gated call for approval: the record, `write_confirmation_required`, then the call's chunk.
pub(super) async fn for_confirmation(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &TurnState,
    call: &ToolCall,
) -> Result<(), ClientError> {
    let name = &call.function.name;
    let expires_at_ms = now_ms() + (turns.config.confirm.timeout_s as i64) * 1000;
    store(turns, state, call, Gate::Confirm, expires_at_ms).await?;
    em.send(&out::write_confirmation_required(
        &state.request_id,
        name,
        &super::steps::approval_question(turns, state, name),
    ));
    let title = super::steps::title(turns, state, name);
    emit_stream(
        em,
        state,
        &out::tool_call_chunk(&state.request_id, &call.id, name, &call.function.arguments, title.as_deref()),
    );
    em.flush().await?;
    Ok(())
}
