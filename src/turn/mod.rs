//! The agent turn engine. A turn is a loop of model calls and tool calls whose whole state
//! ([`TurnState`]) is serializable: when a gated tool needs a human, the state is stored as a parked turn
//! and the task ends; the decision, arriving at any pod, resumes it from the stored state.
//!
//! Every event goes through the session log (`App::emit`), so it reaches every attached socket on every pod,
//! in order. A turn ends with exactly one terminal event: `eventual_response`, `cancelled` or `error`.

mod drive;
mod emitter;
mod gates;
mod otp_gate;
mod park;
mod start;
mod sweeper;

use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use self::drive::drive;
use self::emitter::{Emitter, Halt};
pub(crate) use self::gates::stamp_identity;
pub(crate) use self::start::{acquire, auto_context, give_back, plan, prepare, Plan, TurnInput};
pub(crate) use self::sweeper::sweep_loop;
use crate::app::App;
use crate::backend::{Guard, ParkedTurn, TurnInfo};
use crate::error::{ClientError, ErrorCode};
use crate::llm::{ChatMessage, ToolCall, Usage};
use crate::metrics::TurnOutcome;
use crate::protocol::outbound as out;
use crate::tools::ToolOutcome;

/// Everything a turn needs to continue, on any pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct TurnState {
    pub turn_id: String,
    pub request_id: String,
    pub session_id: String,
    pub conversation_id: String,
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
    /// The client's render capabilities (§9): which interaction cards it can show.
    #[serde(default)]
    pub supports: Vec<String>,
    /// The user's message, until the turn's task has looked up its knowledge (§11): set by `prepare`, taken
    /// before the first model call, so a retrieval (up to `knowledge.timeout_ms`) never delays the 202.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge_query: Option<String>,
    /// Knowledge given to the model before the turn (§11), cited first.
    #[serde(default)]
    pub knowledge_auto: Vec<crate::knowledge::Hit>,
    /// Knowledge the model found with `knowledge_search`, cited after.
    #[serde(default)]
    pub knowledge_tool: Vec<crate::knowledge::Hit>,
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

/// Counts (or renews) this turn among its user's running turns, beyond the limit: a resumed turn was admitted
/// when it started, and a renewal must never fail for the limit.
async fn keep_hold(app: &App, state_user: (&str, &str), turn_id: &str) {
    let key = hold_key(state_user.0, state_user.1);
    if let Err(e) =
        app.backends.quotas.hold(&key, turn_id, u64::MAX, app.config.turn.lease_ms, crate::util::now_ms()).await
    {
        tracing::warn!(error = %e, "could not renew the turn's place among the user's turns");
    }
}

/// The turn no longer runs (ended, parked, stopped): its place among the user's running turns goes.
async fn drop_hold(app: &App, org_id: &str, user_id: &str, turn_id: &str) {
    if let Err(e) = app.backends.quotas.release_hold(&hold_key(org_id, user_id), turn_id).await {
        tracing::warn!(error = %e, "could not free the turn's place among the user's turns (it lapses with the lease)");
    }
}

/// `stream_*` events are skipped for `stream: false`.
fn emit_stream(em: &Emitter, state: &TurnState, event: &Value) {
    if state.stream {
        em.send(event);
    }
}

/// Builds the model context for a new turn and runs it in the background.
pub(crate) fn spawn_new(app: Arc<App>, state: TurnState) {
    let tasks = app.tasks.clone();
    tasks.spawn(run(app, state, None));
}

/// Resumes a parked confirmation on this pod with a decision (approve, deny, or timeout-deny).
pub(crate) async fn resume_parked(app: Arc<App>, parked: ParkedTurn, approved: bool, reason: &str) {
    let resolution = if approved { Resolution::Approved } else { Resolution::Denied(reason.to_string()) };
    resume_with(app, parked, resolution).await
}

/// Resumes a parked turn (of any gate) on this pod with its answer.
pub(crate) async fn resume_with(app: Arc<App>, parked: ParkedTurn, resolution: Resolution) {
    let state: TurnState = match serde_json::from_value(parked.state.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, session_id = %parked.session_id, "parked turn state unreadable");
            let err = ClientError::new(ErrorCode::AgentError, "the parked turn could not be resumed");
            app.fail_turn(&parked.session_id, Guard::Release(&parked.turn_id), &parked.request_id, &err).await;
            return;
        }
    };
    let info = state.lease_info(&app.pod_id);
    let lease_ms = app.config.turn.lease_ms;
    let leases = &app.backends.leases;
    let held = match leases.renew(&state.session_id, &info, lease_ms).await {
        Ok(true) => true,
        _ => leases.acquire(&state.session_id, &info, lease_ms).await.unwrap_or(false),
    };
    if !held {
        // Another turn holds the slot (this one's hold ran out): running it would put two turns in the session.
        tracing::warn!(session_id = %state.session_id, "a parked turn's lease is gone: ending it instead of resuming");
        let err = ClientError::new(ErrorCode::TurnInterrupted, "the turn was interrupted while waiting for a decision");
        app.fail_turn(&state.session_id, Guard::None, &state.request_id, &err).await;
        return;
    }
    keep_hold(&app, (&state.org_id, &state.user_id), &state.turn_id).await;
    let decision = Decision { tool_call_id: parked.call.tool_call_id.clone(), resolution };
    let tasks = app.tasks.clone();
    tasks.spawn(run(app, state, Some(decision)));
}

async fn run(app: Arc<App>, state: TurnState, decision: Option<Decision>) {
    let span = tracing::info_span!(
        "turn",
        otel.name = "agent.turn",
        session_id = %state.session_id,
        request_id = %state.request_id,
        turn_id = %state.turn_id,
        pod = %app.pod_id,
        resumed = decision.is_some(),
    );
    if let Some(tp) = &state.traceparent {
        crate::telemetry::set_parent(&span, tp);
    }
    run_in_span(app, state, decision).instrument(span).await
}

async fn run_in_span(app: Arc<App>, mut state: TurnState, decision: Option<Decision>) {
    let sid = state.session_id.clone();
    let started = Instant::now();
    app.metrics.turn_started();
    let cancel = app.register_turn(&sid, &state.turn_id);
    let info = state.lease_info(&app.pod_id);
    let lease_lost = CancellationToken::new();
    let who = (state.org_id.clone(), state.user_id.clone());
    let renewer = tokio::spawn(renew_loop(app.clone(), sid.clone(), info, who, lease_lost.clone()));

    let em = Emitter::start(app.clone(), sid.clone(), state.turn_id.clone());
    let outcome = tokio::select! {
        o = drive(&app, &em, &mut state, decision) => Some(o),
        h = em.halted() => Some(h.into()),
        _ = lease_lost.cancelled() => Some(Outcome::LeaseLost),
        _ = tokio::time::sleep(Duration::from_secs(app.config.turn.deadline_s)) => Some(Outcome::Failed(ClientError::new(
            ErrorCode::AgentError,
            format!("the turn did not finish within {} s (turn.deadline_s)", app.config.turn.deadline_s),
        ))),
        _ = cancel.cancelled() => None,
        _ = app.lifecycle.turns_interrupted() => Some(Outcome::Failed(ClientError::new(
            ErrorCode::TurnInterrupted, "the turn was interrupted: the server is shutting down"))),
        _ = app.lifecycle.stopped() => {
            // The pod is gone (killed): nothing is released or emitted; the lease lapses and another pod's
            // sweeper ends the turn.
            renewer.abort();
            app.metrics.turn_ended(TurnOutcome::Abandoned, started.elapsed());
            return;
        }
    };
    renewer.abort();
    // Everything the turn queued is logged before its terminal event (and before the lease is released). A
    // turn that could not log all of it does not end as if it had (a park among them would be unseen).
    let outcome = match (em.flush().await, outcome) {
        (Err(Halt::LeaseLost), _) | (_, Some(Outcome::LeaseLost)) => Some(Outcome::LeaseLost),
        (Err(Halt::Failed(e)), Some(_)) => Some(Outcome::Failed(e)),
        (_, o) => o,
    };
    app.unregister_turn(&sid, &state.turn_id);
    drop_hold(&app, &state.org_id, &state.user_id, &state.turn_id).await;
    let ended = match &outcome {
        Some(Outcome::Parked) => TurnOutcome::Parked,
        Some(Outcome::Completed { .. }) => TurnOutcome::Completed,
        Some(Outcome::Failed(_)) => TurnOutcome::Failed,
        Some(Outcome::LeaseLost) => TurnOutcome::Abandoned,
        None => TurnOutcome::Cancelled,
    };
    app.metrics.turn_ended(ended, started.elapsed());
    let (rid, tid) = (state.request_id.clone(), state.turn_id.clone());
    match outcome {
        Some(Outcome::Parked) => {
            // Hand the slot over to the parked state only now that the renewer is stopped, so it cannot put
            // this pod back as the holder of a turn no pod runs.
            if let Err(e) = hand_over_parked(&app, &state).await {
                tracing::warn!(error = %e, session_id = %sid, "could not hand the parked turn's lease over");
            }
        }
        Some(Outcome::Completed { text, message_id }) => {
            let cited = crate::knowledge::citations::citations(&state.knowledge_auto, &state.knowledge_tool);
            let done = out::eventual_response(&rid, &message_id, &text, state.usage, cited);
            app.end_turn(&sid, Guard::Release(&tid), &done).await;
        }
        Some(Outcome::Failed(err)) => {
            // A park written before the failure must not be resumed later by the timeout sweeper.
            take_own_park(&app, &sid, &tid).await;
            app.fail_turn(&sid, Guard::Release(&tid), &rid, &err).await;
        }
        Some(Outcome::LeaseLost) => {
            tracing::warn!(session_id = %sid, turn_id = %tid, "the turn lost its lease and stopped without an ending");
        }
        None => {
            // A park that raced the cancel must not be resumable.
            take_own_park(&app, &sid, &tid).await;
            app.end_turn(&sid, Guard::Release(&tid), &out::cancelled(&rid)).await;
        }
    }
}

/// Takes the session's parked record if it is this turn's (an ended turn's park must not be resumed later).
pub(crate) async fn take_own_park(app: &App, session_id: &str, turn_id: &str) {
    match app.backends.confirms.get(session_id).await {
        Ok(Some(p)) if p.turn_id == turn_id => {
            if let Err(e) = app.take_park_to_end(session_id, Some(&p.call.tool_call_id)).await {
                tracing::warn!(error = %e, %session_id, "could not take the ended turn's park");
            }
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, %session_id, "could not read the ended turn's park"),
    }
}

/// Renews the lease every third of `turn.lease_ms`. The lease is lost when a renewal finds another holder (or
/// none), or when no renewal succeeded for a whole lease (Redis unreachable: a sweeper may have ended the turn
/// meanwhile); then `lost` is cancelled and the turn stops. It never takes the lease back.
async fn renew_loop(app: Arc<App>, sid: String, info: TurnInfo, who: (String, String), lost: CancellationToken) {
    let lease = Duration::from_millis(app.config.turn.lease_ms);
    let every = (lease / 3).max(Duration::from_millis(100));
    let mut last_ok = Instant::now();
    loop {
        tokio::time::sleep(every).await;
        match app.backends.leases.renew(&sid, &info, app.config.turn.lease_ms).await {
            Ok(true) => {
                last_ok = Instant::now();
                keep_hold(&app, (&who.0, &who.1), &info.turn_id).await;
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
async fn hand_over_parked(app: &App, state: &TurnState) -> Result<(), ClientError> {
    let parked_info = state.lease_info("");
    if let Some(p) = app.backends.confirms.get(&state.session_id).await?.filter(|p| p.turn_id == state.turn_id) {
        let left_ms = u64::try_from(p.expires_at_ms - crate::util::now_ms()).unwrap_or(0);
        let hold_ms = left_ms + app.config.turn.lease_ms + 5_000;
        app.backends.leases.renew(&state.session_id, &parked_info, hold_ms).await?;
    }
    Ok(())
}
