//! Storage and messaging seams. Every trait has two siblings, [`memory`] (one pod, the embedded default) and
//! [`redis`] (the scaled service), chosen in one place ([`Backends::from_config`]) and checked by one generic
//! conformance suite ([`conformance`]) that runs against both.
//!
//! Delivery semantics, stated once:
//! - [`EventLog::append`] assigns a per-session `seq` (1, 2, 3 … without gaps), appends to a bounded log and
//!   publishes `"<seq>:<json>"` on the session's channel in one atomic step ([`EventLog::append_batch`]: several
//!   events, one message of such lines). The log is the truth; the
//!   publish is a wake-up that may be lost (pub/sub is at-most-once), so consumers repair gaps from the log.
//! - [`Bus::publish`] on non-session channels is at-most-once, unordered across publishers.
//! - Confirmation decisions and turn leases are compare-and-set operations: exactly one caller wins.

/// Test-only code: built for the crate's own tests and, with the `conformance` feature, for the integration
/// tests (never in the release library).
#[cfg(any(test, feature = "conformance"))]
pub mod conformance;
pub mod framing;
pub mod idempotency;
pub mod identity;
pub mod lease;
pub mod memory;
pub mod parks;
pub mod quota;
pub mod redis;
pub mod settings;
mod title;
pub mod usage;

use std::sync::Arc;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::broadcast;

use crate::config::Config;
pub use framing::{FramedEvent, SessionBatch};
pub use idempotency::{Claim, IdempotencyStore};
pub use identity::{Contact, IdentityStore, OtpAttempt, OtpCode};
pub use lease::{Checkpoint, Resumed, TakeOver, TurnInfo, TurnLease, LAPSED_RETRY_MS};
pub use parks::{ConfirmStore, Decided, Gate, ParkedTurn, PendingCall};
pub use quota::QuotaStore;
pub use settings::{OrgSettings, SettingsStore};
pub use usage::{UsageEntry, UsageStore};

/// Errors of the storage layer. Converted into a client-safe `INTERNAL_ERROR` at the edge.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    #[error("redis: {0}")]
    Redis(#[from] fred::error::Error),
    #[error("corrupt record: {0}")]
    Corrupt(String),
    #[error("invalid redis_url: {0}")]
    Config(String),
    /// A write that must reach replicas (`redis_wait_replicas`) was not confirmed by them, or was lost by a
    /// change of master: nobody was shown it, and a failover may take it back.
    #[error("not confirmed by replicas: {0}")]
    Unconfirmed(&'static str),
}

pub type BResult<T> = Result<T, BackendError>;

/// A session: one client conversation attached to one agent, owned by one user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SessionRecord {
    pub session_id: String,
    pub conversation_id: String,
    pub agent_id: String,
    pub agent_name: String,
    pub user_id: String,
    pub org_id: String,
    pub user_participant_id: String,
    pub agent_participant_id: String,
    pub created_at_ms: i64,
    /// The REST/orra name of this session when it is one (`POST /api/chat`'s `namespace`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The client's render capabilities (`identity_form`, `choice_chips`, unknown ones kept), declared on
    /// create or inherited from the conversation.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supports: Vec<String>,
}

/// A conversation: the message history a session (or several, over time) talks into.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConversationRecord {
    pub conversation_id: String,
    pub user_id: String,
    pub org_id: String,
    pub agent_id: String,
    pub title: String,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
    pub message_count: u64,
    /// The namespace whose history this is, for conversations of the REST/orra gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// The capabilities the conversation's last session declared; a later session that declares none inherits
    /// them (None: never declared).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub supports: Option<Vec<String>>,
}

/// What the model was told of a conversation's messages before index `upto` (they are no longer replayed).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub upto: u64,
    pub text: String,
}

/// Who wrote a message: `inbound` from the user, `outbound` from the agent (the wire and storage spelling).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Direction {
    Inbound,
    Outbound,
}

/// One stored message of a conversation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredMessage {
    pub id: String,
    pub direction: Direction,
    pub text: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A page of messages, newest first.
#[derive(Debug, Clone, PartialEq)]
pub struct MessagePage {
    pub messages: Vec<StoredMessage>,
    /// Index (from the start of the conversation) of the oldest message on this page, for the next cursor.
    pub oldest_index: u64,
    pub has_more: bool,
}

/// A page of a user's conversations, most recently updated first.
#[derive(Debug, Clone, PartialEq)]
pub struct ConversationPage {
    pub conversations: Vec<ConversationRecord>,
    pub has_more: bool,
}

/// Sessions, conversations and their messages.
#[async_trait]
pub trait SessionStore: Send + Sync {
    /// Stores a new session and, when `new_conversation` is set, its new conversation.
    async fn create_session(
        &self,
        session: &SessionRecord,
        new_conversation: Option<&ConversationRecord>,
    ) -> BResult<()>;
    /// A session by id; refreshes its idle TTL.
    async fn get_session(&self, session_id: &str) -> BResult<Option<SessionRecord>>;
    async fn get_conversation(&self, conversation_id: &str) -> BResult<Option<ConversationRecord>>;
    /// Appends a message, bumps count and `updated_at`; the first inbound message sets an empty title. False
    /// (nothing stored) when the conversation does not exist (expired, deleted, or trimmed past the cap).
    async fn append_message(&self, conversation_id: &str, message: &StoredMessage, now_ms: i64) -> BResult<bool>;
    /// Newest first, `limit` messages strictly older than index `before` (None = from the newest).
    async fn messages_page(&self, conversation_id: &str, before: Option<u64>, limit: usize) -> BResult<MessagePage>;
    /// The last `n` messages, oldest first (history replayed to the model).
    async fn recent_messages(&self, conversation_id: &str, n: usize) -> BResult<Vec<StoredMessage>>;
    /// A user's conversations, most recently updated first, skipping `offset`.
    async fn list_conversations(
        &self,
        org_id: &str,
        user_id: &str,
        offset: usize,
        limit: usize,
    ) -> BResult<ConversationPage>;
    /// Every conversation of an org, most recently updated first, skipping `offset` (the admin API).
    async fn list_org_conversations(&self, org_id: &str, offset: usize, limit: usize) -> BResult<ConversationPage>;
    /// Sets a title; false when the conversation does not exist.
    async fn rename_conversation(&self, conversation_id: &str, title: &str) -> BResult<bool>;
    /// Records the capabilities a new session of the conversation declared; false when it does not exist.
    async fn set_conversation_supports(&self, conversation_id: &str, supports: &[String]) -> BResult<bool>;
    /// The summary of the conversation's older messages (`turn.summarize`), if one was made.
    async fn summary(&self, conversation_id: &str) -> BResult<Option<Summary>>;
    /// Stores the summary (replacing an older one); false when the conversation does not exist.
    async fn set_summary(&self, conversation_id: &str, summary: &Summary) -> BResult<bool>;
    /// Deletes a session and its conversation with everything they hold: the session record, its logged
    /// events (the seq counter stays, so a socket still attached, or the namespace used again, goes on after the
    /// last seq instead of seeing low seqs as duplicates), a parked turn and recorded decisions, the conversation, its messages and its place in the
    /// owner's list. The caller has ended any running turn first. Deleting what does not exist is not an error.
    async fn delete_session(&self, session: &SessionRecord) -> BResult<()>;
}

/// The per-session ordered event log, with publish on append.
#[async_trait]
pub trait EventLog: Send + Sync {
    /// Assigns the next `seq`, appends `event` (a JSON object as text), trims to the configured length and
    /// publishes `"<seq>:<event>"` on [`Channel::Session`], atomically. Returns the seq. An
    /// [`append_batch`](EventLog::append_batch) of one: backends implement that alone.
    async fn append(&self, session_id: &str, event: &str) -> BResult<u64> {
        self.append_batch(session_id, vec![event.to_string()]).await
    }
    /// Appends several events atomically with consecutive seqs and publishes them as one bus message (a
    /// `"<first seq>:<epoch>"` line, then the events: see `framing.rs`). Returns the first seq (0 for an empty
    /// batch). An unguarded
    /// [`append_guarded`](EventLog::append_guarded).
    async fn append_batch(&self, session_id: &str, events: Vec<String>) -> BResult<u64> {
        self.append_guarded(session_id, events, Guard::None)
            .await?
            .ok_or_else(|| BackendError::Corrupt("an unguarded append was refused".into()))
    }
    /// [`append_batch`](EventLog::append_batch) if `guard` holds, checked in the same atomic step; `None` when
    /// it does not (nothing appended). A turn's emitter uses it to group events produced while the previous
    /// append was in flight (group commit), fenced by the turn's lease. Backends implement this alone.
    async fn append_guarded(&self, session_id: &str, events: Vec<String>, guard: Guard<'_>) -> BResult<Option<u64>>;
    /// Events with `seq > after`, oldest first, at most `max`.
    async fn read_after(&self, session_id: &str, after: u64, max: usize) -> BResult<Vec<(u64, String)>>;
    /// `(oldest retained seq, latest seq)`; `(0, 0)` for a session with no events yet.
    async fn bounds(&self, session_id: &str) -> BResult<(u64, u64)>;
    /// The log's epoch: a random id created with the seq counter (by the first append after the counter did
    /// not exist). A counter that restarted (the log was lost: a flushed Redis, a failover to an empty
    /// replica) has a new epoch, so a `seq` is only comparable with another of the same epoch. `None` before
    /// the first event. The bus carries it on every session message (`"<first seq>:<epoch>"`, then the events).
    async fn epoch(&self, session_id: &str) -> BResult<Option<String>>;
}

/// Who may append to a session's log, checked atomically with the append against the session's turn lease
/// ([`TurnLease`]). Fencing a turn's events by its lease is what keeps "exactly one terminal event per turn"
/// under faults: a turn that stalled past its lease (and was ended by another pod's sweeper) can add nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Guard<'a> {
    /// Anyone: user messages, publishes, a decision's echo.
    None,
    /// Only while this turn id holds the lease: a running turn's events.
    Holder(&'a str),
    /// Only while this turn id holds the lease, which is freed (with the turn record and its checkpoint) in the same step: the
    /// turn's terminal event, so a client answering it at once is never told `TURN_IN_PROGRESS`.
    Release(&'a str),
    /// Only when no lease is live and the turn record is this turn id's, which is forgotten (with its checkpoint) in the same
    /// step:
    /// the sweeper's `TURN_INTERRUPTED` for a turn whose pod stopped renewing. A retry after an unknown
    /// outcome cannot end the turn twice.
    Lapsed(&'a str),
    /// Only while the session's record exists: an event another service publishes (`/admin/publish`), checked
    /// in the same step as the append, so a deleted or expired session's log is never brought back.
    Live,
    /// Only when no lease runs, there is no turn record at all (neither a turn a sweeper can claim nor what an
    /// ending leaves in its place) and the session exists: the ending of the request named here by a turn that
    /// found its lease gone and its state with it (a Redis failover took back writes its replica never had), which
    /// no sweeper could ever find. Leaves an ending's mark, so it holds once.
    Orphan(&'a str),
}

/// A pub/sub address. Session channels carry batches of logged events (`framing.rs`); all others carry the JSON
/// event as is.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Channel {
    Session(String),
    /// A user's channel, keyed by [`user_key`] (org and user: the same `sub` in two orgs is two users).
    User(String),
    Org(String),
    Agent(String),
    /// One pod's control channel: cancel requests, connection-targeted publishes.
    Pod(String),
    /// Liveness canary: each pod publishes to itself to prove the bus delivers.
    Canary(String),
}

/// One key for a user of an org (channels, indexes): the org (with `%` and `/` escaped), `/`, the user id.
pub fn user_key(org_id: &str, user_id: &str) -> String {
    format!("{}/{user_id}", org_id.replace('%', "%25").replace('/', "%2F"))
}

impl Channel {
    /// The channel of user `user_id` in org `org_id`.
    pub fn user(org_id: &str, user_id: &str) -> Channel {
        Channel::User(user_key(org_id, user_id))
    }

    /// The Redis channel name. Session channels carry the session hash tag so they shard with its keys.
    pub fn name(&self, prefix: &str) -> String {
        match self {
            Channel::Session(id) => format!("{prefix}:{{{id}}}:events"),
            Channel::User(id) => format!("{prefix}:user:{id}"),
            Channel::Org(id) => format!("{prefix}:org:{id}"),
            Channel::Agent(id) => format!("{prefix}:agent:{id}"),
            Channel::Pod(id) => format!("{prefix}:pod:{id}"),
            Channel::Canary(id) => format!("{prefix}:canary:{id}"),
        }
    }

    /// Inverse of [`Channel::name`].
    pub fn parse(prefix: &str, name: &str) -> Option<Channel> {
        let rest = name.strip_prefix(prefix)?.strip_prefix(':')?;
        if let Some(tagged) = rest.strip_prefix('{') {
            let (id, tail) = tagged.split_once('}')?;
            return (tail == ":events").then(|| Channel::Session(id.to_string()));
        }
        let (kind, id) = rest.split_once(':')?;
        let id = id.to_string();
        Some(match kind {
            "user" => Channel::User(id),
            "org" => Channel::Org(id),
            "agent" => Channel::Agent(id),
            "pod" => Channel::Pod(id),
            "canary" => Channel::Canary(id),
            _ => return None,
        })
    }
}

/// What a pod's bus receiver yields.
#[derive(Debug, Clone)]
pub enum BusEvent {
    /// A message on a channel other than a session's.
    Message { channel: Channel, payload: Arc<str> },
    /// A session channel's message: a batch of logged events, decoded by the backend ([`framing`]).
    Session {
        /// `Channel::Session` of `session_id`.
        channel: Channel,
        session_id: Arc<str>,
        batch: SessionBatch,
    },
    /// The connection to the broker was re-established (subscriptions restored): messages may have been lost,
    /// so session consumers must repair from the log.
    Resubscribed,
}

/// One pod's view of the message bus. Subscriptions are per pod; the hub counts local sockets.
#[async_trait]
pub trait Bus: Send + Sync {
    /// At-most-once publish.
    async fn publish(&self, channel: &Channel, payload: &str) -> BResult<()>;
    async fn subscribe(&self, channel: &Channel) -> BResult<()>;
    /// Subscribes to all of `channels` (idempotent for those already subscribed), in as few round trips as the
    /// backend allows: the hub restores thousands of channels at once after a reconnect.
    async fn subscribe_many(&self, channels: &[Channel]) -> BResult<()> {
        for channel in channels {
            self.subscribe(channel).await?;
        }
        Ok(())
    }
    async fn unsubscribe(&self, channel: &Channel) -> BResult<()>;
    /// Unsubscribes from all of `channels` in as few round trips as the backend allows: a socket that followed
    /// thousands of sessions closes without stalling the pod's other attaches behind one round trip each.
    async fn unsubscribe_many(&self, channels: &[Channel]) -> BResult<()> {
        for channel in channels {
            self.unsubscribe(channel).await?;
        }
        Ok(())
    }
    /// Every message for this pod's subscriptions. A `Lagged` receive means messages were dropped locally:
    /// treat it as [`BusEvent::Resubscribed`] (repair from the log), never as the end of the stream.
    fn receiver(&self) -> broadcast::Receiver<BusEvent>;
    /// False while the pod's bus connection is down or its subscriptions are being restored: messages
    /// published meanwhile do not reach this pod (readiness). Checked without I/O.
    fn delivering(&self) -> bool {
        true
    }
}

/// A live socket as seen by the registry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SocketEntry {
    pub connection_id: String,
    pub pod_id: String,
    pub user_id: String,
    pub org_id: String,
    pub sessions: Vec<String>,
    pub agents: Vec<String>,
    pub connected_at_ms: i64,
}

/// Filter for [`Registry::list`].
#[derive(Debug, Clone, Default)]
pub struct SocketFilter {
    pub session: Option<String>,
    pub user: Option<String>,
    pub org: Option<String>,
    pub connection: Option<String>,
}

/// Live sockets of every pod (heartbeat TTL, so a dead pod's entries expire). Every write costs the same
/// whatever number of sessions the socket follows: a socket with 10,000 sessions heartbeats like one with one.
#[async_trait]
pub trait Registry: Send + Sync {
    /// Registers or refreshes a socket (its heartbeat), keeping the sessions recorded by
    /// [`attach`](Registry::attach); `entry.sessions` is not read.
    async fn upsert(&self, entry: &SocketEntry, ttl_ms: u64) -> BResult<()>;
    /// Records that a registered socket follows a session.
    async fn attach(&self, connection_id: &str, session_id: &str, ttl_ms: u64) -> BResult<()>;
    async fn remove(&self, connection_id: &str) -> BResult<()>;
    /// Live sockets matching `filter`, each with the sessions it follows.
    async fn list(&self, filter: &SocketFilter, max: usize) -> BResult<Vec<SocketEntry>>;
    /// How many live sockets one user holds on every pod.
    async fn count_user(&self, org_id: &str, user_id: &str) -> BResult<usize>;
    /// The socket no longer acts as `user_id` of `org_id` (it took another identity): it leaves that user's
    /// and org's indexes now, not when its old heartbeat would have lapsed. The next upsert lists it anew.
    async fn forget_identity(&self, connection_id: &str, org_id: &str, user_id: &str) -> BResult<()>;
}

/// All backends of one pod.
#[derive(Clone)]
pub struct Backends {
    pub sessions: Arc<dyn SessionStore>,
    pub log: Arc<dyn EventLog>,
    pub bus: Arc<dyn Bus>,
    pub confirms: Arc<dyn ConfirmStore>,
    pub leases: Arc<dyn TurnLease>,
    pub registry: Arc<dyn Registry>,
    /// Liveness of the backend connection for `/readyz` (memory: always true).
    pub health: Arc<dyn Health>,
    /// Idempotency keys of retried requests (`POST /admin/publish`).
    pub idempotency: Arc<dyn IdempotencyStore>,
    /// Cluster-wide quota counters (messages per user per minute).
    pub quotas: Arc<dyn QuotaStore>,
    /// What each session knows about its person: contact, OTP codes, the verified flag.
    pub identity: Arc<dyn IdentityStore>,
    /// Per-org overrides set through the admin API (model, system prompt).
    pub settings: Arc<dyn SettingsStore>,
    /// Tokens and cost per org, user, model and day; an org's spend per month.
    pub usage: Arc<dyn UsageStore>,
}

/// Readiness of the storage connection.
#[async_trait]
pub trait Health: Send + Sync {
    async fn ping(&self) -> bool;
}

impl Backends {
    /// Backends served by one store type that implements every storage trait, plus a pod's bus.
    pub fn from_store<S>(store: Arc<S>, bus: Arc<dyn Bus>, idempotency: Arc<dyn IdempotencyStore>) -> Backends
    where
        S: SessionStore
            + EventLog
            + ConfirmStore
            + TurnLease
            + Registry
            + Health
            + QuotaStore
            + IdentityStore
            + SettingsStore
            + UsageStore
            + 'static,
    {
        Backends {
            sessions: store.clone(),
            log: store.clone(),
            bus,
            confirms: store.clone(),
            leases: store.clone(),
            registry: store.clone(),
            quotas: store.clone(),
            identity: store.clone(),
            settings: store.clone(),
            usage: store.clone(),
            health: store,
            idempotency,
        }
    }

    /// The one place a backend is chosen: empty `redis_url` = memory, else Redis.
    pub async fn from_config(config: &Config) -> BResult<Backends> {
        if config.redis_url.is_empty() {
            Ok(memory::MemoryBackend::new(config).backends())
        } else {
            redis::connect(config).await
        }
    }
}

pub(crate) use title::title_from;
