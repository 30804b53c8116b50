//! Writes that must reach replicas before anyone is shown them (`redis_wait_replicas`): parks, decisions, steps
//! and log appends.
//!
//! `WAIT` blocks the connection it is sent on and covers only the writes made on that same connection, so these
//! writes get a connection of their own ([`Replicated::client`]): a slow or absent replica delays them, never the
//! lease renewals, reads and heartbeats on the pod's command connection.
//!
//! **Group commit.** One `WAIT` at a time per node (a *round*) covers every write that node had answered on this
//! connection when the round was sent: a write takes a ticket once its reply is in, and a round confirms every
//! ticket taken before it. A replica that falls behind costs one blocked `WAIT` per round, not one per write,
//! each queued behind the last (which stalled every turn of the pod for seconds after a failover).
//!
//! **Connections.** A write is confirmed only by a round on the connection it was made on. fred knows each
//! connection's Redis `CLIENT ID` (renewed by every reconnect); it is read before the write and around each
//! round. A write whose connection was replaced before a round confirmed it (a Sentinel switch, a dropped
//! connection) has *moved*: whether it survived is for the server the pod talks to now to say
//! ([`Settled::Moved`]), never for a `WAIT` on a new connection, which covers none of the old one's writes.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{ClientInterface, ClientLike, ClusterInterface, ServerInterface};
use fred::prelude::Client;
use fred::types::config::{Options, Server};
use fred::types::ClusterHash;
use parking_lot::Mutex;
use tokio::sync::watch;
use tracing::warn;

use crate::util::now_ms;

/// How a replicated write ended up.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Settled {
    /// `redis_wait_replicas` replicas have it.
    Confirmed,
    /// The connection it was made on is gone: the server the pod talks to now may or may not hold it.
    Moved,
    /// Not confirmed within the time given (a replica behind, re-syncing or away).
    Short,
}

/// The node a write went to: `None` outside a cluster (one master), its server in a cluster.
type Route = Option<Server>;

/// A connection: the server and its `CLIENT ID` there (ids count per server, so two servers can give the same).
type Conn = Option<(Server, i64)>;

/// Where a write is about to go, read before it is sent: see [`Replicated::before`].
#[derive(Clone)]
pub(super) struct Ticketing {
    route: Route,
    /// The connection serving `route` when the write was sent (`None`: not connected).
    conn: Conn,
    slot: u16,
}

/// One node's group commit.
struct Round {
    /// Tickets handed out on this node so far (writes answered).
    written: u64,
    /// The newest confirmation: the last ticket it covers and the connection it was made on. Written by the
    /// node's round task; every write waiting for its confirmation holds a receiver.
    confirmed: watch::Sender<(u64, Conn)>,
    /// Whether a round task runs for this node (at most one: it is what keeps `WAIT`s from queueing).
    running: bool,
    /// A slot served by the node (where a cluster's `WAIT` is sent).
    slot: u16,
}

/// The connection for writes that must reach replicas, and how many must acknowledge them.
pub(super) struct Replicated {
    /// A second command client of the pod, used only for replicated writes and their `WAIT`. Owned here; its
    /// connection task is in the pod's tasks; Sentinel switches reconnect it.
    pub(super) client: Client,
    /// `redis_wait_replicas`: replicas that must acknowledge (≥ 1 when this exists).
    replicas: i64,
    /// `redis_wait_timeout_ms`: how long a write waits for its confirmation before it goes on unconfirmed.
    pub(super) timeout: Duration,
    cluster: bool,
    /// Each node's group commit. Locked briefly by writers taking tickets and by the round tasks.
    rounds: Mutex<HashMap<Route, Round>>,
    /// Unix ms of the last shortfall warning; one warning per 10 s, not one per write.
    last_warning: AtomicI64,
    /// Writes waiting in the background for a late confirmation ([`Replicated::late`]), bounded by `MAX_LATE`.
    late: AtomicUsize,
}

/// Writes that may wait in the background at once (each holds its batch): past it, a write not confirmed in
/// time is left to resumes and gap repairs (it is logged), not kept waiting to be published.
const MAX_LATE: usize = 10_000;

/// The longest one round's `WAIT` blocks the connection (writes sent behind it wait that long at most).
const ROUND_MS: i64 = 250;

impl Replicated {
    pub(super) fn new(client: Client, replicas: u32, timeout_ms: u64, cluster: bool) -> Replicated {
        Replicated {
            client,
            replicas: i64::from(replicas.max(1)),
            timeout: Duration::from_millis(timeout_ms),
            cluster,
            rounds: Mutex::new(HashMap::new()),
            last_warning: AtomicI64::new(0),
            late: AtomicUsize::new(0),
        }
    }

    fn route(&self, slot: u16) -> Route {
        if !self.cluster {
            return None;
        }
        self.client.cached_cluster_state().and_then(|s| s.get_server(slot).cloned())
    }

    /// The connection serving `route` now. fred records it once the connection is set up and the commands it
    /// had in flight are sent again, so a command sent again on a new connection may be answered while this still
    /// names the old one: rounds are never sent again (see [`Replicated::rounds_for`]).
    fn conn(&self, route: &Route) -> Conn {
        let ids = self.client.connection_ids();
        match route {
            Some(server) => ids.get(server).map(|id| (server.clone(), *id)),
            None => ids.into_iter().next(),
        }
    }

    /// Read just before a write to `key` is sent on [`Replicated::client`].
    pub(super) fn before(&self, key: &str) -> Ticketing {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let route = self.route(slot);
        Ticketing { conn: self.conn(&route), route, slot }
    }

    /// Whether two writes went on the same connection (a read between them was served by it too).
    pub(super) fn same_conn(a: &Ticketing, b: &Ticketing) -> bool {
        a.conn.is_some() && a.route == b.route && a.conn == b.conn
    }

    /// Called once the write's reply is in: waits up to `within` for a round to confirm it.
    pub(super) async fn settle(self: &Arc<Self>, at: &Ticketing, within: Duration) -> Settled {
        let (ticket, mut confirmed) = {
            let mut rounds = self.rounds.lock();
            let round = rounds.entry(at.route.clone()).or_insert_with(|| Round {
                written: 0,
                confirmed: watch::channel((0, None)).0,
                running: false,
                slot: at.slot,
            });
            round.written += 1;
            round.slot = at.slot;
            let rx = round.confirmed.subscribe();
            if !round.running {
                round.running = true;
                tokio::spawn(self.clone().rounds_for(at.route.clone()));
            }
            (round.written, rx)
        };
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let (through, conn) = confirmed.borrow_and_update().clone();
            if at.conn.is_some() && conn == at.conn && through >= ticket {
                return Settled::Confirmed;
            }
            if self.conn(&at.route) != at.conn {
                return Settled::Moved;
            }
            // Woken by each round's confirmation, and at least every round's length to look at the connection.
            let next = deadline.min(tokio::time::Instant::now() + Duration::from_millis(ROUND_MS as u64));
            if tokio::time::timeout_at(next, confirmed.changed()).await.is_err() && next == deadline {
                return Settled::Short;
            }
        }
    }

    /// Runs `settling` (a write's late settling) in the background, unless `MAX_LATE` writes already wait so;
    /// returns whether it was started.
    pub(super) fn late(self: &Arc<Self>, settling: impl std::future::Future<Output = ()> + Send + 'static) -> bool {
        if self.late.fetch_add(1, Ordering::Relaxed) >= MAX_LATE {
            self.late.fetch_sub(1, Ordering::Relaxed);
            return false;
        }
        let this = self.clone();
        // Owned by the runtime; ends when `settling` does (bounded by its own deadline).
        tokio::spawn(async move {
            settling.await;
            this.late.fetch_sub(1, Ordering::Relaxed);
        });
        true
    }

    /// A node's round task: one `WAIT` after another while writes wait for one, then it ends (the next write
    /// starts another).
    async fn rounds_for(self: Arc<Self>, route: Route) {
        loop {
            let (covers, slot) = {
                let mut rounds = self.rounds.lock();
                let Some(round) = rounds.get_mut(&route) else { return };
                let through = round.confirmed.borrow().0;
                if round.written <= through || round.confirmed.receiver_count() == 0 {
                    round.running = false;
                    return;
                }
                (round.written, round.slot)
            };
            if self.route(slot) != route {
                // The slot moved to another node (a resharding): this node's writes are decided as moved.
                tokio::time::sleep(Duration::from_millis(ROUND_MS as u64)).await;
                continue;
            }
            let conn = self.conn(&route);
            // Written once: after a reconnect fred would send it again on the new connection, where it covers none
            // of the old one's writes, and could be answered before `conn` names the new connection.
            let options =
                Options { cluster_hash: Some(ClusterHash::Custom(slot)), max_attempts: Some(1), ..Options::default() };
            let acked = self.client.with_options(&options).wait::<i64>(self.replicas, ROUND_MS).await;
            let problem = match acked {
                // Only a round answered on the connection it was sent on confirms anything.
                Ok(n) if n >= self.replicas && conn.is_some() && self.conn(&route) == conn => {
                    if let Some(round) = self.rounds.lock().get(&route) {
                        round.confirmed.send_modify(|c| *c = (covers, conn.clone()));
                    }
                    continue;
                }
                Ok(n) => format!("{n} of {} replicas acknowledged", self.replicas),
                Err(e) => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    format!("WAIT failed: {e}")
                }
            };
            self.warn_short(&problem);
        }
    }

    fn warn_short(&self, problem: &str) {
        let now = now_ms();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now - last >= 10_000
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            warn!(problem, "replicas behind: durable writes wait for the replicas redis_wait_replicas asks for");
        }
    }
}
