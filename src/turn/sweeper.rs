//! The sweeper: every pod, every 500 ms, ends what no pod will end otherwise: expired confirmations (denied,
//! and the turn resumed here) and turns whose pod died (their lease lapsed: `TURN_INTERRUPTED`). Which pod
//! handles an entry is decided in the backend (first decision wins; one claim per lapsed lease).

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::backend::{Decided, Guard, TurnInfo};
use crate::error::{ClientError, ErrorCode};
use crate::util::now_ms;

/// Runs until the pod stops; idle while it drains (another pod sweeps).
pub(crate) async fn sweep_loop(app: Arc<App>) {
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = app.lifecycle.stopped() => return,
            _ = tick.tick() => {}
        }
        if app.lifecycle.is_draining() {
            continue;
        }
        match app.backends.confirms.expired(now_ms(), 50).await {
            Ok(sids) => {
                for sid in sids {
                    match app.backends.confirms.decide(&sid, None, false).await {
                        Ok(Decided::Claimed(parked)) => {
                            tracing::info!(session_id = %sid, tool = %parked.call.tool_name, "confirmation timed out: denied");
                            super::resume_parked(app.clone(), parked, false, "the confirmation timed out").await;
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "confirmation sweep failed"),
                    }
                }
            }
            Err(e) => tracing::warn!(error = %e, "confirmation sweep failed"),
        }
        match app.backends.leases.claim_lapsed(now_ms(), 50).await {
            Ok(lapsed) => {
                for (sid, info) in lapsed {
                    end_lapsed(&app, &sid, &info).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}

/// Ends a turn whose lease lapsed with `TURN_INTERRUPTED`, appended only if the turn is still the lapsed one
/// ([`Guard::Lapsed`], which also forgets it in the same step). A failed append leaves the turn to be claimed
/// again (by any pod) after `LAPSED_RETRY_MS`, so the client always gets its ending.
async fn end_lapsed(app: &App, sid: &str, info: &TurnInfo) {
    tracing::warn!(session_id = %sid, pod = %info.pod_id, "turn lease lapsed: ending the turn");
    super::take_own_park(app, sid, &info.turn_id).await;
    let e = ClientError::new(ErrorCode::TurnInterrupted, "the turn was interrupted: the server running it stopped");
    app.fail_turn(sid, Guard::Lapsed(&info.turn_id), &info.request_id, &e).await;
}
