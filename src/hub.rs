//! The pod's delivery hub: it owns this pod's bus subscriptions (one per channel, however many local sockets
//! want it; unsubscribed when the last leaves) and hands every bus message to the local sockets attached to
//! that channel. The broker never touches sockets; sockets never touch the broker.
//!
//! Session messages carry their `seq`; each socket's writer drops duplicates and repairs gaps from the log
//! (see `ws::writer`), so a lost or lagged pub/sub message never shows as a gap to a client.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use crate::backend::{BResult, Bus, BusEvent, Channel};
use crate::metrics::Metrics;

/// What a socket's writer task receives.
#[derive(Debug, Clone)]
pub enum Outbound {
    /// A frame sent as is (replies, non-session publishes).
    Frame(Arc<str>),
    /// A logged session event in v1 form; the writer adds `sessionId`/`seq` for extended sockets.
    Session(Arc<SessionItem>),
    /// Sets the socket's position in a session's log (attach or resume).
    SetCursor { session_id: Arc<str>, after: u64 },
    /// Read the session's log after the socket's position and deliver it (resume, reconnect, lag).
    ///
    /// `until`: deliver nothing newer than this seq. An attach bounds it by the log's end when the socket
    /// registered, so a catch-up queued ahead of a reply cannot deliver the turn that reply starts before it.
    CatchUp { session_id: Arc<str>, until: Option<u64> },
}

/// One logged session event, shared by every local socket of the session (boxed so an idle socket's queue,
/// whose first block is allocated up front, stays small).
#[derive(Debug)]
pub struct SessionItem {
    pub session_id: Arc<str>,
    pub seq: u64,
    pub json: Box<str>,
}

/// A local socket as the hub sees it.
#[derive(Clone)]
pub struct ConnHandle {
    pub id: u64,
    /// Global id (registry, connection-targeted publishes).
    pub connection_id: Arc<str>,
    /// The socket's bounded outbound queue; producers push, the socket's writer task is the only consumer.
    pub queue: Arc<crate::queue::OutQueue>,
    /// Cancelled by the hub when the queue is full: the connection task closes the socket with 4000.
    pub slow: CancellationToken,
}

impl ConnHandle {
    /// Queues without waiting; a full queue marks the socket as a slow consumer.
    pub fn offer(&self, item: Outbound, metrics: &Metrics) -> bool {
        match self.queue.push(item) {
            Ok(()) => true,
            Err(crate::queue::PushError::Full) => {
                if !self.slow.is_cancelled() {
                    metrics.slow_consumers.fetch_add(1, Ordering::Relaxed);
                    self.slow.cancel();
                }
                false
            }
            Err(crate::queue::PushError::Closed) => false,
        }
    }
}

/// Control messages from the pod channel, handled by the app.
pub type ControlSender = mpsc::UnboundedSender<Arc<str>>;

pub struct Hub {
    bus: Arc<dyn Bus>,
    metrics: Arc<Metrics>,
    /// channel → local sockets. Read on every delivery, written on attach/detach.
    routes: RwLock<HashMap<Channel, HashMap<u64, ConnHandle>>>,
    /// Global connection id → socket, for connection-targeted publishes.
    by_connection: RwLock<HashMap<Arc<str>, ConnHandle>>,
    /// Serializes subscribe/unsubscribe so a channel's first attach and last detach never interleave.
    sub_lock: tokio::sync::Mutex<()>,
    /// Publish time (Unix ms) of the newest canary that came back through the bus.
    pub canary_seen_ms: std::sync::atomic::AtomicI64,
    /// Set from a reconnect until every routed channel is subscribed again; the pod is not ready meanwhile.
    pub restoring: std::sync::atomic::AtomicBool,
    /// When the last restore finished (Unix ms): only a canary sent after it proves the bus delivers.
    pub restored_at_ms: std::sync::atomic::AtomicI64,
}

impl Hub {
    pub fn new(bus: Arc<dyn Bus>, metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            bus,
            metrics,
            routes: RwLock::new(HashMap::new()),
            by_connection: RwLock::new(HashMap::new()),
            sub_lock: tokio::sync::Mutex::new(()),
            canary_seen_ms: std::sync::atomic::AtomicI64::new(0),
            restoring: std::sync::atomic::AtomicBool::new(false),
            restored_at_ms: std::sync::atomic::AtomicI64::new(0),
        })
    }

    pub fn register_connection(&self, conn: &ConnHandle) {
        self.by_connection.write().insert(conn.connection_id.clone(), conn.clone());
    }

    pub fn connection(&self, connection_id: &str) -> Option<ConnHandle> {
        self.by_connection.read().get(connection_id).cloned()
    }

    /// Adds a socket to a channel, subscribing the pod if it is the first local socket.
    pub async fn attach(&self, channel: &Channel, conn: &ConnHandle) -> BResult<()> {
        let _guard = self.sub_lock.lock().await;
        let present = self.routes.read().contains_key(channel);
        if !present {
            self.bus.subscribe(channel).await?;
        }
        self.routes.write().entry(channel.clone()).or_default().insert(conn.id, conn.clone());
        Ok(())
    }

    /// Subscribes the pod to a channel with no socket behind it (pod control, canary).
    pub async fn subscribe_pod(&self, channel: &Channel) -> BResult<()> {
        self.bus.subscribe(channel).await
    }

    /// Removes a socket from channels, unsubscribing those it was the last local socket of.
    pub async fn detach_all(&self, conn_id: u64, connection_id: &str, channels: &[Channel]) {
        self.by_connection.write().remove(connection_id);
        let _guard = self.sub_lock.lock().await;
        for channel in channels {
            let now_empty = {
                let mut routes = self.routes.write();
                match routes.get_mut(channel) {
                    Some(conns) => {
                        conns.remove(&conn_id);
                        if conns.is_empty() {
                            routes.remove(channel);
                            true
                        } else {
                            false
                        }
                    }
                    None => false,
                }
            };
            if now_empty {
                if let Err(e) = self.bus.unsubscribe(channel).await {
                    tracing::warn!(error = %e, ?channel, "unsubscribe failed");
                }
            }
        }
    }

    /// Number of channels this pod is subscribed to for sockets.
    pub fn channel_count(&self) -> usize {
        self.routes.read().len()
    }

    /// The delivery loop: runs until `stop`. Pod-channel messages go to `control`.
    pub async fn run(
        self: Arc<Self>,
        mut rx: broadcast::Receiver<BusEvent>,
        pod_id: String,
        control: ControlSender,
        stop: CancellationToken,
    ) {
        loop {
            let ev = tokio::select! {
                _ = stop.cancelled() => return,
                ev = rx.recv() => ev,
            };
            match ev {
                Ok(BusEvent::Message { channel, payload }) => self.deliver(&channel, payload, &pod_id, &control),
                Ok(BusEvent::Resubscribed) => {
                    // A subscribe that raced the reconnect may not have been restored: subscribe every channel
                    // this pod routes again (idempotent in Redis), then let every session socket re-read its log.
                    self.restoring.store(true, Ordering::Relaxed);
                    let hub = self.clone();
                    tokio::spawn(async move {
                        hub.resubscribe_all().await;
                        hub.restored_at_ms.store(crate::util::now_ms(), Ordering::Relaxed);
                        hub.restoring.store(false, Ordering::Relaxed);
                        hub.catch_up_all();
                    });
                    self.catch_up_all();
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(dropped = n, "bus receiver lagged; repairing sessions from the log");
                    self.catch_up_all();
                }
                Err(broadcast::error::RecvError::Closed) => {
                    tracing::error!("bus receiver closed");
                    return;
                }
            }
        }
    }

    fn deliver(&self, channel: &Channel, payload: Arc<str>, pod_id: &str, control: &ControlSender) {
        let item = match channel {
            Channel::Pod(id) if id == pod_id => {
                let _ = control.send(payload);
                return;
            }
            Channel::Canary(id) if id == pod_id => {
                let now = crate::util::now_ms();
                // The canary carries its publish time: the round trip is this pod's bus lag, and readiness asks
                // for a canary *sent* recently (one sent before a Redis restart proves nothing about now).
                if let Ok(sent) = payload.parse::<i64>() {
                    self.canary_seen_ms.store(sent, Ordering::Relaxed);
                    self.metrics.bus_lag_ms.store((now - sent).max(0), Ordering::Relaxed);
                }
                return;
            }
            Channel::Pod(_) | Channel::Canary(_) => return,
            Channel::Session(sid) => {
                // One message may carry a batch: `<seq>:<json>` lines (JSON text never holds a raw newline).
                let session_id: Arc<str> = Arc::from(sid.as_str());
                let routes = self.routes.read();
                let Some(conns) = routes.get(channel) else { return };
                for line in payload.split('\n') {
                    let Some((seq, json)) = line.split_once(':').and_then(|(s, j)| Some((s.parse::<u64>().ok()?, j)))
                    else {
                        tracing::warn!(%sid, "malformed session bus message");
                        continue;
                    };
                    let item = Outbound::Session(Arc::new(SessionItem {
                        session_id: session_id.clone(),
                        seq,
                        json: json.into(),
                    }));
                    for conn in conns.values() {
                        conn.offer(item.clone(), &self.metrics);
                    }
                }
                return;
            }
            _ => Outbound::Frame(payload),
        };
        let routes = self.routes.read();
        if let Some(conns) = routes.get(channel) {
            for conn in conns.values() {
                conn.offer(item.clone(), &self.metrics);
            }
        }
    }

    async fn resubscribe_all(&self) {
        let _guard = self.sub_lock.lock().await;
        let channels: Vec<Channel> = self.routes.read().keys().cloned().collect();
        for channel in channels {
            if let Err(e) = self.bus.subscribe(&channel).await {
                tracing::warn!(error = %e, ?channel, "resubscribe failed");
            }
        }
    }

    /// After a reconnect or lag every local session socket re-reads its log tail.
    fn catch_up_all(&self) {
        let routes = self.routes.read();
        for (channel, conns) in routes.iter() {
            if let Channel::Session(sid) = channel {
                let sid: Arc<str> = Arc::from(sid.as_str());
                for conn in conns.values() {
                    conn.offer(Outbound::CatchUp { session_id: sid.clone(), until: None }, &self.metrics);
                }
            }
        }
    }
}
