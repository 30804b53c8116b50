//! The pod: shared state of one Switchboard process, its background loops (bus delivery, sweepers, canary,
//! registry heartbeat) and the operations several layers share (emitting a session event, cancelling a turn).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::agents::Agents;
use crate::auth::Authenticator;
use crate::backend::{Backends, Channel, Guard};
use crate::config::Config;
use crate::error::ClientError;
use crate::hub::Hub;
use crate::lifecycle::Lifecycle;
use crate::llm::ChatModel;
use crate::metrics::Metrics;
use crate::protocol::outbound as out;
use crate::tools::ToolRunner;
use crate::util::{now_ms, Backoff};

/// A turn running on this pod.
struct LocalTurn {
    turn_id: String,
    /// Cancelled by `cancel`; the turn task owns the reaction (emits `cancelled`).
    cancel: CancellationToken,
}

pub(crate) struct App {
    pub config: Arc<Config>,
    pub pod_id: String,
    pub backends: Backends,
    pub hub: Arc<Hub>,
    pub agents: Agents,
    pub model: Arc<dyn ChatModel>,
    pub tools: ToolRunner,
    /// The agents' knowledge (§11); `None` when none is configured.
    pub knowledge: Option<Arc<dyn crate::knowledge::Retriever>>,
    /// Issues and delivers the OTP gate's codes (§10).
    pub otp: crate::otp::OtpService,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    /// Turns running on this pod, by session. Written by turn tasks, read by cancel.
    local_turns: Mutex<HashMap<String, LocalTurn>>,
    /// The shutdown phases; entered by the server's drain sequence only.
    pub lifecycle: Lifecycle,
    /// Tracks turn tasks and socket tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
}

impl App {
    pub(crate) fn new(
        config: Config,
        backends: Backends,
        model: Arc<dyn ChatModel>,
        knowledge: Option<Arc<dyn crate::knowledge::Retriever>>,
    ) -> Arc<App> {
        let metrics = Arc::new(Metrics::new());
        let hub = Hub::new(backends.bus.clone(), backends.log.clone(), metrics.clone());
        Arc::new(App {
            agents: Agents::new(&config),
            tools: ToolRunner::new(&config.tools),
            knowledge,
            otp: crate::otp::OtpService::new(&config),
            auth: Authenticator::new(&config.auth),
            pod_id: format!("pod-{}", uuid::Uuid::new_v4().simple()),
            config: Arc::new(config),
            backends,
            hub,
            model,
            metrics,
            local_turns: Mutex::new(HashMap::new()),
            lifecycle: Lifecycle::default(),
            tasks: TaskTracker::new(),
        })
    }

    /// Subscribes the pod channels and starts the background loops.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), crate::backend::BackendError> {
        let rx = self.backends.bus.receiver();
        self.hub.subscribe_pod(&Channel::Pod(self.pod_id.clone())).await?;
        self.hub.subscribe_pod(&Channel::Canary(self.pod_id.clone())).await?;
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(self.hub.clone().run(rx, self.pod_id.clone(), control_tx, self.lifecycle.stopped_token()));
        tokio::spawn(self.clone().control_loop(control_rx));
        tokio::spawn(self.clone().canary_loop());
        Ok(())
    }

    /// Appends a session event to the log (which publishes it). Returns its seq.
    pub(crate) async fn emit(&self, session_id: &str, event: &Value) -> Result<u64, ClientError> {
        let text = event.to_string();
        let seq = self.backends.log.append(session_id, &text).await?;
        self.metrics.events_published(1);
        Ok(seq)
    }

    /// Appends an event another service publishes, only while the session exists (one step: a publish never
    /// brings a deleted or expired session's log back). `None` when there is no such session.
    pub(crate) async fn emit_live(&self, session_id: &str, event: &Value) -> Result<Option<u64>, ClientError> {
        let seq = self.backends.log.append_guarded(session_id, vec![event.to_string()], Guard::Live).await?;
        if seq.is_some() {
            self.metrics.events_published(1);
        }
        Ok(seq)
    }

    /// Appends a turn's terminal event if `guard` holds, in one step with the guard's lease change: the turn's
    /// own ending frees its slot ([`Guard::Release`]), the sweeper's forgets a lapsed turn ([`Guard::Lapsed`]).
    /// When the guard does not hold (a stalled turn that a sweeper ended; a lapsed turn resumed meanwhile) or
    /// the append fails (the lease then lapses, or the lapsed turn is claimed again), nothing is appended:
    /// one ending per turn either way. True when appended.
    pub(crate) async fn end_turn(&self, session_id: &str, guard: Guard<'_>, event: &Value) -> bool {
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

    /// [`App::end_turn`] with an `error` event, counted when appended.
    pub(crate) async fn fail_turn(&self, session_id: &str, guard: Guard<'_>, request_id: &str, e: &ClientError) {
        if self.end_turn(session_id, guard, &out::error(Some(request_id), e)).await {
            self.metrics.error(e.code);
        }
    }

    /// Turns running on this pod now.
    pub(crate) fn local_turn_count(&self) -> usize {
        self.local_turns.lock().len()
    }

    pub(crate) fn register_turn(&self, session_id: &str, turn_id: &str) -> CancellationToken {
        let token = CancellationToken::new();
        self.local_turns
            .lock()
            .insert(session_id.to_string(), LocalTurn { turn_id: turn_id.to_string(), cancel: token.clone() });
        token
    }

    pub(crate) fn unregister_turn(&self, session_id: &str, turn_id: &str) {
        let mut turns = self.local_turns.lock();
        if turns.get(session_id).is_some_and(|t| t.turn_id == turn_id) {
            turns.remove(session_id);
        }
    }

    fn cancel_local(&self, session_id: &str, turn_id: &str) -> bool {
        let turns = self.local_turns.lock();
        match turns.get(session_id) {
            Some(t) if t.turn_id == turn_id || turn_id.is_empty() => {
                t.cancel.cancel();
                true
            }
            _ => false,
        }
    }

    /// Cancels the session's turn wherever it is: parked (no pod), here, or on another pod.
    /// Returns whether a turn was found.
    /// Takes a session's parked turn (the pending one, or `call`'s) to end it without an answer: an OTP park's
    /// code goes with it, so a code sent for an ended call can never verify anything later. Every ending that
    /// takes a park (cancel, a failed or lapsed turn, an undelivered code) goes through here.
    pub(crate) async fn take_park_to_end(
        &self,
        session_id: &str,
        call: Option<&str>,
    ) -> Result<Option<crate::backend::ParkedTurn>, crate::backend::BackendError> {
        let parked = self.backends.confirms.take(session_id, call).await?;
        if parked.as_ref().is_some_and(|p| matches!(p.gate, crate::backend::Gate::Otp { .. })) {
            self.backends.identity.consume_code(session_id).await?;
        }
        Ok(parked)
    }

    pub(crate) async fn cancel_turn(&self, session_id: &str) -> Result<bool, ClientError> {
        // A parked turn that is resuming, or a local turn that is just registering, is caught on a look again.
        let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_millis(200));
        for _ in 0..3 {
            let Some(info) = self.backends.leases.current(session_id).await? else {
                return Ok(false);
            };
            if info.pod_id.is_empty() {
                // Parked: whoever takes the parked record ends the turn.
                if let Some(parked) = self.take_park_to_end(session_id, None).await? {
                    let cancelled = out::cancelled(&parked.request_id);
                    self.end_turn(session_id, Guard::Release(&parked.turn_id), &cancelled).await;
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
            let msg = json!({"kind": "cancel", "sessionId": session_id, "turnId": info.turn_id,
                             "traceparent": crate::telemetry::current_traceparent()})
            .to_string();
            self.backends.bus.publish(&Channel::Pod(info.pod_id.clone()), &msg).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Pod-channel messages: cancels for turns running here, connection-targeted publishes.
    async fn control_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Arc<str>>) {
        while let Some(msg) = rx.recv().await {
            let Ok(v) = serde_json::from_str::<Value>(&msg) else {
                continue;
            };
            match v.get("kind").and_then(Value::as_str) {
                Some("cancel") => {
                    let sid = v.get("sessionId").and_then(Value::as_str).unwrap_or_default();
                    let tid = v.get("turnId").and_then(Value::as_str).unwrap_or_default();
                    let span = tracing::info_span!("cancel.remote", session_id = %sid, turn_id = %tid);
                    if let Some(tp) = v.get("traceparent").and_then(Value::as_str) {
                        crate::telemetry::set_parent(&span, tp);
                    }
                    let _entered = span.enter();
                    let found = self.cancel_local(sid, tid);
                    tracing::info!(found, "cancel requested by another pod");
                }
                Some("deliver") => {
                    let cid = v.get("connectionId").and_then(Value::as_str).unwrap_or_default();
                    if let (Some(conn), Some(ev)) = (self.hub.connection(cid), v.get("event")) {
                        conn.offer(crate::hub::Outbound::Frame(Arc::from(ev.to_string())), &self.metrics);
                    }
                }
                _ => tracing::debug!("unknown control message"),
            }
        }
    }

    /// Publishes to this pod's canary channel; readiness needs it to come back.
    async fn canary_loop(self: Arc<Self>) {
        let mut tick = tokio::time::interval(Duration::from_millis(500));
        let channel = Channel::Canary(self.pod_id.clone());
        loop {
            tokio::select! {
                _ = self.lifecycle.stopped() => return,
                _ = tick.tick() => {}
            }
            let ok = self.backends.bus.publish(&channel, &now_ms().to_string()).await.is_ok();
            self.hub.canary_published(ok);
        }
    }

    /// `/readyz`: not draining, storage answers, and the bus delivered our canary recently.
    pub(crate) async fn ready(&self) -> Result<(), &'static str> {
        if self.lifecycle.is_draining() {
            return Err("draining");
        }
        if !self.backends.health.ping().await {
            return Err("storage unreachable");
        }
        if !self.backends.bus.delivering() {
            return Err("bus connection down or reconnecting");
        }
        self.hub.delivery_state(now_ms())
    }
}
