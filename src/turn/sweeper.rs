//! The sweeper: every pod, every 500 ms, ends what no pod will end otherwise: expired confirmations (denied,
//! and the turn resumed here) and turns whose pod died (their lease lapsed: `TURN_INTERRUPTED`). Which pod
//! handles an entry is decided in the backend (first decision wins; one claim per lapsed lease).

use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::backend::Decided;
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
                    tracing::warn!(session_id = %sid, pod = %info.pod_id, "turn lease lapsed: ending the turn");
                    let _ = app.backends.confirms.take(&sid).await;
                    let e = ClientError::new(
                        ErrorCode::TurnInterrupted,
                        "the turn was interrupted: the server running it stopped",
                    );
                    app.emit_turn_error(&sid, &info.request_id, &e).await;
                }
            }
            Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
        }
    }
}
