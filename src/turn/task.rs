//! A turn's task on this pod: run a segment (new, or resumed from a park) under the session's lease, renew the
//! lease and the user's running-turn place while it runs, and end it with exactly one terminal event (or hand
//! a parked turn's lease over, or stop silently when the lease is lost).

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::drive::drive;
use super::emitter::{Emitter, Halt};
use super::{hold_key, Decision, Outcome, Resolution, TurnState, Turns};
use crate::backend::{Guard, ParkedTurn, Resumed, TurnInfo};
use crate::error::{ClientError, ErrorCode};
use crate::ids::SessionId;
use crate::metrics::TurnOutcome;
use crate::protocol::outbound as out;

/// Counts (or renews) this turn among its user's running turns, beyond the limit: a resumed turn was admitted
/// when it started, and a renewal must never fail for the limit.
async fn keep_hold(turns: &Turns, state_user: (&str, &str), turn_id: &str) {
    let key = hold_key(state_user.0, state_user.1);
    if let Err(e) =
        turns.backends.quotas.hold(&key, turn_id, u64::MAX, turns.config.turn.lease_ms, crate::util::now_ms()).await
    {
        tracing::warn!(error = %e, "could not renew the turn's place among the user's turns");
    }
}

/// The turn no longer runs (ended, parked, stopped): its place among the user's running turns goes.
pub(super) async fn drop_hold(turns: &Turns, org_id: &str, user_id: &str, turn_id: &str) {
    if let Err(e) = turns.backends.quotas.release_hold(&hold_key(org_id, user_id), turn_id).await {
        tracing::warn!(error = %e, "could not free the turn's place among the user's turns (it lapses with the lease)");
    }
}

/// Builds the model context for a new turn and runs it in the background.
pub(super) fn spawn_new(turns: Arc<Turns>, state: TurnState) {
    let tasks = turns.tasks.clone();
    tasks.spawn(run(turns, state, None, None));
}

/// Runs a turn taken over from a dead pod (its lease already this pod's, under its new turn id) from its last
/// durable step, `opening` (`turn_resumed`) first.
pub(super) async fn spawn_taken_over(turns: Arc<Turns>, state: TurnState, decision: Option<Decision>, opening: String) {
    keep_hold(&turns, (&state.org_id, &state.user_id), &state.turn_id).await;
    let tasks = turns.tasks.clone();
    tasks.spawn(run(turns, state, decision, Some(opening)));
}

/// Resumes a parked confirmation on this pod with a decision (approve, deny, or timeout-deny).
pub(super) async fn resume_parked(turns: Arc<Turns>, parked: ParkedTurn, approved: bool, reason: &str) {
    let resolution = if approved { Resolution::Approved } else { Resolution::Denied(reason.to_string()) };
    resume_with(turns, parked, resolution).await
}

/// Resumes a parked turn (of any gate) on this pod with its answer.
pub(super) async fn resume_with(turns: Arc<Turns>, parked: ParkedTurn, resolution: Resolution) {
    let state: TurnState = match serde_json::from_value(parked.state.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, session_id = %parked.session_id, "parked turn state unreadable");
            let err = ClientError::new(ErrorCode::AgentError, "the parked turn could not be resumed");
            turns.fail(&parked.session_id, Guard::Release(&parked.turn_id), &parked.request_id, &err).await;
            return;
        }
    };
    let info = state.lease_info(&turns.pod_id);
    // The lease comes back only while the turn record is still this turn's, checked in the same step: a sweeper
    // that ended the lapsed turn meanwhile forgot the record with its ending, and the turn must not run after it.
    match turns.backends.leases.resume(&state.session_id, &info, turns.config.turn.lease_ms).await {
        Ok(Resumed::Held) => {}
        Ok(Resumed::Ended) => {
            tracing::info!(session_id = %state.session_id, "the parked turn was ended meanwhile: not resumed");
            return;
        }
        other => {
            // Another turn holds the slot (this one's hold ran out), or the store failed: running it could put
            // two turns in the session, and this one never got an ending.
            tracing::warn!(session_id = %state.session_id, result = ?other, "a parked turn's lease is gone: ending it instead of resuming");
            let err =
                ClientError::new(ErrorCode::TurnInterrupted, "the turn was interrupted while waiting for a decision");
            turns.fail(&state.session_id, Guard::None, &state.request_id, &err).await;
            return;
        }
    }
    keep_hold(&turns, (&state.org_id, &state.user_id), &state.turn_id).await;
    let decision = Decision { tool_call_id: parked.call.tool_call_id.clone(), resolution };
    let tasks = turns.tasks.clone();
    tasks.spawn(run(turns, state, Some(decision), None));
}

/// `opening`: an event sent before anything else (a taken-over turn's `turn_resumed`).
async fn run(turns: Arc<Turns>, state: TurnState, decision: Option<Decision>, opening: Option<String>) {
    let span = tracing::info_span!(
        "turn",
        otel.name = "agent.turn",
        session_id = %state.session_id,
        request_id = %state.request_id,
        turn_id = %state.turn_id,
        pod = %turns.pod_id,
        resumed = decision.is_some(),
    );
    if let Some(tp) = &state.traceparent {
        crate::telemetry::set_parent(&span, tp);
    }
    run_in_span(turns, state, decision, opening).instrument(span).await
}

async fn run_in_span(turns: Arc<Turns>, mut state: TurnState, decision: Option<Decision>, opening: Option<String>) {
    let sid = state.session_id.clone();
    let started = Instant::now();
    turns.metrics.turn_started();
    let cancel = turns.register(&sid, &state.turn_id);
    let info = state.lease_info(&turns.pod_id);
    let lease_lost = CancellationToken::new();
    let who = (state.org_id.clone(), state.user_id.clone());
    // Aborted however this task ends (returned, or dropped: a panic, the runtime going away), so a turn that no
    // longer runs never keeps renewing its lease and holding the session.
    let renewer =
        crate::util::AbortOnDrop::spawn(renew_loop(turns.clone(), sid.clone(), info, who, lease_lost.clone()));

    let em = Emitter::start(turns.clone(), sid.clone(), state.turn_id.clone());
    if let Some(event) = opening {
        em.send_text(event);
    }
    let outcome = tokio::select! {
        o = drive(&turns, &em, &mut state, decision) => Some(o),
        h = em.halted() => Some(after_halt(&turns, h)),
        _ = lease_lost.cancelled() => Some(Outcome::LeaseLost),
        _ = tokio::time::sleep(Duration::from_secs(turns.config.turn.deadline_s)) => Some(Outcome::Failed(ClientError::new(
            ErrorCode::AgentError,
            format!("the turn did not finish within {} s (turn.deadline_s)", turns.config.turn.deadline_s),
        ))),
        _ = cancel.cancelled() => None,
        _ = turns.lifecycle.turns_interrupted() => Some(if hands_over(&turns) {
            Outcome::HandedOff
        } else {
            Outcome::Failed(ClientError::new(ErrorCode::TurnInterrupted, "the turn was interrupted: the server is shutting down"))
        }),
        _ = turns.lifecycle.stopped() => {
            // The pod is gone (killed): nothing is released or emitted; the lease lapses and another pod's
            // sweeper ends the turn.
            renewer.abort();
            turns.metrics.turn_ended(TurnOutcome::Abandoned, started.elapsed());
            return;
        }
    };
    renewer.abort();
    // The place among the user's running turns goes before the ending is visible: a client that answers the
    // ending at once must find it free.
    drop_hold(&turns, &state.org_id, &state.user_id, &state.turn_id).await;
    let (rid, tid) = (state.request_id.clone(), state.turn_id.clone());
    // Everything the turn queued is logged before its terminal event (and before the lease is released). A
    // turn that could not log all of it does not end as if it had (a park among them would be unseen). A
    // completed turn's ending goes in the same final batch, which frees the lease.
    let closed = match &outcome {
        Some(Outcome::Completed { text, message_id }) => {
            let cited = crate::knowledge::citations::citations(&state.knowledge_auto, &state.knowledge_tool);
            em.finish(&out::eventual_response(&rid, message_id, text, state.usage, cited)).await
        }
        _ => em.flush().await,
    };
    let outcome = match (closed, outcome) {
        (Err(Halt::LeaseLost), _) | (_, Some(Outcome::LeaseLost)) => Some(Outcome::LeaseLost),
        (Err(h @ Halt::Failed(_)), Some(_)) => Some(after_halt(&turns, h)),
        (_, o) => o,
    };
    turns.unregister(&sid, &state.turn_id);
    // A cancel that came while the turn was parking (the prompt going out) wins over the park: the turn would
    // otherwise wait for an answer its person has already called off. Looked at only once the turn is no longer
    // registered, so no cancel can reach the token after the look (a later one finds the park instead).
    let outcome = match outcome {
        Some(Outcome::Parked) if cancel.is_cancelled() => None,
        o => o,
    };
    let ended = match &outcome {
        Some(Outcome::Parked) => TurnOutcome::Parked,
        Some(Outcome::Completed { .. }) => TurnOutcome::Completed,
        Some(Outcome::Failed(_)) => TurnOutcome::Failed,
        Some(Outcome::LeaseLost | Outcome::HandedOff) => TurnOutcome::Abandoned,
        None => TurnOutcome::Cancelled,
    };
    turns.metrics.turn_ended(ended, started.elapsed());
    match outcome {
        Some(Outcome::Parked) => {
            // Hand the slot over to the parked state only now that the renewer is stopped, so it cannot put
            // this pod back as the holder of a turn no pod runs.
            if let Err(e) = hand_over_parked(&turns, &state).await {
                tracing::warn!(error = %e, session_id = %sid, "could not hand the parked turn's lease over");
            }
        }
        // Its ending went out with the final batch (`Emitter::finish`).
        Some(Outcome::Completed { .. }) => {}
        Some(Outcome::Failed(err)) => {
            // A park written before the failure must not be resumed later by the timeout sweeper.
            turns.take_own_park(&sid, &tid).await;
            turns.fail(&sid, Guard::Release(&tid), &rid, &err).await;
        }
        Some(Outcome::LeaseLost) => {
            tracing::warn!(session_id = %sid, turn_id = %tid, "the turn lost its lease and stopped without an ending");
            after_lost_lease(&turns, &sid, &rid).await;
        }
        Some(Outcome::HandedOff) => {
            // Lapsing now rather than in `turn.lease_ms`: a sweeper on a pod that is not draining takes the turn
            // over within about half a second. Should this fail, the lease lapses on its own.
            tracing::info!(session_id = %sid, turn_id = %tid, "handing the running turn over (a drain, or a failed append)");
            match turns.backends.leases.renew(&sid, &state.lease_info(&turns.pod_id), 1).await {
                Ok(true) => {}
                // The lease was not this turn's any more (taken over, ended, or taken back by a failover).
                Ok(false) => after_lost_lease(&turns, &sid, &rid).await,
                Err(e) => {
                    tracing::warn!(error = %e, session_id = %sid, "could not hand the turn over at once (its lease lapses)")
                }
            }
        }
        None => {
            // A park that raced the cancel must not be resumable.
            turns.take_own_park(&sid, &tid).await;
            turns.end(&sid, Guard::Release(&tid), &out::cancelled(&rid)).await;
        }
    }
}

/// How a turn goes on after its emitter halted. An append that failed (the store unreachable, failing over)
/// leaves the log in a state only the store knows: with takeover on and a shared store, the turn is handed
/// over (its lease made to lapse) and a sweeper goes on from its last durable step once the store answers,
/// reading what the log really holds; otherwise it ends with the error.
fn after_halt(turns: &Turns, halt: Halt) -> Outcome {
    match halt {
        Halt::Failed(_) if hands_over(turns) => Outcome::HandedOff,
        h => h.into(),
    }
}

/// Whether a turn that must stop here is handed over to another pod rather than ended: takeover is on and the
/// store is shared (in memory no other pod could take it).
fn hands_over(turns: &Turns) -> bool {
    turns.config.turn.takeover && !turns.config.redis_url.is_empty()
}

/// Renews the lease every third of `turn.lease_ms`. The lease is lost when a renewal finds another holder (or
/// none), or when no renewal succeeded for a whole lease (Redis unreachable: a sweeper may have ended the turn
/// meanwhile); then `lost` is cancelled and the turn stops. It never takes the lease back.
async fn renew_loop(turns: Arc<Turns>, sid: SessionId, info: TurnInfo, who: (String, String), lost: CancellationToken) {
    let lease = Duration::from_millis(turns.config.turn.lease_ms);
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match turns.backends.leases.renew(&sid, &info, turns.config.turn.lease_ms).await {
            Ok(true) => {
                last_ok = Instant::now();
                keep_hold(&turns, (&who.0, &who.1), &info.turn_id).await;
            }
            Ok(false) => {
                tracing::warn!(session_id = %sid, "turn lease lost: the turn stops");
                lost.cancel();
                return;
            }
            Err(e) if last_ok.elapsed() >= lease => {
                tracing::warn!(session_id = %sid, error = %e, "no lease renewal for a whole lease: the turn stops");
                lost.cancel();
                return;
            }
            Err(e) => tracing::warn!(session_id = %sid, error = %e, "turn lease renewal failed"),
        }
    }
}

/// The slot stays taken while parked, held by no pod, a little past the park's deadline so the timeout
/// sweeper (not the dead-pod sweeper) ends it. A decision that already resumed the turn elsewhere keeps it.
async fn hand_over_parked(turns: &Turns, state: &TurnState) -> Result<(), ClientError> {
    let parked_info = state.lease_info("");
    if let Some(p) = turns.backends.confirms.get(&state.session_id).await?.filter(|p| state.turn_id == p.turn_id) {
        let left_ms = u64::try_from(p.expires_at_ms - crate::util::now_ms()).unwrap_or(0);
        let hold_ms = left_ms + turns.config.turn.lease_ms + 5_000;
        // Only while that call is still parked, in the same step: an answer that resumed the turn on another
        // pod since the read above keeps its lease (a renewal would hand it to the park for minutes).
        let call = &p.call.tool_call_id;
        turns.backends.leases.hand_over(&state.session_id, &parked_info, call, hold_ms).await?;
    }
    Ok(())
}

/// After a turn stopped because its lease was gone. Usually another pod has the turn (a takeover) or ended it
/// (a sweeper), and this one adds nothing. But a Redis failover can take back the writes that say so (the old
/// master had them, the replica it was replaced by did not): with no lease, no turn record and no mark of an
/// ending, no sweeper can ever find the turn, so it ends here, once ([`Guard::Orphan`]); with a record and no
/// lease, the turn is put back where sweepers look ([`crate::backend::TurnLease::rewatch`]).
async fn after_lost_lease(turns: &Turns, sid: &str, request_id: &str) {
    let err = crate::error::ClientError::new(
        crate::error::ErrorCode::TurnInterrupted,
        "the turn was interrupted: the server running it lost its state",
    );
    let ending = crate::protocol::outbound::error(Some(request_id), &err);
    if turns.end(sid, Guard::Orphan(request_id), &ending).await {
        turns.metrics.error(err.code);
        tracing::warn!(session_id = %sid, "a turn's lease and record were gone with no ending (taken back by a failover): ended it");
        return;
    }
    match turns.backends.leases.rewatch(sid).await {
        Ok(true) => tracing::info!(session_id = %sid, "a lapsed turn is watched again for a sweeper"),
        Ok(false) => {}
        Err(e) => tracing::warn!(error = %e, session_id = %sid, "could not look at a turn that lost its lease"),
    }
}
