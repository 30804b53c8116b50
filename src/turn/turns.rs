//! [`Turns`], the turn's front door: every door (the smooth-operator socket, the orra socket, REST/SSE, the
//! sweeper) starts, answers, cancels and inspects a turn only through it, so admission, budgets, leases, parks
//! and endings hold the same way for every dialect. It owns what a turn needs (config, stores, model, tools,
//! knowledge, OTP, agents, metrics) and the turns running on this pod. `docs/architecture.md` ("The turn's front
//! door") has the API and who may touch which store.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Agents;
use crate::backend::{BackendError, Backends, Channel, Gate, Guard, ParkedTurn, SessionRecord, TurnInfo};
use crate::config::Config;
use crate::error::ClientError;
use crate::lifecycle::Lifecycle;
use crate::llm::ChatModel;
use crate::metrics::Metrics;
use crate::pod::PodMessage;
use crate::protocol::outbound as out;
use crate::tools::ToolRunner;
use crate::util::Backoff;

/// A turn running on this pod.
struct LocalTurn {
    turn_id: String,
    /// Cancelled by [`Turns::cancel`] (or a peer's cancel message); the turn task owns the reaction (it emits
    /// `cancelled`).
    cancel: CancellationToken,
}

/// What is known of a session's turn now: its lease holder (running, or parked with no pod) and its park.
#[derive(Debug, Default)]
pub(crate) struct Status {
    pub(crate) lease: Option<TurnInfo>,
    pub(crate) parked: Option<ParkedTurn>,
}

/// The turn service of one pod. Its stores are its own: outside `src/turn/` nothing touches parks, leases or
/// quotas (a check in `.ci/run` holds that).
pub(crate) struct Turns {
    pub(super) config: Arc<Config>,
    pub(super) pod_id: String,
    pub(super) backends: Backends,
    pub(super) agents: Arc<Agents>,
    pub(super) model: Arc<dyn ChatModel>,
    pub(super) tools: ToolRunner,
    /// The MCP servers' tools (a client per server, shared by every turn of the pod).
    pub(super) mcp: crate::mcp::McpTools,
    /// The agents' knowledge; `None` when none is configured.
    pub(super) knowledge: Option<Arc<dyn crate::knowledge::Retriever>>,
    /// Issues and delivers the OTP gate's codes.
    pub(super) otp: crate::otp::OtpService,
    pub(super) metrics: Arc<Metrics>,
    /// The pod's shutdown phases (owned by the server's drain sequence; turns wait on them).
    pub(super) lifecycle: Arc<Lifecycle>,
    /// Tracks turn tasks so shutdown can wait for them (shared with the pod's socket tasks).
    pub(super) tasks: TaskTracker,
    /// Turns running on this pod, by session. Written by turn tasks, read by cancels.
    local: Mutex<HashMap<String, LocalTurn>>,
}

/// What a turn service is built from.
pub(crate) struct Parts {
    pub(crate) config: Arc<Config>,
    pub(crate) pod_id: String,
    pub(crate) backends: Backends,
    pub(crate) agents: Arc<Agents>,
    pub(crate) model: Arc<dyn ChatModel>,
    pub(crate) knowledge: Option<Arc<dyn crate::knowledge::Retriever>>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) lifecycle: Arc<Lifecycle>,
    pub(crate) tasks: TaskTracker,
}

impl Turns {
    pub(crate) fn new(p: Parts) -> Arc<Turns> {
        Arc::new(Turns {
            tools: ToolRunner::new(&p.config.tools),
            otp: crate::otp::OtpService::new(&p.config),
            mcp: crate::mcp::McpTools::start(&p.config.mcp, p.metrics.clone()),
            config: p.config,
            pod_id: p.pod_id,
            backends: p.backends,
            agents: p.agents,
            model: p.model,
            knowledge: p.knowledge,
            metrics: p.metrics,
            lifecycle: p.lifecycle,
            tasks: p.tasks,
            local: Mutex::new(HashMap::new()),
        })
    }

    /// The session's turn now: lease holder and park, read together.
    pub(crate) async fn status(&self, session_id: &str) -> Result<Status, ClientError> {
        let (lease, parked) =
            tokio::join!(self.backends.leases.current(session_id), self.backends.confirms.get(session_id));
        Ok(Status { lease: lease?, parked: parked? })
    }

    /// Who holds the session's turn slot (a running turn, or a parked one with no pod), if anyone.
    pub(crate) async fn holder(&self, session_id: &str) -> Result<Option<TurnInfo>, ClientError> {
        Ok(self.backends.leases.current(session_id).await?)
    }

    /// The session's parked turn, if one waits for a person.
    pub(crate) async fn parked(&self, session_id: &str) -> Result<Option<ParkedTurn>, ClientError> {
        Ok(self.backends.confirms.get(session_id).await?)
    }

    /// Parked turns waiting across the deployment (readiness and metrics).
    pub(crate) async fn pending_count(&self) -> Result<u64, BackendError> {
        self.backends.confirms.pending_count().await
    }

    /// Turns running on this pod now.
    pub(crate) fn local_count(&self) -> usize {
        self.local.lock().len()
    }

    pub(super) fn register(&self, session_id: &str, turn_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.local
            .lock()
            .insert(session_id.to_string(), LocalTurn { turn_id: turn_id.to_string(), cancel: token.clone() });
        token
    }

    pub(super) fn unregister(&self, session_id: &str, turn_id: &str) {
        let mut turns = self.local.lock();
        if turns.get(session_id).is_some_and(|t| t.turn_id == turn_id) {
            turns.remove(session_id);
        }
    }

    /// Cancels the session's turn if it runs here (`turn_id` empty: whichever runs). True when found.
    pub(crate) fn cancel_local(&self, session_id: &str, turn_id: &str) -> bool {
        let turns = self.local.lock();
        match turns.get(session_id) {
            Some(t) if t.turn_id == turn_id || turn_id.is_empty() => {
                t.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Appends a turn's terminal event if `guard` holds, in one step with the guard's lease change: the turn's
    /// own ending frees its slot ([`Guard::Release`]), the sweeper's forgets a lapsed turn ([`Guard::Lapsed`]).
    /// When the guard does not hold (a stalled turn that a sweeper ended; a lapsed turn resumed meanwhile) or
    /// the append fails (the lease then lapses, or the lapsed turn is claimed again), nothing is appended:
    /// one ending per turn either way. True when appended.
    pub(super) async fn end(&self, session_id: &str, guard: Guard<'_>, event: &Value) -> bool {
        match self.backends.log.append_guarded(session_id, vec![event.to_string()], guard).await {
            Ok(Some(_)) => {
                self.metrics.events_published(1);
                true
            }
            Ok(None) => {
                tracing::info!(%session_id, ?guard, "the turn was ended elsewhere: this ending is not appended");
                false
            }
            Err(e) => {
                tracing::warn!(%session_id, ?guard, error = %e, "could not append a turn's ending; it is ended later");
                false
            }
        }
    }

    /// [`Turns::end`] with an `error` event, counted when appended.
    pub(super) async fn fail(&self, session_id: &str, guard: Guard<'_>, request_id: &str, e: &ClientError) {
        e.log_at_edge("turn ending");
        if self.end(session_id, guard, &out::error(Some(request_id), e)).await {
            self.metrics.error(e.code);
        }
    }

    /// Appends a session event a turn's answer produces (outside a running turn's emitter). Returns its seq.
    /// Only into a session that exists ([`Guard::Live`]): an answer racing the session's deletion gets
    /// `SESSION_NOT_FOUND` instead of bringing the deleted log back.
    pub(super) async fn emit(&self, session_id: &str, event: &Value) -> Result<u64, ClientError> {
        let appended = self.backends.log.append_guarded(session_id, vec![event.to_string()], Guard::Live).await?;
        let seq = appended.ok_or_else(|| ClientError::session_not_found(session_id))?;
        self.metrics.events_published(1);
        Ok(seq)
    }

    /// Takes a session's parked turn (the pending one, or `call`'s) to end it without an answer: an OTP park's
    /// code goes with it, so a code sent for an ended call can never verify anything later. Every ending that
    /// takes a park (cancel, a failed or lapsed turn, an undelivered code) goes through here.
    pub(super) async fn take_park_to_end(
        &self,
        session_id: &str,
        call: Option<&str>,
    ) -> Result<Option<ParkedTurn>, BackendError> {
        let parked = self.backends.confirms.take(session_id, call).await?;
        if parked.as_ref().is_some_and(|p| matches!(p.gate, Gate::Otp { .. })) {
            self.backends.identity.consume_code(session_id).await?;
        }
        Ok(parked)
    }

    /// Takes the session's parked record if it is this turn's (an ended turn's park must not be resumed later).
    pub(super) async fn take_own_park(&self, session_id: &str, turn_id: &str) {
        match self.backends.confirms.get(session_id).await {
            Ok(Some(p)) if p.turn_id == turn_id => {
                if let Err(e) = self.take_park_to_end(session_id, Some(&p.call.tool_call_id)).await {
                    tracing::warn!(error = %e, %session_id, "could not take the ended turn's park");
                }
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, %session_id, "could not read the ended turn's park"),
        }
    }

    /// Cancels the session's turn wherever it is: parked (no pod), here, or on another pod. True when a turn
    /// was found; the turn itself (or whoever took its park) emits `cancelled`.
    pub(crate) async fn cancel(&self, session_id: &str) -> Result<bool, ClientError> {
        self.cancel_matching(session_id, None).await
    }

    /// [`Turns::cancel`] of turn `turn_id` only: another pod asked this one to cancel it, and it was not (or no
    /// longer) registered here, e.g. it was handing its slot over to a park: it is looked for again, and no other
    /// turn of the session is touched.
    pub(crate) async fn cancel_turn(&self, session_id: &str, turn_id: &str) -> Result<bool, ClientError> {
        self.cancel_matching(session_id, Some(turn_id)).await
    }

    async fn cancel_matching(&self, session_id: &str, turn_id: Option<&str>) -> Result<bool, ClientError> {
        // A parked turn that is resuming, or a local turn that is just registering, is caught on a look again.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
        for _ in 0..3 {
            let Some(info) = self.backends.leases.current(session_id).await? else {
                return Ok(false);
            };
            if turn_id.is_some_and(|t| t != info.turn_id) {
                return Ok(false);
            }
            if info.pod_id.is_empty() {
                // Parked: whoever takes the parked record ends the turn.
                if let Some(parked) = self.take_park_to_end(session_id, None).await? {
                    let cancelled = out::cancelled(&parked.request_id);
                    self.end(session_id, Guard::Release(&parked.turn_id), &cancelled).await;
                    return Ok(true);
                }
                // A decision won the race and the turn is resuming: look again.
                backoff.wait().await;
                continue;
            }
            if info.pod_id == self.pod_id {
                if self.cancel_local(session_id, &info.turn_id) {
                    return Ok(true);
                }
                backoff.wait().await;
                continue;
            }
            // The traceparent links the cancelling request's trace to the pod that acts on it.
            let msg = PodMessage::Cancel {
                session_id: session_id.to_string(),
                turn_id: info.turn_id.clone(),
                traceparent: crate::telemetry::current_traceparent(),
            };
            self.backends.bus.publish(&Channel::Pod(info.pod_id.clone()), &msg.encode()).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The running turn among `sessions` whose request is `request_id` (a cancel that names only the request).
    pub(crate) async fn find_request<'a>(
        &self,
        sessions: impl IntoIterator<Item = &'a String>,
        request_id: &str,
    ) -> Result<Option<String>, ClientError> {
        for sid in sessions {
            if self.holder(sid).await?.is_some_and(|t| t.request_id == request_id) {
                return Ok(Some(sid.clone()));
            }
        }
        Ok(None)
    }

    /// Deletes a session once no turn runs in it: a running turn is cancelled, and the session's slot is held
    /// while the records go, so no turn starts in between (`TURN_IN_PROGRESS` when none let go in 5 s).
    /// A turn whose pod died holds the slot until its lease lapses.
    pub(crate) async fn delete_session(&self, session: &SessionRecord) -> Result<(), ClientError> {
        let sid = &session.session_id;
        let delete_id = format!("delete:{}", crate::util::new_id());
        let hold = TurnInfo::new(&delete_id, &delete_id, &self.pod_id);
        let mut backoff = Backoff::new(Duration::from_millis(20), Duration::from_millis(500));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        let mut cancelled = false;
        while !self.backends.leases.acquire(sid, &hold, self.config.turn.lease_ms).await? {
            if !cancelled {
                self.cancel(sid).await?;
                cancelled = true;
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(ClientError::turn_in_progress());
            }
            backoff.wait().await;
        }
        let deleted = self.backends.sessions.delete_session(session).await;
        if let Err(e) = self.backends.leases.release(sid, &delete_id).await {
            tracing::warn!(error = %e, session_id = %sid, "could not release a deleted session's slot (it lapses)");
        }
        Ok(deleted?)
    }
}
