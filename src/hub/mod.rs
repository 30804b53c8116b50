//! The pod's delivery hub: it owns this pod's bus subscriptions (one per channel, however many local sockets
//! want it; unsubscribed when the last leaves) and hands every bus message to the local sockets attached to
//! that channel. The broker never touches sockets; sockets never touch the broker.
//!
//! Session messages carry their `seq`; each socket's task drops duplicates and repairs gaps from the log
//! (see `ws::delivery`), so a lost or lagged pub/sub message never shows as a gap to a client.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;

use parking_lot::RwLock;
use tokio::sync::{broadcast, mpsc};
use tokio_util::sync::CancellationToken;

use futures_util::StreamExt;

use crate::backend::{BResult, Bus, BusEvent, Channel, EventLog, FramedEvent, SessionBatch};
use crate::metrics::Metrics;

mod routes;

use self::routes::Routes;

/// What a socket's task writes.
#[derive(Debug, Clone)]
pub(crate) enum Outbound {
    /// A frame sent as is (replies, non-session publishes).
    Frame(Arc<str>),
    /// A logged session event in v1 form; the socket's task adds `sessionId`/`seq` for extended sockets.
    Session(Arc<SessionItem>),
    /// Sets the socket's position in a session's log (attach or resume), in the log's epoch (`None`: the
    /// log has no event yet, so any epoch's first event is new).
    SetCursor(Box<SetCursor>),
    /// Read the session's log after the socket's position and deliver it (resume, reconnect, lag).
    CatchUp(Box<CatchUp>),
}

/// [`Outbound::SetCursor`]'s fields, boxed: the rare items stay out of the queue's slots, so every slot (and an
/// idle socket's queue, which keeps a few) is 24 bytes, not 48.
#[derive(Debug, Clone)]
pub(crate) struct SetCursor {
    pub session_id: Arc<str>,
    pub after: u64,
    pub epoch: Option<Arc<str>>,
}

/// [`Outbound::CatchUp`]'s fields. `until`: deliver nothing newer than this seq. An attach bounds it by the
/// log's end when the socket registered, so a catch-up queued ahead of a reply cannot deliver the turn that
/// reply starts before it.
#[derive(Debug, Clone)]
pub(crate) struct CatchUp {
    pub session_id: Arc<str>,
    pub until: Option<u64>,
}

impl Outbound {
    pub(crate) fn set_cursor(session_id: Arc<str>, after: u64, epoch: Option<Arc<str>>) -> Outbound {
        Outbound::SetCursor(Box::new(SetCursor { session_id, after, epoch }))
    }

    pub(crate) fn catch_up(session_id: Arc<str>, until: Option<u64>) -> Outbound {
        Outbound::CatchUp(Box::new(CatchUp { session_id, until }))
    }
}

/// One logged session event, shared by every local socket of the session (boxed so an idle socket's queue,
/// whose first block is allocated up front, stays small).
#[derive(Debug)]
pub(crate) struct SessionItem {
    pub session_id: Arc<str>,
    pub seq: u64,
    /// The batch the event came in (its payload shared by the events of one batch: no copy per event).
    batch: SessionBatch,
    /// Which of the batch's events this is.
    index: usize,
}

impl SessionItem {
    fn event(&self) -> Option<&FramedEvent> {
        self.batch.events().get(self.index)
    }

    /// The event in v1 form.
    pub(crate) fn json(&self) -> &str {
        self.event().map_or("", |e| self.batch.json(e))
    }

    /// The epoch of the log the event's `seq` counts in.
    pub(crate) fn epoch(&self) -> &str {
        self.event().map_or("", |e| self.batch.epoch(e))
    }
}

/// A local socket as the hub sees it: one shared pointer, so each channel the socket is on (its session, user,
/// org and agent, and the pod's connection index) holds 8 bytes of it, not a copy of every field.
#[derive(Clone)]
pub(crate) struct ConnHandle(Arc<Handle>);

/// What a [`ConnHandle`] points at.
pub(crate) struct Handle {
    pub id: u64,
    /// Global id (registry, connection-targeted publishes).
    pub connection_id: Arc<str>,
    /// The socket's bounded outbound queue; producers push, the socket's task is the only consumer.
    pub queue: Arc<crate::queue::OutQueue<Outbound>>,
    /// Cancelled by the hub when the queue is full: the connection task closes the socket with 4000. A socket's
    /// is a child of the pod's (`Lifecycle::socket_token`), so its task also stops on it when the pod closes its
    /// sockets or stops.
    pub slow: CancellationToken,
    /// A gateway watcher, not a socket: its queue only carries wake-ups, and a full one is no slow consumer.
    pub watcher: bool,
}

impl std::ops::Deref for ConnHandle {
    type Target = Handle;
    fn deref(&self) -> &Handle {
        &self.0
    }
}

impl ConnHandle {
    pub(crate) fn new(handle: Handle) -> ConnHandle {
        ConnHandle(Arc::new(handle))
    }

    /// Queues without waiting; a full queue marks the socket as a slow consumer.
    pub(crate) fn offer(&self, item: Outbound, metrics: &Metrics) -> bool {
        match self.queue.push(item) {
            Ok(()) => true,
            Err(crate::queue::PushError::Full) if self.watcher => false,
            Err(crate::queue::PushError::Full) => {
                if !self.slow.is_cancelled() {
                    metrics.slow_consumer();
                    self.slow.cancel();
                }
                false
            }
            Err(crate::queue::PushError::Closed) => false,
        }
    }
}

/// Control messages from the pod channel, handled by the app.
pub(crate) type ControlSender = mpsc::UnboundedSender<Arc<str>>;

pub(crate) struct Hub {
    bus: Arc<dyn Bus>,
    /// The session log, read for the bounds of catch-ups after a reconnect or lag.
    log: Arc<dyn EventLog>,
    metrics: Arc<Metrics>,
    /// channel → local sockets. Read on every delivery, written on attach/detach.
    routes: RwLock<HashMap<Channel, Routes>>,
    /// Global connection id → socket, for connection-targeted publishes.
    by_connection: RwLock<HashMap<Arc<str>, ConnHandle>>,
    /// Serializes subscribe/unsubscribe so a channel's first attach and last detach never interleave.
    sub_lock: tokio::sync::Mutex<()>,
    /// Publish time (Unix ms) of the newest canary that came back through the bus; written by the delivery
    /// loop.
    canary_seen_ms: AtomicI64,
    /// Whether the pod's last canary publish succeeded; written by the app's canary loop.
    canary_published: AtomicBool,
    /// Set from a reconnect until every routed channel is subscribed again; the pod is not ready meanwhile.
    restoring: AtomicBool,
    /// When the last restore finished (Unix ms): only a canary sent after it proves the bus delivers.
    restored_at_ms: AtomicI64,
}

impl Hub {
    pub(crate) fn new(bus: Arc<dyn Bus>, log: Arc<dyn EventLog>, metrics: Arc<Metrics>) -> Arc<Hub> {
        Arc::new(Hub {
            bus,
            log,
            metrics,
            routes: RwLock::new(HashMap::new()),
            by_connection: RwLock::new(HashMap::new()),
            sub_lock: tokio::sync::Mutex::new(()),
            canary_seen_ms: AtomicI64::new(0),
            canary_published: AtomicBool::new(true),
            restoring: AtomicBool::new(false),
            restored_at_ms: AtomicI64::new(0),
        })
    }

    /// Records whether the pod's canary publish went through (the app's canary loop, every 500 ms).
    pub(crate) fn canary_published(&self, ok: bool) {
        self.canary_published.store(ok, Ordering::Relaxed);
    }

    /// Whether this pod's bus delivers, as readiness needs it: not restoring subscriptions, the last canary
    /// published, and a canary sent after the last restore and within 2 s came back.
    pub(crate) fn delivery_state(&self, now_ms: i64) -> Result<(), &'static str> {
        if self.restoring.load(Ordering::Relaxed) {
            return Err("bus subscriptions being restored");
        }
        let seen = self.canary_seen_ms.load(Ordering::Relaxed);
        let restored = self.restored_at_ms.load(Ordering::Relaxed);
        if !self.canary_published.load(Ordering::Relaxed) || now_ms - seen > 2_000 || seen < restored {
            return Err("bus not delivering");
        }
        Ok(())
    }

    pub(crate) fn register_connection(&self, conn: &ConnHandle) {
        self.by_connection.write().insert(conn.connection_id.clone(), conn.clone());
    }

    pub(crate) fn connection(&self, connection_id: &str) -> Option<ConnHandle> {
        self.by_connection.read().get(connection_id).cloned()
    }

    /// Adds a socket to a channel, subscribing the pod if it is the first local socket.
    pub(crate) async fn attach(&self, channel: &Channel, conn: &ConnHandle) -> BResult<()> {
        let _guard = self.sub_lock.lock().await;
        let present = self.routes.read().contains_key(channel);
        if !present {
            self.bus.subscribe(channel).await?;
        }
        self.routes
            .write()
            .entry(channel.clone())
            .and_modify(|routes| routes.insert(conn.clone()))
            .or_insert_with(|| Routes::new(conn.clone()));
        Ok(())
    }

    /// Subscribes the pod to a channel with no socket behind it (pod control, canary).
    pub(crate) async fn subscribe_pod(&self, channel: &Channel) -> BResult<()> {
        self.bus.subscribe(channel).await
    }

    /// Removes a socket from channels, unsubscribing those it was the last local socket of.
    pub(crate) async fn detach_all(&self, conn_id: u64, connection_id: &str, channels: &[Channel]) {
        self.by_connection.write().remove(connection_id);
        let _guard = self.sub_lock.lock().await;
        let emptied: Vec<Channel> = {
            let mut routes = self.routes.write();
            channels
                .iter()
                .filter(|channel| match routes.get_mut(*channel) {
                    Some(conns) => conns.remove(conn_id) && routes.remove(*channel).is_some(),
                    None => false,
                })
                .cloned()
                .collect()
        };
        // One batched command (per slot in a cluster) under the lock, however many sessions the socket had:
        // the lock orders it with a concurrent attach's subscribe, and stays short.
        if let Err(e) = self.bus.unsubscribe_many(&emptied).await {
            tracing::warn!(error = %e, channels = emptied.len(), "unsubscribe failed");
        }
    }

    /// The delivery loop: runs until `stop`. Pod-channel messages go to `control`.
    pub(crate) async fn run(
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
                Ok(BusEvent::Session { channel, session_id, batch }) => {
                    self.deliver_session(&channel, session_id, batch)
                }
                Ok(BusEvent::Resubscribed) => {
                    // A subscribe that raced the reconnect may not have been restored: subscribe every channel
                    // this pod routes again (idempotent in Redis), then let every session socket re-read its log.
                    self.restoring.store(true, Ordering::Relaxed);
                    let hub = self.clone();
                    tokio::spawn(async move {
                        hub.resubscribe_all().await;
                        hub.restored_at_ms.store(crate::util::now_ms(), Ordering::Relaxed);
                        hub.restoring.store(false, Ordering::Relaxed);
                        hub.catch_up_all().await;
                    });
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(dropped = n, "bus receiver lagged; repairing sessions from the log");
                    tokio::spawn(self.clone().catch_up_all());
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
                    self.metrics.bus_lag(now - sent);
                }
                return;
            }
            Channel::Pod(_) | Channel::Canary(_) => return,
            _ => Outbound::Frame(payload),
        };
        let routes = self.routes.read();
        if let Some(conns) = routes.get(channel) {
            conns.each(|conn| {
                conn.offer(item.clone(), &self.metrics);
            });
        }
    }

    /// A session's batch of logged events (decoded by the backend) to every local socket of the session.
    fn deliver_session(&self, channel: &Channel, session_id: Arc<str>, batch: SessionBatch) {
        if batch.malformed() > 0 {
            tracing::warn!(%session_id, lines = batch.malformed(), "malformed session bus lines dropped");
        }
        let routes = self.routes.read();
        let Some(conns) = routes.get(channel) else { return };
        for (index, event) in batch.events().iter().enumerate() {
            let item = Outbound::Session(Arc::new(SessionItem {
                session_id: session_id.clone(),
                seq: event.seq,
                batch: batch.clone(),
                index,
            }));
            conns.each(|conn| {
                conn.offer(item.clone(), &self.metrics);
            });
        }
    }

    async fn resubscribe_all(&self) {
        let _guard = self.sub_lock.lock().await;
        let channels: Vec<Channel> = self.routes.read().keys().cloned().collect();
        // Batched: with 10k sessions on the pod this is a handful of commands, not 10k round trips.
        if let Err(e) = self.bus.subscribe_many(&channels).await {
            tracing::warn!(error = %e, channels = channels.len(), "resubscribe failed");
        }
    }

    /// After a reconnect or lag every local session socket re-reads its log tail, up to the log's end as read
    /// now that the pod is subscribed: anything newer arrives live (or is repaired as a gap when it does). An
    /// unbounded catch-up could run after a reply the socket was sent later, and deliver the turn that reply
    /// starts ahead of it.
    async fn catch_up_all(self: Arc<Self>) {
        let sessions: Vec<(Arc<str>, Vec<ConnHandle>)> = {
            let routes = self.routes.read();
            routes
                .iter()
                .filter_map(|(channel, conns)| match channel {
                    Channel::Session(sid) => Some((Arc::from(sid.as_str()), conns.handles())),
                    _ => None,
                })
                .collect()
        };
        let log = &self.log;
        let mut ends = futures_util::stream::iter(sessions)
            .map(|(sid, conns)| {
                async move {
                    let until = match log.bounds(&sid).await {
                        Ok((_, latest)) => Some(latest),
                        Err(e) => {
                            // Rare double fault (Redis lost again right after the restore): read to the end.
                            tracing::warn!(error = %e, session_id = %sid, "log bounds unreadable for catch-up");
                            None
                        }
                    };
                    (sid, conns, until)
                }
            })
            .buffer_unordered(CATCH_UP_READS);
        while let Some((sid, conns, until)) = ends.next().await {
            for conn in conns {
                conn.offer(Outbound::catch_up(sid.clone(), until), &self.metrics);
            }
        }
    }
}

/// Log-bound reads in flight at once while every session of the pod catches up.
const CATCH_UP_READS: usize = 32;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::memory::MemoryBackend;
    use crate::config::Config;

    /// A socket's handle with a queue of 64, and that queue.
    fn socket() -> (ConnHandle, Arc<crate::queue::OutQueue<Outbound>>) {
        let queue = Arc::new(crate::queue::OutQueue::new(64));
        let conn = ConnHandle::new(Handle {
            id: 1,
            connection_id: Arc::from("c1"),
            queue: queue.clone(),
            slow: CancellationToken::new(),
            watcher: false,
        });
        (conn, queue)
    }

    #[test]
    fn a_queue_slot_is_small() {
        // Every socket's queue keeps a few slots while idle (docs/benchmarks.md, RSS per idle socket).
        assert!(std::mem::size_of::<Outbound>() <= 24, "{}", std::mem::size_of::<Outbound>());
    }

    #[tokio::test]
    async fn reconnect_catch_up_stops_at_the_log_end_read_after_resubscribing() {
        let backends = MemoryBackend::new(&Config::default()).backends();
        let metrics = Arc::new(Metrics::default());
        let hub = Hub::new(backends.bus.clone(), backends.log.clone(), metrics.clone());
        let (conn, queue) = socket();
        let channel = Channel::Session("s1".into());
        hub.attach(&channel, &conn).await.expect("attach");
        let events: Vec<String> = (0..3).map(|i| format!("{{\"n\":{i}}}")).collect();
        backends.log.append_batch("s1", events.clone()).await.expect("append");

        hub.clone().catch_up_all().await;
        // A turn that starts after the restore appends more; the queued catch-up must not reach it.
        backends.log.append_batch("s1", events.clone()).await.expect("append");
        match queue.try_pop() {
            Some(Outbound::CatchUp(c)) => {
                assert_eq!(&*c.session_id, "s1");
                assert_eq!(c.until, Some(3));
            }
            other => panic!("expected a bounded catch-up, got {other:?}"),
        }
        assert!(queue.try_pop().is_none(), "one catch-up per socket and session");
    }

    #[tokio::test]
    async fn a_batch_message_becomes_one_item_per_event_sharing_the_payload() {
        let backends = MemoryBackend::new(&Config::default()).backends();
        let hub = Hub::new(backends.bus.clone(), backends.log.clone(), Arc::new(Metrics::default()));
        let (conn, queue) = socket();
        let channel = Channel::Session("s1".into());
        hub.attach(&channel, &conn).await.expect("attach");
        let payload: Arc<str> = Arc::from("7:e1:{\"a\":\"x:y\"}\nbad line\n8:e1:{\"b\":2}");
        match BusEvent::from_wire(channel, payload) {
            BusEvent::Session { channel, session_id, batch } => hub.deliver_session(&channel, session_id, batch),
            other => panic!("a session channel's message decodes into a batch: {other:?}"),
        }
        let mut got = Vec::new();
        while let Some(item) = queue.try_pop() {
            match item {
                Outbound::Session(item) => {
                    assert_eq!(item.epoch(), "e1");
                    got.push((item.seq, item.json().to_string()))
                }
                other => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(got, [(7, r#"{"a":"x:y"}"#.to_string()), (8, r#"{"b":2}"#.to_string())]);
    }
}
