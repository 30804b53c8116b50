//! The pod's bus: publishes on the command connection, receives on one subscriber connection (one subscription
//! per channel per pod), restores subscriptions after every reconnect and tells the hub to repair gaps.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use fred::clients::SubscriberClient;
use fred::interfaces::{ClientLike, EventInterface, PubsubInterface};
use fred::prelude::Error as FredError;
use fred::types::{ClusterHash, CustomCommand, Value};
use tokio::sync::broadcast;
use tracing::{debug, info, warn};

use super::conn::{fred_err, Shared};
use crate::backend::{BResult, Bus, BusEvent, Channel};
use crate::util::Backoff;

/// One pod's bus: publishes on the command connection, receives on one dedicated subscriber connection.
pub(super) struct RedisBus {
    pub(super) shared: Arc<Shared>,
    /// The pod's only subscriber connection (subscribe once per channel per pod); owned by the bus, cloned
    /// into the pump task that restores subscriptions after reconnects.
    pub(super) subscriber: SubscriberClient,
    /// Sender of this pod's bus events; fed by the pump task, receivers are handed to the hub.
    pub(super) tx: broadcast::Sender<BusEvent>,
    /// Set by the pump task from a reconnect until the subscriptions are restored; read by readiness.
    pub(super) restoring: Arc<AtomicBool>,
}

impl RedisBus {
    fn sharded(&self, channel: &Channel) -> bool {
        self.shared.cluster && matches!(channel, Channel::Session(_))
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn delivering(&self) -> bool {
        self.subscriber.state() == fred::types::ClientState::Connected && !self.restoring.load(Ordering::Relaxed)
    }

    async fn publish(&self, channel: &Channel, payload: &str) -> BResult<()> {
        let s = &self.shared;
        s.publish(channel.name(&s.keys.prefix), self.sharded(channel), payload).await
    }

    async fn subscribe(&self, channel: &Channel) -> BResult<()> {
        self.subscribe_many(std::slice::from_ref(channel)).await
    }

    async fn subscribe_many(&self, channels: &[Channel]) -> BResult<()> {
        let prefix = &self.shared.keys.prefix;
        let (sharded, plain): (Vec<&Channel>, Vec<&Channel>) = channels.iter().partition(|c| self.sharded(c));
        let plain: Vec<String> = plain.iter().map(|c| c.name(prefix)).collect();
        let sharded: Vec<String> = sharded.iter().map(|c| c.name(prefix)).collect();
        subscribe_names(&self.subscriber, plain, sharded).await.map_err(fred_err)
    }

    async fn unsubscribe(&self, channel: &Channel) -> BResult<()> {
        let name = channel.name(&self.shared.keys.prefix);
        let slot = if self.sharded(channel) {
            let slot = fred::util::redis_keyslot(name.as_bytes());
            self.subscriber.sunsubscribe(name).await.map_err(fred_err)?;
            slot
        } else {
            self.subscriber.unsubscribe(name).await.map_err(fred_err)?;
            legacy_slot(&self.subscriber)
        };
        barrier(&self.subscriber, slot).await.map_err(fred_err)
    }

    async fn unsubscribe_many(&self, channels: &[Channel]) -> BResult<()> {
        let prefix = &self.shared.keys.prefix;
        let (sharded, plain): (Vec<&Channel>, Vec<&Channel>) = channels.iter().partition(|c| self.sharded(c));
        let plain: Vec<String> = plain.iter().map(|c| c.name(prefix)).collect();
        let sharded: Vec<String> = sharded.iter().map(|c| c.name(prefix)).collect();
        // No barrier: a message still delivered to a channel no socket follows is dropped by the hub, and a
        // later subscribe to the same channel goes over the same connection, behind this.
        for chunk in plain.chunks(SUBSCRIBE_CHUNK) {
            self.subscriber.unsubscribe(chunk.to_vec()).await.map_err(fred_err)?;
        }
        for (_, keys) in fred::util::group_by_hash_slot(sharded).map_err(fred_err)? {
            for chunk in Vec::from(keys).chunks(SUBSCRIBE_CHUNK) {
                self.subscriber.sunsubscribe(chunk.to_vec()).await.map_err(fred_err)?;
            }
        }
        Ok(())
    }

    fn receiver(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }
}

/// Waits until Redis has processed the (un)subscribe commands sent before on the connection that serves
/// `slot`. fred resolves SUBSCRIBE, UNSUBSCRIBE and SUNSUBSCRIBE as soon as they are written (it drops their
/// confirmations), so without this a publish right after `subscribe()` returned could still be missed, and one
/// right after `unsubscribe()` still delivered. Redis answers a connection's commands in order, so the reply to
/// a PING sent behind them proves they are done (in RESP2 subscribed mode PING is allowed).
async fn barrier(subscriber: &SubscriberClient, slot: u16) -> Result<(), FredError> {
    let ping = CustomCommand::new_static("PING", ClusterHash::Custom(slot), false);
    subscriber.custom::<Value, String>(ping, Vec::new()).await.map(|_| ())
}

/// The slot whose node fred sends this client's plain (non-sharded) pub/sub commands to in a cluster: it
/// pins them to one node (by client id) so that they share one connection.
fn legacy_slot(subscriber: &SubscriberClient) -> u16 {
    fred::util::redis_keyslot(subscriber.id().as_bytes())
}

/// Channels per SUBSCRIBE / SSUBSCRIBE command ([`subscribe_names`]).
const SUBSCRIBE_CHUNK: usize = 1000;
/// Capacity of the pod's own bus broadcast (what the hub reads).
pub(super) const BUS_CAPACITY: usize = 4096;

/// Reads fred's pub/sub stream into the pod's bus and restores subscriptions after every reconnect.
pub(super) async fn pump(
    subscriber: SubscriberClient,
    prefix: String,
    tx: broadcast::Sender<BusEvent>,
    restoring: Arc<AtomicBool>,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            msg = messages.recv() => match msg {
                Ok(msg) => {
                    let Some(channel) = Channel::parse(&prefix, &msg.channel) else {
                        debug!(channel = %msg.channel, "message on a channel that is not ours");
                        continue;
                    };
                    let Some(payload) = msg.value.as_str_lossy() else { continue };
                    let _ = tx.send(BusEvent::from_wire(channel, Arc::from(payload.as_ref())));
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(dropped = n, "redis pub/sub receiver lagged: consumers repair from the log");
                    let _ = tx.send(BusEvent::Resubscribed);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // fred closes its streams on QUIT only: the pod is shutting down.
                    debug!("redis pub/sub stream closed");
                    return;
                }
            },
            server = reconnects.recv() => match server {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    restoring.store(true, Ordering::Relaxed);
                    resubscribe(&subscriber, "bus").await;
                    restoring.store(false, Ordering::Relaxed);
                    let _ = tx.send(BusEvent::Resubscribed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Restores every tracked subscription, retrying until it works (the connection may flap again meanwhile).
pub(super) async fn resubscribe(subscriber: &SubscriberClient, what: &str) {
    let mut backoff = Backoff::new(Duration::from_millis(50), Duration::from_secs(2));
    loop {
        // `restore_tracked` ends with the barrier: the channels are live once it returns.
        match restore_tracked(subscriber).await {
            Ok(()) => {
                info!(
                    what,
                    channels = subscriber.tracked_channels().len(),
                    sharded = subscriber.tracked_shard_channels().len(),
                    "redis subscriptions restored after reconnect"
                );
                return;
            }
            Err(e) => {
                warn!(what, error = %e, "redis resubscribe failed, retrying");
                backoff.wait().await;
            }
        }
    }
}

/// Subscribes again to every channel fred tracks. Not fred's `resubscribe_all`: that always sends
/// `PSUBSCRIBE` even with no patterns, which Redis answers with an error, so the restore never succeeded
/// on a pod with no patterns (every pod: Switchboard uses none).
async fn restore_tracked(subscriber: &SubscriberClient) -> Result<(), FredError> {
    let patterns: Vec<fred::types::Key> = subscriber.tracked_patterns().into_iter().map(Into::into).collect();
    if !patterns.is_empty() {
        subscriber.psubscribe(patterns).await?;
    }
    let sharded = subscriber.tracked_shard_channels().into_iter().map(|c| c.to_string()).collect();
    subscribe_names(subscriber, subscriber.tracked_channels().into_iter().map(|c| c.to_string()).collect(), sharded)
        .await
}

/// Subscribes `plain` channels with SUBSCRIBE and `sharded` ones with SSUBSCRIBE, a bounded number per command
/// (SSUBSCRIBE: one hash slot per command, and fred waits for its confirmation), then waits for Redis to have
/// processed the plain ones ([`barrier`]). Nothing is sent for an empty list (Redis refuses an empty SUBSCRIBE).
async fn subscribe_names(
    subscriber: &SubscriberClient,
    plain: Vec<String>,
    sharded: Vec<String>,
) -> Result<(), FredError> {
    for chunk in plain.chunks(SUBSCRIBE_CHUNK) {
        subscriber.subscribe(chunk.to_vec()).await?;
    }
    if !plain.is_empty() {
        barrier(subscriber, legacy_slot(subscriber)).await?;
    }
    for (_, keys) in fred::util::group_by_hash_slot(sharded)? {
        for chunk in Vec::from(keys).chunks(SUBSCRIBE_CHUNK) {
            subscriber.ssubscribe(chunk.to_vec()).await?;
        }
    }
    Ok(())
}
