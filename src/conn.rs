//! One socket's state as the action handlers see it ([`Conn`]): who it is, which sessions and agents it is
//! attached to, and its handle in the hub. Owned by the socket's task ([`crate::ws`]), lent to
//! [`crate::handlers`] for one frame at a time; neither of those two modules is imported here.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::app::App;
use crate::auth::Identity;
use crate::backend::{Channel, SocketEntry};
use crate::error::{ClientError, ErrorCode};
use crate::hub::{ConnHandle, Handle, Outbound};
use crate::protocol::outbound as out;
use crate::queue::OutQueue;
use crate::util::now_ms;

/// Per-connection state used by the handlers.
pub(crate) struct Conn {
    pub app: Arc<App>,
    pub identity: Identity,
    pub extended: bool,
    /// This socket in the hub: its queue (the socket's task is the only consumer) and its slow-consumer token
    /// (cancelled by the hub, watched by the socket's task).
    pub handle: ConnHandle,
    /// Sessions this socket is attached to (receives their logged events); at most
    /// `limits.sessions_per_connection`. A set: an attach costs the same with 10,000 as with one.
    pub sessions: HashSet<String>,
    pub agents: Vec<String>,
    pub connected_at_ms: i64,
    /// Turns started from this socket in the last minute (rate limit); only the socket's task touches it.
    pub(crate) recent_sends: crate::util::MinuteWindow,
    /// The protocol this socket speaks, chosen by its first frame.
    pub dialect: Dialect,
    /// The page's `Origin` at the upgrade (browsers always send one), checked against an agent's
    /// `allowed_origins` on every action of its sessions.
    pub origin: Option<String>,
    /// This socket's frame budget (`limits.frames_per_connection_per_s`, `limits.frames_burst`); only the
    /// socket's task touches it.
    frames: crate::util::TokenBucket,
}

/// A socket's protocol: smooth-operator (`{"action": …}` frames) or orra (`{"type": …}`), for its whole life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Dialect {
    Undecided,
    SmoothOperator,
    Orra,
}

/// Process-wide socket numbers (the hub's route keys; cheaper than the global id).
static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// A fresh route key for the hub (sockets, and the gateway's session watchers).
pub(crate) fn next_socket_id() -> u64 {
    NEXT_CONN.fetch_add(1, Ordering::Relaxed)
}

impl Conn {
    /// A new socket: its queue and hub handle, its user and org channels, its registry entry.
    /// `connection_id` already holds one of the identity's socket places (taken at the upgrade).
    pub(crate) async fn open(
        app: Arc<App>,
        identity: Identity,
        connection_id: Arc<str>,
        extended: bool,
        origin: Option<String>,
    ) -> Conn {
        let handle = ConnHandle::new(Handle {
            id: next_socket_id(),
            connection_id,
            queue: Arc::new(OutQueue::new(app.config.limits.outbound_queue)),
            slow: app.lifecycle.socket_token(),
            watcher: false,
        });
        app.metrics.connection_opened();
        app.hub.register_connection(&handle);
        let conn = Conn {
            app: app.clone(),
            identity,
            extended,
            handle,
            sessions: HashSet::new(),
            agents: Vec::new(),
            connected_at_ms: now_ms(),
            recent_sends: Default::default(),
            dialect: Dialect::Undecided,
            origin,
            frames: crate::util::TokenBucket::full(app_burst(&app), now_ms()),
        };
        for channel in
            [Channel::user(&conn.identity.org_id, &conn.identity.user_id), Channel::Org(conn.identity.org_id.clone())]
        {
            if let Err(e) = conn.app.hub.attach(&channel, &conn.handle).await {
                tracing::warn!(error = %e, "could not subscribe user/org channel");
            }
        }
        conn.register().await;
        conn
    }

    /// From now on this socket acts as `who` (a verified widget `authContext` or `resumeToken`): it follows
    /// that user's and org's channels instead of the previous identity's, is listed under it, and holds one of
    /// its socket places (`RATE_LIMITED` when they are all held, and nothing changes).
    pub(crate) async fn act_as(&mut self, who: Identity) -> Result<(), ClientError> {
        if self.identity.user_id == who.user_id && self.identity.org_id == who.org_id {
            return Ok(());
        }
        let who = who.seen_from(self.identity.address);
        let id = self.handle.connection_id.clone();
        if !self.app.turns.hold_socket(&who, &id, REGISTRY_TTL_MS).await? {
            return Err(ClientError::rate_limited(
                "too many open connections for this user (limits.sockets_per_user)",
                REGISTRY_TTL_MS,
            ));
        }
        self.app.turns.release_socket(&self.identity, &id).await;
        let old =
            [Channel::user(&self.identity.org_id, &self.identity.user_id), Channel::Org(self.identity.org_id.clone())];
        self.app.hub.detach_all(self.handle.id, &id, &old).await;
        self.app.hub.register_connection(&self.handle);
        if let Err(e) =
            self.app.backends.registry.forget_identity(&id, &self.identity.org_id, &self.identity.user_id).await
        {
            tracing::warn!(error = %e, "socket registry update failed");
        }
        self.identity = who;
        for channel in
            [Channel::user(&self.identity.org_id, &self.identity.user_id), Channel::Org(self.identity.org_id.clone())]
        {
            if let Err(e) = self.app.hub.attach(&channel, &self.handle).await {
                tracing::warn!(error = %e, "could not subscribe the new identity's channels");
            }
        }
        self.register().await;
        Ok(())
    }

    /// Takes one frame from this socket's budget; `RATE_LIMITED` with the wait when it is spent.
    pub(crate) fn take_frame(&mut self) -> Result<(), ClientError> {
        let limits = &self.app.config.limits;
        let (rate, burst) = (limits.frames_per_connection_per_s, limits.frames_burst);
        self.frames.take(now_ms(), rate, burst).map_err(|wait| {
            ClientError::rate_limited(
                format!("more than {rate} frames per second on this connection (limits.frames_per_connection_per_s)"),
                wait,
            )
        })
    }

    /// The socket's periodic renewal: its registry entry and its socket place.
    pub(crate) async fn heartbeat(&self) {
        self.register().await;
        if let Err(e) = self.app.turns.hold_socket(&self.identity, &self.handle.connection_id, REGISTRY_TTL_MS).await {
            tracing::warn!(error = %e.detail.unwrap_or(e.message), "could not renew the socket's place");
        }
    }

    /// The socket is gone: off every channel, out of the registry.
    pub(crate) async fn close(self) {
        let app = &self.app;
        app.hub.detach_all(self.handle.id, &self.handle.connection_id, &self.channels()).await;
        let _ = app.backends.registry.remove(&self.handle.connection_id).await;
        app.turns.release_socket(&self.identity, &self.handle.connection_id).await;
        app.metrics.connection_closed(self.sessions.len());
    }

    /// Decides the dialect on the first frame: an object with `type` and no `action` is orra.
    pub(crate) fn dialect_for(&mut self, text: &str) -> Dialect {
        if self.dialect == Dialect::Undecided {
            let orra = serde_json::from_str::<serde_json::Value>(text)
                .ok()
                .and_then(|v| v.as_object().map(|o| o.contains_key("type") && !o.contains_key("action")))
                .unwrap_or(false);
            self.dialect = if orra { Dialect::Orra } else { Dialect::SmoothOperator };
        }
        self.dialect
    }

    /// Counts a turn against this socket's per-minute budget (`limits.messages_per_minute`); true when spent.
    pub(crate) fn rate_limited(&mut self) -> bool {
        !self.recent_sends.take(now_ms(), self.app.config.limits.messages_per_minute as usize)
    }

    /// Undoes the last [`Conn::rate_limited`] count: a message refused because a turn is running did nothing,
    /// and a client retrying until the turn ends must not run out of budget for its real message.
    pub(crate) fn refund_send(&mut self) {
        self.recent_sends.give_back();
    }

    /// A reply to the asking socket only (not logged).
    pub(crate) fn reply(&self, frame: &serde_json::Value) {
        self.handle.offer(Outbound::Frame(Arc::from(frame.to_string())), &self.app.metrics);
    }

    pub(crate) fn reply_error(&self, request_id: Option<&str>, e: &ClientError) {
        self.app.metrics.error(e.code);
        e.log_at_edge("socket reply");
        self.reply(&out::error(request_id, e));
    }

    /// `RATE_LIMITED` once this socket follows `limits.sessions_per_connection` sessions (checked before a
    /// session is created for it, so a refused create leaves nothing behind).
    pub(crate) fn may_follow_another_session(&self) -> Result<(), ClientError> {
        let quota = self.app.config.limits.sessions_per_connection;
        if self.sessions.len() >= quota {
            return Err(ClientError::new(
                ErrorCode::RateLimited,
                format!("this connection already follows {quota} sessions (limits.sessions_per_connection)"),
            ));
        }
        Ok(())
    }

    /// Attaches this socket to a session's events from `after` (None = from now). `after` is a seq and the
    /// log epoch it counts in, as the caller read them (a resume has both at hand).
    pub(crate) async fn attach_session(
        &mut self,
        session_id: &str,
        after: Option<(u64, Option<String>)>,
    ) -> Result<(), ClientError> {
        let sid: Arc<str> = Arc::from(session_id);
        let attached = self.sessions.contains(session_id);
        if attached && after.is_none() {
            return Ok(());
        }
        if !attached {
            self.may_follow_another_session()?;
        }
        let channel = Channel::Session(session_id.to_string());
        // The position counts in the log's epoch: a socket placed at seq 9 of one log must not take seq 1 of
        // the next as a duplicate.
        let log = &self.app.backends.log;
        let (position, epoch) = match after {
            Some(known) => known,
            None => {
                let (bounds, epoch) = tokio::join!(log.bounds(session_id), log.epoch(session_id));
                (bounds?.1, epoch?)
            }
        };
        let epoch = epoch.map(Arc::from);
        self.handle.offer(Outbound::set_cursor(sid.clone(), position, epoch), &self.app.metrics);
        if !attached {
            // Marked attached only once subscribed: a failed subscribe leaves the session unattached, so the
            // client's retry subscribes again instead of finding it "attached" and deaf.
            self.app.hub.attach(&channel, &self.handle).await?;
            self.sessions.insert(session_id.to_string());
            self.app.metrics.session_attached();
            // One registry write for this session, never a rewrite of the socket's whole list.
            let id = &self.handle.connection_id;
            if let Err(e) = self.app.backends.registry.attach(id, session_id, REGISTRY_TTL_MS).await {
                tracing::warn!(error = %e, "socket registry update failed");
            }
        }
        // Anything appended between reading the position and the hub registration is read back here, and no
        // further: later events arrive live, in order with this socket's replies.
        let latest = self.app.backends.log.bounds(session_id).await?.1;
        if latest > position {
            self.handle.offer(Outbound::catch_up(sid, Some(latest)), &self.app.metrics);
        }
        Ok(())
    }

    pub(crate) async fn attach_agent(&mut self, agent_id: &str) -> Result<(), ClientError> {
        if !self.agents.iter().any(|a| a == agent_id) {
            crate::util::push_sparing(&mut self.agents, agent_id.to_string());
            let channel = Channel::Agent(agent_id.to_string());
            self.app.hub.attach(&channel, &self.handle).await?;
            self.register().await;
        }
        Ok(())
    }

    /// Every channel this socket may be routed on (detaching one it is not on is harmless).
    fn channels(&self) -> Vec<Channel> {
        let mut out = vec![
            Channel::user(&self.identity.org_id, &self.identity.user_id),
            Channel::Org(self.identity.org_id.clone()),
        ];
        out.extend(self.sessions.iter().map(|s| Channel::Session(s.clone())));
        out.extend(self.agents.iter().map(|a| Channel::Agent(a.clone())));
        out
    }

    fn entry(&self) -> SocketEntry {
        SocketEntry {
            connection_id: self.handle.connection_id.to_string(),
            pod_id: self.app.pod_id.clone(),
            user_id: self.identity.user_id.clone(),
            org_id: self.identity.org_id.clone(),
            // Recorded per attach (`Registry::attach`); the heartbeat does not carry them.
            sessions: Vec::new(),
            agents: self.agents.clone(),
            connected_at_ms: self.connected_at_ms,
        }
    }

    /// Registry entry with a TTL of three heartbeats, so a dead pod's sockets disappear.
    pub(crate) async fn register(&self) {
        if let Err(e) = self.app.backends.registry.upsert(&self.entry(), REGISTRY_TTL_MS).await {
            tracing::warn!(error = %e, "socket registry update failed");
        }
    }
}

fn app_burst(app: &App) -> u32 {
    app.config.limits.frames_burst
}

/// Registry entries live three heartbeats (the socket task renews every third of this), so a dead pod's
/// sockets disappear.
pub(crate) const REGISTRY_TTL_MS: u64 = 30_000;
