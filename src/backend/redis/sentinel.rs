//! Following a Sentinel-managed master through a failover.

use std::sync::Arc;
use std::time::Duration;

use fred::clients::{Client, SubscriberClient};
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::ServerConfig;
use fred::types::config::{Config as FredConfig, Server};
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tracing::{info, warn};

use super::bus::resubscribe;
use super::conn::builder;
use crate::util::AbortOnDrop;
use crate::util::Backoff;

/// How long the watcher's first connection and subscription may take before the pod warns.
const FIRST_CONNECT: Duration = Duration::from_secs(10);

/// Follows Sentinel's `+switch-master` for our service. Between promoting a replica and demoting the old
/// master (its next periodic check, up to ~10 s later) Sentinel leaves our connections on the old master,
/// which still accepts writes that its resync will then drop; so move as soon as the switch is announced.
pub(super) struct SentinelWatch {
    pub(super) sentinel: Server,
    /// The pod's own client configuration: the watcher connects to Sentinel with its TLS and credentials (fred
    /// uses the same for Sentinel as for Redis), not with a default, plain, anonymous one.
    pub(super) base: FredConfig,
    pub(super) service: String,
    /// The pod's command clients (commands, and the replicated writes when configured) and bus subscriber,
    /// reconnected on a switch.
    pub(super) clients: Vec<Client>,
    pub(super) subscriber: SubscriberClient,
    /// The last switch acted on, shared by the watchers of all sentinels so one switch reconnects once.
    pub(super) last_switch: Arc<Mutex<String>>,
}

impl SentinelWatch {
    /// The watcher's configuration: the Sentinel alone, with the pod's TLS and credentials.
    fn config(&self) -> FredConfig {
        FredConfig {
            server: ServerConfig::Centralized { server: self.sentinel.clone() },
            username: self.base.username.clone(),
            password: self.base.password.clone(),
            tls: self.base.tls.clone(),
            ..FredConfig::default()
        }
    }

    pub(super) async fn run(self) {
        let watcher = match builder(self.config()).build_subscriber_client() {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, sentinel = %self.sentinel, "cannot build the sentinel watcher: failovers are noticed only by READONLY replies");
                return;
            }
        };
        let mut messages = watcher.message_rx();
        let mut reconnects = watcher.reconnect_rx();
        let _connection = AbortOnDrop(watcher.connect().abort_handle());
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        let started = tokio::time::Instant::now();
        let mut warned = false;
        loop {
            let subscribed = match tokio::time::timeout(FIRST_CONNECT, watcher.wait_for_connect()).await {
                Ok(Ok(())) => watcher.subscribe("+switch-master").await.map_err(|e| e.to_string()),
                Ok(Err(e)) => Err(e.to_string()),
                Err(_) => Err(format!("no connection within {FIRST_CONNECT:?}")),
            };
            match subscribed {
                Ok(()) => break,
                // Said once, loudly, past the first attempts: a watcher that cannot subscribe (wrong TLS or
                // credentials, an unreachable Sentinel) leaves the pod on a demoted master for seconds after
                // each failover, which must not go unnoticed.
                Err(e) if !warned && started.elapsed() >= FIRST_CONNECT => {
                    warned = true;
                    warn!(error = %e, sentinel = %self.sentinel, "cannot follow +switch-master: failovers are noticed only by READONLY replies; retrying");
                }
                Err(e) => tracing::debug!(error = %e, sentinel = %self.sentinel, "sentinel watcher not subscribed yet"),
            }
            backoff.wait().await;
        }
        info!(sentinel = %self.sentinel, "following +switch-master");
        loop {
            tokio::select! {
                msg = messages.recv() => match msg {
                    Ok(msg) => {
                        let text = msg.value.as_str_lossy().map(|c| c.into_owned()).unwrap_or_default();
                        self.on_switch(text).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                server = reconnects.recv() => match server {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        resubscribe(&watcher, "sentinel watcher").await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// `<master name> <old ip> <old port> <new ip> <new port>`.
    async fn on_switch(&self, text: String) {
        if text.split_whitespace().next() != Some(self.service.as_str()) {
            return;
        }
        {
            let mut last = self.last_switch.lock();
            if *last == text {
                return;
            }
            last.clone_from(&text);
        }
        info!(switch = %text, "sentinel switched master: reconnecting");
        for client in &self.clients {
            if let Err(e) = client.force_reconnection().await {
                warn!(error = %e, "reconnect after +switch-master failed");
            }
        }
        // The bus reconnects too; its pump resubscribes and emits Resubscribed.
        if let Err(e) = self.subscriber.force_reconnection().await {
            warn!(error = %e, "bus reconnect after +switch-master failed");
        }
    }
}
