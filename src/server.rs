//! Process lifecycle: build the pod from config, serve, and drain in this order (docs/architecture.md, "Graceful drain"):
//! readiness fails at once → pre-stop pause → sockets get `reconnect` + 1012 → running turns continue until
//! `drain.timeout_s` → then end with `TURN_INTERRUPTED` → exit.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::app::App;
use crate::backend::Backends;
use crate::config::Config;
use crate::llm::{demo::DemoModel, openai::OpenAiModel, ChatModel};

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("backend: {0}")]
    Backend(#[from] crate::backend::BackendError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: String, source: std::io::Error },
    #[error("model client: {0}")]
    Model(String),
    #[error("{0}")]
    Knowledge(String),
}

/// A started pod: its address and a handle to stop it.
pub struct Running {
    pub addr: SocketAddr,
    app: Arc<App>,
    /// Completes when the server has fully stopped.
    pub done: tokio::task::JoinHandle<()>,
}

impl Running {
    /// This pod's id (as the registry and `/admin/connections` show it).
    pub fn pod_id(&self) -> &str {
        &self.app.pod_id
    }

    /// The configuration the pod runs with.
    pub fn config(&self) -> &Config {
        &self.app.config
    }

    /// The pod's backends (to look at the stored state from a test or a tool).
    pub fn backends(&self) -> &Backends {
        &self.app.backends
    }

    /// Begins the graceful drain (as on SIGTERM).
    pub fn drain(&self) {
        self.app.lifecycle.begin_drain();
    }

    /// Serves until the pod stops; `shutdown` resolving (SIGTERM) begins the drain.
    pub async fn run_until(
        self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), tokio::task::JoinError> {
        let mut done = self.done;
        tokio::select! {
            r = &mut done => return r,
            () = shutdown => self.app.lifecycle.begin_drain(),
        }
        done.await
    }

    /// Drains and waits for the process-level stop.
    pub async fn stop(self) {
        self.drain();
        let _ = self.done.await;
    }

    /// Stops at once without draining (a crashed pod): sockets drop, turns are abandoned mid-flight.
    pub fn kill(self) {
        self.app.lifecycle.stop();
        self.done.abort();
    }
}

pub(crate) fn model_for(config: &Config) -> Result<Arc<dyn ChatModel>, ServerError> {
    if config.llm.base_url.is_empty() {
        tracing::warn!(
            "llm.base_url is empty: using the OFFLINE DEMO MODEL (replies are canned, labelled [demo model])"
        );
        Ok(Arc::new(DemoModel::default()))
    } else {
        let model =
            OpenAiModel::new(&config.llm, config.read_window()).map_err(|e| ServerError::Model(e.to_string()))?;
        Ok(Arc::new(model))
    }
}

/// Builds backends from config and starts serving.
pub async fn start(config: Config) -> Result<Running, ServerError> {
    let backends = Backends::from_config(&config).await?;
    start_with(config, backends).await
}

/// Starts a pod on given backends (tests share one memory backend between pods).
pub async fn start_with(config: Config, backends: Backends) -> Result<Running, ServerError> {
    // The process's rustls provider, for the clients that do not pick one (MCP's): ring, as everywhere else.
    let _ = rustls::crypto::ring::default_provider().install_default();
    if config.auth.mode == crate::config::AuthMode::None {
        tracing::warn!("auth.mode = none: every connection is the same anonymous user; for local use only");
    }
    let model = model_for(&config)?;
    let knowledge = crate::knowledge::setup::from_config(&config).map_err(ServerError::Knowledge)?;
    let listener = tokio::net::TcpListener::bind(&config.bind)
        .await
        .map_err(|source| ServerError::Bind { addr: config.bind.clone(), source })?;
    let addr = listener.local_addr().map_err(|source| ServerError::Bind { addr: config.bind.clone(), source })?;
    let app = App::new(config, backends, model, knowledge);
    app.start().await?;
    tokio::spawn(crate::turn::sweep_loop(app.turns.clone()));
    tracing::info!(%addr, pod = %app.pod_id, "switchboard listening");
    let router = crate::http::router(app.clone());
    let done = tokio::spawn(serve(app.clone(), listener, router));
    Ok(Running { addr, app, done })
}

async fn serve(app: Arc<App>, listener: tokio::net::TcpListener, router: axum::Router) {
    let stop_accepting = app.lifecycle.sockets_closing_token();
    let limits = crate::listen::Limits {
        header_read: Duration::from_millis(app.config.http.header_read_timeout_ms),
        idle: Duration::from_millis(app.config.http.idle_timeout_ms),
        max_connections: app.config.limits.connections_per_pod,
    };
    let server = crate::listen::serve(listener, router, limits, app.metrics.clone(), stop_accepting);
    let drain = {
        let app = app.clone();
        async move {
            tokio::select! {
                _ = app.lifecycle.draining() => {}
                _ = app.lifecycle.stopped() => return,
            }
            let cfg = &app.config.drain;
            tracing::info!(pre_stop_s = cfg.pre_stop_s, timeout_s = cfg.timeout_s, "draining: readiness is failing");
            tokio::time::sleep(Duration::from_secs(cfg.pre_stop_s)).await;
            tracing::info!("draining: closing sockets with reconnect + 1012");
            app.lifecycle.close_sockets();
            app.tasks.close();
            let remaining = Duration::from_secs(cfg.timeout_s.saturating_sub(cfg.pre_stop_s));
            if tokio::time::timeout(remaining, app.tasks.wait()).await.is_err() {
                tracing::warn!("drain timeout: interrupting running turns");
                app.lifecycle.interrupt_turns();
                let _ = tokio::time::timeout(Duration::from_secs(3), app.tasks.wait()).await;
            }
            app.lifecycle.stop();
        }
    };
    tokio::join!(server, drain);
    tracing::info!("switchboard stopped");
}
