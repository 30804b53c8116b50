//! The takeover of a turn whose pod stopped renewing its lease (docs/architecture.md, "A turn survives its
//! pod"). The sweeper that claims a lapsed running turn takes it over here under a new turn id (the lease
//! generation that fences the dead pod out) and runs it on from its last durable step (`durable.rs`): a stored
//! result is never run again, a call cut mid-run runs again only for an idempotent tool, and a model reply cut
//! mid-stream is continued after the tokens already sent.

use std::sync::Arc;

use serde_json::Value;

use super::durable::INTERRUPTED_CALL;
use super::{Decision, Resolution, TurnState, Turns};
use crate::backend::{BackendError, TakeOver, TurnInfo};
use crate::error::{ClientError, ErrorCode};
use crate::protocol::outbound as out;
use crate::tools::ToolOutcome;
use crate::util::new_id;

/// Takes the lapsed running turn `lapsed` over on this pod and runs it on. False when it is not to be taken
/// over (off, a parked turn, no step, too many takeovers, this pod is draining or full, a corrupt record): the
/// caller ends it. True when it runs here now, is no longer the lapsed turn, or is left to be claimed again
/// (the store failed).
pub(super) async fn take_over(turns: &Arc<Turns>, sid: &str, lapsed: &TurnInfo) -> bool {
    let cfg = &turns.config.turn;
    let full = turns.local_count() >= cfg.max_per_pod;
    if !cfg.takeover || lapsed.pod_id.is_empty() || turns.lifecycle.is_draining() || full {
        return false;
    }
    // A turn that died parking (its park stored, the lease not yet handed to it) is ended as before: its park
    // could otherwise be answered on one pod while the turn runs on another.
    match turns.backends.confirms.get(sid).await {
        Ok(Some(p)) if p.turn_id == lapsed.turn_id => return false,
        // The store is failing: claimed again shortly.
        Err(_) => return true,
        _ => {}
    }
    let info = TurnInfo::new(&new_id(), &lapsed.request_id, &turns.pod_id);
    let leases = &turns.backends.leases;
    let (checkpoint, from_seq, sent) =
        match leases.take_over(sid, &lapsed.turn_id, &info, cfg.lease_ms, cfg.max_takeovers).await {
            Ok(TakeOver::Taken { checkpoint, from_seq, sent }) => (checkpoint, from_seq, sent),
            Ok(TakeOver::Gone) => return true,
            Ok(TakeOver::Unsaved | TakeOver::Exhausted) => return false,
            Err(e @ (BackendError::Redis(_) | BackendError::Unconfirmed(_))) => {
                // The store is failing (a failover, a restart): ending the turn now would likely fail too, or end a
                // turn that can go on. Or replicas did not confirm the takeover (made on a master being replaced, or
                // one with no replica yet): running it could run the turn beside another pod's takeover or ending.
                // The claim comes due again in `LAPSED_RETRY_MS` (and if the takeover did happen, its lease lapses
                // unrun and the turn is claimed again under its new id).
                tracing::warn!(error = %e, session_id = %sid, "a takeover failed: the turn is claimed again shortly");
                return true;
            }
            Err(e) => {
                tracing::warn!(error = %e, session_id = %sid, "a takeover failed: ending the turn");
                return false;
            }
        };
    let mut state: TurnState = match serde_json::from_str(&checkpoint.state) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, session_id = %sid, "a turn's step is unreadable: ending it");
            let err = pod_stopped();
            turns.fail(sid, crate::backend::Guard::Release(&info.turn_id), &lapsed.request_id, &err).await;
            return true;
        }
    };
    tracing::warn!(session_id = %sid, from = %lapsed.pod_id, takeovers = checkpoint.takeovers,
        "a turn's pod stopped: taking the turn over");
    turns.metrics.turn_taken_over();
    let old_turn = std::mem::replace(&mut state.turn_id, info.turn_id.as_str().into());
    super::task::drop_hold(turns, &state.org_id, &state.user_id, &old_turn).await;
    let decision = match state.running_call.take() {
        Some(call) => cut_call(turns, &state, &call),
        None => {
            if state.pending.is_empty() {
                let whole = state.continue_from.take().unwrap_or_default() + &sent_text(&sent, &state.request_id);
                state.continue_from = (!whole.is_empty()).then_some(whole);
            }
            None
        }
    };
    let opening = out::turn_resumed(&state.request_id, from_seq);
    super::task::spawn_taken_over(turns.clone(), state, decision, opening).await;
    true
}

/// The ending of a turn whose pod stopped and that no other pod goes on with (the sweeper's, and a takeover's
/// that cannot read the step).
pub(super) fn pod_stopped() -> ClientError {
    ClientError::new(ErrorCode::TurnInterrupted, "the turn was interrupted: the server running it stopped")
}

/// The answer to a call that was running when its pod died: run it again (an idempotent tool), or tell the
/// model it may have run.
fn cut_call(turns: &Turns, state: &TurnState, call: &str) -> Option<Decision> {
    let first = state.pending.first().filter(|c| c.id == call)?;
    let idempotent = match first.function.name.as_str() {
        super::steps::KNOWLEDGE_TOOL => true,
        name => turns
            .agents
            .get(&state.agent_id)
            .and_then(|a| a.tools.iter().find(|t| t.name == name).map(|t| t.idempotent))
            .unwrap_or(false),
    };
    let resolution = if idempotent {
        Resolution::Approved
    } else {
        Resolution::Result(ToolOutcome { is_error: true, result: INTERRUPTED_CALL.into() })
    };
    Some(Decision { tool_call_id: call.to_string(), resolution })
}

/// The text of the request's `stream_token`s among `sent` (the events logged after the step): what the client
/// already has of a model reply that was cut.
fn sent_text(sent: &[String], request_id: &str) -> String {
    let mut text = String::new();
    for event in sent {
        let Ok(v) = serde_json::from_str::<Value>(event) else { continue };
        if v["type"] == "stream_token" && v["requestId"] == request_id {
            text.push_str(v["token"].as_str().unwrap_or_default());
        }
    }
    text
}
