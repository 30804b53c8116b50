//! The sweeper: every pod, every 500 ms, ends what no pod will end otherwise: expired confirmations (denied,
//! and the turn resumed here) and turns whose pod died (their lease lapsed: `TURN_INTERRUPTED`). Which pod
//! handles an entry is decided in the backend (first decision wins; one claim per lapsed lease).

use std::sync::Arc;
use std::time::Duration;

use futures_util::StreamExt;

use super::Resolution;
use super::Turns;
use crate::backend::{Decided, Gate, Guard, TurnInfo};
use crate::tools::ToolOutcome;
use crate::util::now_ms;

/// Runs until the pod stops; idle while it drains (another pod sweeps).
pub(crate) async fn sweep_loop(turns: Arc<Turns>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = turns.lifecycle.stopped() => return,
            _ = tick.tick() => {}
        }
        if turns.lifecycle.is_draining() {
            continue;
        }
        match turns.backends.confirms.expired(now_ms(), 50).await {
            Ok(sids) => {
                for sid in sids {
                    if let Err(e) = time_out(&turns, &sid).await {
                        tracing::warn!(error = %e, session_id = %sid, "park timeout sweep failed");
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "confirmation sweep failed"),
        }
        match turns.backends.leases.claim_lapsed(now_ms(), 500).await {
            Ok(lapsed) => {
                // Each ending is its own session's: a batch of them goes out together.
                let endings: Vec<_> =
                    lapsed.into_iter().map(|(sid, info)| end_lapsed(turns.clone(), sid, info)).collect();
                futures_util::stream::iter(endings).buffer_unordered(32).collect::<Vec<()>>().await;
            }
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}

/// Answers an expired park the way its gate times out: a confirmation is denied, an interaction card gets "no
/// response", an OTP wait refuses the tool; the turn goes on here.
pub(super) async fn time_out(turns: &Arc<Turns>, sid: &str) -> Result<(), crate::backend::BackendError> {
    let Some(parked) = turns.backends.confirms.get(sid).await? else { return Ok(()) };
    // The index said the session had a park due; the park there now may be a newer one (the due call was
    // answered and the turn parked its next): only a due park is timed out, and only that call (a park that
    // changes between this read and the decision is not touched).
    if parked.expires_at_ms > now_ms() {
        return Ok(());
    }
    let call = parked.call.tool_call_id.as_str();
    if parked.gate == Gate::Confirm {
        if let Decided::Claimed(parked) = turns.backends.confirms.decide(sid, Some(call), false).await? {
            tracing::info!(session_id = %sid, tool = %parked.call.tool_name, "confirmation timed out: denied");
            super::task::resume_parked(turns.clone(), *parked, false, "the confirmation timed out").await;
        }
        return Ok(());
    }
    // Taken once, and only this call's park (a newer one that replaced it is not due): a late answer on another
    // pod finds nothing pending.
    let Some(parked) = turns.backends.confirms.take(sid, Some(call)).await? else { return Ok(()) };
    let outcome = match &parked.gate {
        Gate::Interaction { .. } => ToolOutcome { is_error: false, result: crate::interactions::NO_RESPONSE.into() },
        _ => {
            // The code stays until it lapses, so a late `verify_otp` is told EXPIRED, not NOT_FOUND.
            let result = format!("tool '{}' was not run: the identity was not verified in time", parked.call.tool_name);
            ToolOutcome { is_error: true, result }
        }
    };
    tracing::info!(session_id = %sid, gate = parked.gate.name(), "a parked turn timed out");
    super::task::resume_with(turns.clone(), parked, Resolution::Result(outcome)).await;
    Ok(())
}

/// A turn whose lease lapsed: taken over here from its last durable step (`takeover.rs`), or, when it cannot
/// be, ended with `TURN_INTERRUPTED`, appended only if the turn is still the lapsed one ([`Guard::Lapsed`],
/// which also forgets it in the same step). A failed append leaves the turn to be claimed again (by any pod)
/// after `LAPSED_RETRY_MS`, so the client always gets its ending.
pub(super) async fn end_lapsed(turns: Arc<Turns>, sid: String, info: TurnInfo) {
    let sid = sid.as_str();
    if super::takeover::take_over(&turns, sid, &info).await {
        return;
    }
    tracing::warn!(session_id = %sid, pod = %info.pod_id, "turn lease lapsed: ending the turn");
    turns.take_own_park(sid, &info.turn_id).await;
    turns.fail(sid, Guard::Lapsed(&info.turn_id), &info.request_id, &super::takeover::pod_stopped()).await;
}
