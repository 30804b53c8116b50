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
use super::conn::{builder, AbortOnDrop};
use crate::util::Backoff;

/// Follows Sentinel's `+switch-master` for our service. Between promoting a replica and demoting the old
/// master (its next periodic check, up to ~10 s later) Sentinel leaves our connections on the old master,
/// which still accepts writes that its resync will then drop; so move as soon as the switch is announced.
pub(super) struct SentinelWatch {
    pub(super) sentinel: Server,
    pub(super) service: String,
    /// The pod's command clients (commands, and the replicated writes when configured) and bus subscriber,
    /// reconnected on a switch.
    pub(super) clients: Vec<Client>,
    pub(super) subscriber: SubscriberClient,
    /// The last switch acted on, shared by the watchers of all sentinels so one switch reconnects once.
    pub(super) last_switch: Arc<Mutex<String>>,
}

impl SentinelWatch {
    pub(super) async fn run(self) {
        let config =
            FredConfig { server: ServerConfig::Centralized { server: self.sentinel.clone() }, ..FredConfig::default() };
        let watcher = match builder(config).build_subscriber_client() {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot build the sentinel watcher");
                return;
            }
        };
        let mut messages = watcher.message_rx();
        let mut reconnects = watcher.reconnect_rx();
        let _connection = AbortOnDrop(watcher.connect().abort_handle());
        let mut backoff = Backoff::new(Duration::from_millis(250), Duration::from_secs(5));
        loop {
            if watcher.wait_for_connect().await.is_ok() && watcher.subscribe("+switch-master").await.is_ok() {
                break;
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
