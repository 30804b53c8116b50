//! One MCP server as the pod sees it: a client session over streamable HTTP (the official SDK, `rmcp`), the
//! tool list it last read, and the reconnects. A server that is down never fails the boot or a turn: its
//! tools are missing from what the model is offered, and a call to one is a tool error; the pod tries again in
//! the background. A server that restarted is reconnected on the first call that finds the session dead.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use axum::http::{HeaderName, HeaderValue};
use parking_lot::RwLock;
use rmcp::model::{CallToolRequestParams, ClientCapabilities, ClientConfig, Implementation, ProtocolVersion, Tool};
use rmcp::service::{NotificationContext, RunningService};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::{ClientHandler, RoleClient, ServiceExt};
use tokio::sync::{mpsc, Mutex};

use crate::config::McpServerConfig;

/// Told whether the server answers, after every refresh (the pod's metrics).
pub(super) type OnChange = Arc<dyn Fn(&str, bool) + Send + Sync>;

/// A live client session; owned by [`McpServer::session`], replaced when it dies.
type Session = RunningService<RoleClient, Handler>;

/// Receives the server's notifications: a changed tool list wakes the refresher.
#[derive(Clone)]
pub(super) struct Handler {
    /// The refresher's wake-up; the refresher task owns the receiver.
    changed: mpsc::UnboundedSender<()>,
}

impl ClientHandler for Handler {
    fn get_info(&self) -> ClientConfig {
        ClientConfig::new(ClientCapabilities::default(), Implementation::new("switchboard", env!("CARGO_PKG_VERSION")))
            // The newest version with the initialize handshake and per-session notifications.
            .with_protocol_version(ProtocolVersion::V_2025_11_25)
    }

    async fn on_tool_list_changed(&self, _ctx: NotificationContext<RoleClient>) {
        let _ = self.changed.send(());
    }
}

/// Why a call did not give a result.
#[derive(Debug, thiserror::Error)]
pub(crate) enum McpError {
    #[error("the server is unreachable: {0}")]
    Unreachable(String),
    #[error("no answer within {0} ms")]
    Timeout(u64),
    #[error("the server refused the call: {0}")]
    Refused(String),
}

pub(crate) struct McpServer {
    pub(super) config: McpServerConfig,
    /// The current session, if connected; taken and replaced by whoever finds it dead.
    session: Mutex<Option<Arc<Session>>>,
    /// The tools last listed (empty while the server is down).
    tools: RwLock<Vec<Tool>>,
    /// The refresher's wake-up (a list change, a reconnect).
    changed: mpsc::UnboundedSender<()>,
}

impl McpServer {
    /// A server and its refresher task (which lists its tools now, on every change, and keeps trying while it
    /// is down). Never fails: a server down at boot is connected later.
    pub(super) fn start(config: McpServerConfig, on_change: OnChange) -> Arc<McpServer> {
        let (changed, mut rx) = mpsc::unbounded_channel();
        let server = Arc::new(McpServer { config, session: Mutex::new(None), tools: RwLock::new(Vec::new()), changed });
        let weak = Arc::downgrade(&server);
        tokio::spawn(async move {
            let fresh = || crate::util::Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
            let mut backoff = fresh();
            loop {
                let Some(server) = weak.upgrade() else { return };
                let up = server.refresh().await;
                on_change(&server.config.name, up);
                let wait = if up { None } else { Some(backoff.next_delay()) };
                if up {
                    backoff = fresh();
                }
                drop(server);
                match wait {
                    // Down: try again later, or sooner if something asks.
                    Some(d) => {
                        let _ = tokio::time::timeout(d, rx.recv()).await;
                    }
                    None => {
                        if rx.recv().await.is_none() {
                            return;
                        }
                    }
                }
            }
        });
        server
    }

    fn timeout(&self) -> Duration {
        Duration::from_millis(self.config.timeout_ms)
    }

    /// The tools last listed.
    pub(super) fn tools(&self) -> Vec<Tool> {
        self.tools.read().clone()
    }

    /// Lists the tools again (connecting first if needed); false when the server cannot be reached.
    async fn refresh(&self) -> bool {
        let Ok(session) = self.session().await else {
            self.tools.write().clear();
            return false;
        };
        match tokio::time::timeout(self.timeout(), session.list_all_tools()).await {
            Ok(Ok(tools)) => {
                *self.tools.write() = tools;
                true
            }
            other => {
                tracing::warn!(server = %self.config.name, error = ?other.err(), "MCP tool list failed");
                self.forget(&session).await;
                self.tools.write().clear();
                false
            }
        }
    }

    /// The live session, connecting when there is none.
    async fn session(&self) -> Result<Arc<Session>, McpError> {
        let mut slot = self.session.lock().await;
        if let Some(s) = slot.as_ref().filter(|s| !s.is_transport_closed()) {
            return Ok(s.clone());
        }
        let mut headers = HashMap::new();
        for (name, value) in &self.config.header_values {
            if let (Ok(n), Ok(v)) = (HeaderName::try_from(name.as_str()), HeaderValue::from_str(value)) {
                headers.insert(n, v);
            }
        }
        let cfg = StreamableHttpClientTransportConfig::with_uri(self.config.url.as_str()).custom_headers(headers);
        let handler = Handler { changed: self.changed.clone() };
        let served =
            tokio::time::timeout(self.timeout(), handler.serve(StreamableHttpClientTransport::from_config(cfg)))
                .await
                .map_err(|_| McpError::Timeout(self.config.timeout_ms))?
                .map_err(|e| McpError::Unreachable(e.to_string()))?;
        tracing::info!(server = %self.config.name, "MCP server connected");
        let session = Arc::new(served);
        *slot = Some(session.clone());
        Ok(session)
    }

    /// Drops `dead` (if it is still the current session) so the next use connects again.
    async fn forget(&self, dead: &Arc<Session>) {
        let mut slot = self.session.lock().await;
        if slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, dead)) {
            *slot = None;
        }
    }

    /// Calls `tool` with `arguments` (a JSON object). A failure that may mean a dead session (a restarted
    /// server, a dropped connection, no answer) drops the session and tries once more on a new one.
    pub(super) async fn call(
        &self,
        tool: &str,
        arguments: serde_json::Map<String, serde_json::Value>,
    ) -> Result<rmcp::model::CallToolResult, McpError> {
        let mut last = McpError::Unreachable("not tried".into());
        for attempt in 0..2 {
            let session = self.session().await?;
            let params = CallToolRequestParams::new(tool.to_string()).with_arguments(arguments.clone());
            match tokio::time::timeout(self.timeout(), session.call_tool(params)).await {
                Ok(Ok(result)) => return Ok(result),
                Ok(Err(rmcp::ServiceError::McpError(e))) => return Err(McpError::Refused(e.message.to_string())),
                Ok(Err(e)) => {
                    tracing::warn!(server = %self.config.name, tool, attempt, error = %e, "MCP call failed");
                    last = McpError::Unreachable(e.to_string());
                }
                Err(_) => {
                    tracing::warn!(server = %self.config.name, tool, attempt, "MCP call timed out");
                    last = McpError::Timeout(self.config.timeout_ms);
                    // A slow tool is not a dead server: it is not called twice.
                    if !self.alive(&session).await {
                        self.forget(&session).await;
                    }
                    return Err(last);
                }
            }
            self.forget(&session).await;
            // The new session may list other tools (a restarted server).
            let _ = self.changed.send(());
        }
        Err(last)
    }

    /// Whether the session still answers a ping within a second.
    async fn alive(&self, session: &Session) -> bool {
        use rmcp::model::{ClientRequest, PingRequest};
        use rmcp::service::PeerRequestOptions;
        let req = ClientRequest::PingRequest(PingRequest::default());
        match session.send_cancellable_request(req, PeerRequestOptions::with_timeout(Duration::from_secs(1))).await {
            Ok(handle) => handle.await_response().await.is_ok(),
            Err(_) => false,
        }
    }
}
