//! The pod: it composes the parts of one Switchboard process (config, stores, the hub, the turn service, auth)
//! and runs its background loops (bus delivery, pod control messages, canary) and readiness. Turns are
//! started, answered, cancelled and inspected only through [`Turns`].

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::mpsc;
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
use crate::pod::PodMessage;
use crate::turn::Turns;
use crate::util::now_ms;

pub(crate) struct App {
    pub config: Arc<Config>,
    pub pod_id: String,
    pub backends: Backends,
    pub hub: Arc<Hub>,
    pub agents: Arc<Agents>,
    /// The turn's front door: every door starts, answers, cancels and inspects turns through it.
    pub turns: Arc<Turns>,
    pub auth: Authenticator,
    pub metrics: Arc<Metrics>,
    /// The shutdown phases; entered by the server's drain sequence only.
    pub lifecycle: Arc<Lifecycle>,
    /// Tracks turn tasks and socket tasks so shutdown can wait for them.
    pub tasks: TaskTracker,
    /// `http.trusted_proxies`, parsed once (validated at boot).
    pub trusted_proxies: Vec<ipnet::IpNet>,
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
        let config = Arc::new(config);
        let pod_id = format!("pod-{}", uuid::Uuid::new_v4().simple());
        let agents = Arc::new(Agents::new(&config));
        let lifecycle = Arc::new(Lifecycle::default());
        let tasks = TaskTracker::new();
        let turns = Turns::new(crate::turn::Parts {
            config: config.clone(),
            pod_id: pod_id.clone(),
            backends: backends.clone(),
            agents: agents.clone(),
            model,
            knowledge,
            metrics: metrics.clone(),
            lifecycle: lifecycle.clone(),
            tasks: tasks.clone(),
        });
        Arc::new(App {
            auth: Authenticator::new(&config.auth),
            trusted_proxies: crate::client_addr::parse_proxies(&config.http.trusted_proxies),
            config,
            pod_id,
            backends,
            hub,
            agents,
            turns,
            metrics,
            lifecycle,
            tasks,
        })
    }

    /// Subscribes the pod channels and starts the background loops.
    pub(crate) async fn start(self: &Arc<Self>) -> Result<(), crate::backend::BackendError> {
        if !self.auth.has_resume_key() {
            let candidate: [u8; 32] = rand::random();
            self.auth.use_deployment_resume_key(&self.backends.settings.deployment_key("resume", &candidate).await?);
        }
        let rx = self.backends.bus.receiver();
        self.hub.subscribe_pod(&Channel::Pod(self.pod_id.clone())).await?;
        self.hub.subscribe_pod(&Channel::Canary(self.pod_id.clone())).await?;
        let (control_tx, control_rx) = mpsc::unbounded_channel();
        tokio::spawn(self.hub.clone().run(rx, self.pod_id.clone(), control_tx, self.lifecycle.stopped_token()));
        tokio::spawn(self.clone().control_loop(control_rx));
        tokio::spawn(self.clone().canary_loop());
        Ok(())
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

    /// Pod-channel messages: cancels for turns running here, connection-targeted publishes.
    async fn control_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Arc<str>>) {
        while let Some(msg) = rx.recv().await {
            match PodMessage::decode(&msg) {
                Some(PodMessage::Cancel { session_id, turn_id, traceparent }) => {
                    let span = tracing::info_span!("cancel.remote", session_id = %session_id, turn_id = %turn_id);
                    if let Some(tp) = &traceparent {
                        crate::telemetry::set_parent(&span, tp);
                    }
                    let _entered = span.enter();
                    let found = self.turns.cancel_local(&session_id, &turn_id);
                    tracing::info!(found, "cancel requested by another pod");
                    if !found {
                        // Not running here (any more): it may be handing its slot over to a park; look again.
                        let turns = self.turns.clone();
                        tokio::spawn(async move {
                            if let Err(e) = turns.cancel_turn(&session_id, &turn_id).await {
                                tracing::warn!(error = %e, %session_id, "a forwarded cancel could not be applied");
                            }
                        });
                    }
                }
                Some(PodMessage::Deliver { connection_id, event }) => {
                    if let Some(conn) = self.hub.connection(&connection_id) {
                        conn.offer(crate::hub::Outbound::Frame(Arc::from(event.to_string())), &self.metrics);
                    }
                }
                None => tracing::debug!("unknown control message"),
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
