//! In-memory backends: the embedded default (one pod, nothing to install) and the reference behaviour the
//! Redis backends must match. Several [`MemoryBackend::backends`] handles share one state, which lets the
//! conformance suite play several pods without Redis.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;
use tokio::sync::broadcast;

use super::*;
use crate::util::now_ms;

mod identity;
mod log;
mod settings;
mod sockets;
mod turns;

/// Shared state of all memory "pods" built from one [`MemoryBackend`].
#[derive(Clone)]
pub struct MemoryBackend {
    shared: Arc<Shared>,
    /// Idempotency keys, shared by every pod of this backend.
    idempotency: Arc<super::idempotency::MemoryIdempotency>,
}

struct Shared {
    log_len: usize,
    idle_ttl_ms: i64,
    /// `session.conversation_ttl_s` in ms.
    conversation_ttl_ms: i64,
    /// `session.conversation_max_messages`.
    conversation_max_messages: usize,
    /// `session.empty_conversation_ttl_s` in ms: a conversation's retention until its first message.
    empty_conversation_ttl_ms: i64,
    /// `session.conversations_per_user`.
    conversations_per_user: usize,
    /// Everything stored, behind one lock shared by every "pod" of this backend (held only for a map
    /// operation, never across an await); publishing happens under it so bus order equals log order.
    state: Mutex<State>,
    /// Per-pod broadcast senders, keyed by bus handle id; the receivers belong to each pod's hub.
    pods: Mutex<HashMap<u64, broadcast::Sender<BusEvent>>>,
    next_pod: AtomicU64,
}

/// (org, day, user, model).
type UsageKey = (String, String, String, String);

#[derive(Default)]
struct State {
    sessions: HashMap<String, (SessionRecord, i64)>,
    conversations: HashMap<String, ConversationRecord>,
    /// When each conversation was created or last got a message (its retention counts from there).
    conversation_used_ms: HashMap<String, i64>,
    /// Conversation → (messages trimmed off its start, the newest `session.conversation_max_messages`).
    messages: HashMap<String, (u64, Vec<StoredMessage>)>,
    logs: HashMap<String, LogState>,
    /// channel → subscribed bus handle ids.
    subs: HashMap<Channel, HashSet<u64>>,
    parked: HashMap<String, ParkedTurn>,
    decided: HashMap<String, HashMap<String, (bool, String)>>,
    last_decision: HashMap<String, (String, bool, String)>,
    leases: HashMap<String, (TurnInfo, i64)>,
    /// Turn records outlive the lease so a lapsed turn can be ended: session → (info, lease deadline).
    turns: HashMap<String, (TurnInfo, i64)>,
    /// Sessions whose last turn ended (a record's tombstone in Redis): [`Guard::Orphan`] holds only where the
    /// session has neither a record nor this.
    ended: HashSet<String>,
    /// Session → its running turn's last durable step: (turn id, the checkpoint).
    steps: HashMap<String, (String, Checkpoint)>,
    registry: HashMap<String, (SocketEntry, i64)>,
    /// Session → its person's contact and verification.
    contacts: HashMap<String, Contact>,
    /// Org → its admin-set overrides.
    settings: HashMap<String, OrgSettings>,
    /// Deployment-wide secrets (`SettingsStore::deployment_key`), for the process's life.
    deployment_keys: HashMap<String, Vec<u8>>,
    /// Conversation → the summary of its older messages.
    summaries: HashMap<String, Summary>,
    /// (org, day, user, model) → (input tokens, output tokens, micro-USD).
    usage: HashMap<UsageKey, (u64, u64, u64)>,
    /// (org, month) → micro-USD spent.
    spend: HashMap<(String, String), u64>,
    /// Session → its issued OTP code and the attempts used on it.
    otp_codes: HashMap<String, (OtpCode, u32)>,
    /// Hold key → holder → until (Unix ms): places held, e.g. a user's running turns.
    holds: HashMap<String, HashMap<String, i64>>,
    /// Quota key → (window length ms, window index, uses counted in it).
    quotas: HashMap<String, (u64, i64, u64)>,
    last_purge_ms: i64,
}

struct LogState {
    latest: u64,
    entries: VecDeque<(u64, String)>,
    touched_ms: i64,
    /// Created with the log (see [`EventLog::epoch`]).
    epoch: String,
}

impl Default for LogState {
    fn default() -> Self {
        LogState { latest: 0, entries: VecDeque::new(), touched_ms: 0, epoch: crate::util::new_epoch() }
    }
}

impl MemoryBackend {
    pub fn new(config: &Config) -> Self {
        Self {
            shared: Arc::new(Shared {
                log_len: config.limits.log_len,
                idle_ttl_ms: (config.session.idle_ttl_s as i64).saturating_mul(1000),
                conversation_ttl_ms: i64::try_from(config.session.conversation_ttl_s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
                conversation_max_messages: config.session.conversation_max_messages.max(1),
                empty_conversation_ttl_ms: i64::try_from(config.session.empty_conversation_ttl_s)
                    .unwrap_or(i64::MAX)
                    .saturating_mul(1000),
                conversations_per_user: config.session.conversations_per_user.max(1),
                state: Mutex::new(State::default()),
                pods: Mutex::new(HashMap::new()),
                next_pod: AtomicU64::new(1),
            }),
            idempotency: super::idempotency::MemoryIdempotency::new(),
        }
    }

    /// One pod's set of backends. Each call creates a new bus handle with its own subscriptions.
    pub fn backends(&self) -> Backends {
        let id = self.shared.next_pod.fetch_add(1, Ordering::Relaxed);
        let (tx, _) = broadcast::channel(4096);
        self.shared.pods.lock().insert(id, tx.clone());
        let store = Arc::new(MemoryStore { shared: self.shared.clone() });
        let bus = Arc::new(MemoryBus { shared: self.shared.clone(), id, tx });
        Backends::from_store(store, bus, self.idempotency.clone())
    }
}

impl Shared {
    fn deliver(&self, state: &State, channel: &Channel, payload: &str) {
        let Some(ids) = state.subs.get(channel) else {
            return;
        };
        let pods = self.pods.lock();
        let payload: Arc<str> = Arc::from(payload);
        for id in ids {
            if let Some(tx) = pods.get(id) {
                let _ = tx.send(BusEvent::from_wire(channel.clone(), payload.clone()));
            }
        }
    }

    /// Whether a conversation is within `session.conversation_ttl_s` of its last message (or, with no message
    /// yet, within `session.empty_conversation_ttl_s` of its creation).
    fn conversation_live(&self, st: &State, conversation_id: &str, now: i64) -> bool {
        let empty = st.conversations.get(conversation_id).is_none_or(|c| c.message_count == 0);
        let ttl =
            if empty { self.empty_conversation_ttl_ms.min(self.conversation_ttl_ms) } else { self.conversation_ttl_ms };
        st.conversation_used_ms.get(conversation_id).is_some_and(|t| now - t < ttl)
    }

    /// Past `session.conversations_per_user`, the owner's least recently used conversations go (as Redis trims
    /// the owner's index when one is created).
    fn trim_owner(&self, st: &mut State, org_id: &str, user_id: &str, now: i64) {
        let mut mine: Vec<(i64, String)> = st
            .conversations
            .values()
            .filter(|c| c.org_id == org_id && c.user_id == user_id)
            .filter(|c| self.conversation_live(st, &c.conversation_id, now))
            .map(|c| (st.conversation_used_ms.get(&c.conversation_id).copied().unwrap_or(0), c.conversation_id.clone()))
            .collect();
        let excess = mine.len().saturating_sub(self.conversations_per_user);
        mine.sort();
        for (_, cid) in mine.into_iter().take(excess) {
            st.conversations.remove(&cid);
            st.conversation_used_ms.remove(&cid);
            st.messages.remove(&cid);
        }
    }

    /// A page of an org's conversations (one user's, or all), most recently updated first.
    fn conversations_page(&self, org_id: &str, user_id: Option<&str>, offset: usize, limit: usize) -> ConversationPage {
        let now = now_ms();
        let st = self.state.lock();
        let mut mine: Vec<&ConversationRecord> = st
            .conversations
            .values()
            .filter(|c| c.org_id == org_id && user_id.is_none_or(|u| c.user_id == u))
            .filter(|c| self.conversation_live(&st, &c.conversation_id, now))
            .collect();
        mine.sort_by(|a, b| {
            b.updated_at_ms.cmp(&a.updated_at_ms).then_with(|| b.conversation_id.cmp(&a.conversation_id))
        });
        let conversations: Vec<ConversationRecord> =
            mine.iter().skip(offset).take(limit).map(|c| (*c).clone()).collect();
        let has_more = mine.len() > offset + conversations.len();
        ConversationPage { conversations, has_more }
    }

    /// Drops idle sessions, logs and decisions (at most once a minute, on writes).
    fn purge(&self, st: &mut State, now: i64) {
        if now - st.last_purge_ms < 60_000 {
            return;
        }
        st.last_purge_ms = now;
        let ttl = self.idle_ttl_ms;
        st.sessions.retain(|_, (_, t)| now - *t < ttl);
        st.logs.retain(|_, l| now - l.touched_ms < ttl);
        let live: HashSet<String> =
            st.conversations.keys().filter(|cid| self.conversation_live(st, cid, now)).cloned().collect();
        st.conversation_used_ms.retain(|cid, _| live.contains(cid));
        st.conversations.retain(|cid, _| live.contains(cid));
        let kept: HashSet<String> = st.conversations.keys().cloned().collect();
        st.messages.retain(|cid, _| kept.contains(cid));
        st.registry.retain(|_, (_, d)| *d > now);
        let live: HashSet<String> = st.sessions.keys().cloned().collect();
        st.decided.retain(|k, _| live.contains(k));
        st.last_decision.retain(|k, _| live.contains(k));
        st.contacts.retain(|k, _| live.contains(k));
        st.otp_codes.retain(|k, (c, _)| live.contains(k) && c.expires_at_ms + ttl > now);
    }
}

struct MemoryStore {
    shared: Arc<Shared>,
}

#[async_trait]
impl SessionStore for MemoryStore {
    async fn create_session(&self, session: &SessionRecord, conv: Option<&ConversationRecord>) -> BResult<()> {
        let now = now_ms();
        let mut st = self.shared.state.lock();
        self.shared.purge(&mut st, now);
        st.sessions.insert(session.session_id.clone(), (session.clone(), now));
        if let Some(c) = conv {
            st.conversations.insert(c.conversation_id.clone(), c.clone());
            st.conversation_used_ms.insert(c.conversation_id.clone(), now);
            self.shared.trim_owner(&mut st, &c.org_id, &c.user_id, now);
        }
        Ok(())
    }

    async fn get_session(&self, session_id: &str) -> BResult<Option<SessionRecord>> {
        let now = now_ms();
        let ttl = self.shared.idle_ttl_ms;
        let mut st = self.shared.state.lock();
        match st.sessions.get_mut(session_id) {
            Some((rec, touched)) if now - *touched < ttl => {
                *touched = now;
                let rec = rec.clone();
                // The log lives as long as its session (a seq must not restart under a live session).
                if let Some(log) = st.logs.get_mut(session_id) {
                    log.touched_ms = now;
                }
                Ok(Some(rec))
            }
            _ => Ok(None),
        }
    }

    async fn get_conversation(&self, conversation_id: &str) -> BResult<Option<ConversationRecord>> {
        let st = self.shared.state.lock();
        if !self.shared.conversation_live(&st, conversation_id, now_ms()) {
            return Ok(None);
        }
        Ok(st.conversations.get(conversation_id).cloned())
    }

    async fn append_message(&self, conversation_id: &str, message: &StoredMessage, now: i64) -> BResult<bool> {
        let mut st = self.shared.state.lock();
        if !self.shared.conversation_live(&st, conversation_id, now_ms()) {
            return Ok(false);
        }
        st.conversation_used_ms.insert(conversation_id.to_string(), now_ms());
        if let Some(c) = st.conversations.get_mut(conversation_id) {
            c.message_count += 1;
            c.updated_at_ms = now;
            if c.title.is_empty() && message.direction == Direction::Inbound {
                c.title = crate::backend::title_from(&message.text);
            }
        }
        let (trimmed, kept) = st.messages.entry(conversation_id.to_string()).or_default();
        kept.push(message.clone());
        let excess = kept.len().saturating_sub(self.shared.conversation_max_messages);
        kept.drain(..excess);
        *trimmed += excess as u64;
        Ok(true)
    }

    async fn messages_page(&self, conversation_id: &str, before: Option<u64>, limit: usize) -> BResult<MessagePage> {
        let st = self.shared.state.lock();
        let (trimmed, all) = st.messages.get(conversation_id).map_or((0, &[][..]), |(t, m)| (*t, m.as_slice()));
        // Indexes count every message the conversation ever had; the list holds those after `trimmed`.
        let end = before.map_or(all.len(), |b| usize::try_from(b.saturating_sub(trimmed)).unwrap_or(0).min(all.len()));
        let start = end.saturating_sub(limit);
        let mut messages: Vec<StoredMessage> = all[start..end].to_vec();
        messages.reverse();
        Ok(MessagePage { messages, oldest_index: start as u64 + trimmed, has_more: start > 0 })
    }

    async fn recent_messages(&self, conversation_id: &str, n: usize) -> BResult<Vec<StoredMessage>> {
        let st = self.shared.state.lock();
        let all = st.messages.get(conversation_id).map_or(&[][..], |(_, m)| m.as_slice());
        Ok(all[all.len().saturating_sub(n)..].to_vec())
    }

    async fn list_conversations(
        &self,
        org_id: &str,
        user_id: &str,
        offset: usize,
        limit: usize,
    ) -> BResult<ConversationPage> {
        Ok(self.shared.conversations_page(org_id, Some(user_id), offset, limit))
    }

    async fn list_org_conversations(&self, org_id: &str, offset: usize, limit: usize) -> BResult<ConversationPage> {
        Ok(self.shared.conversations_page(org_id, None, offset, limit))
    }

    async fn delete_session(&self, session: &SessionRecord) -> BResult<()> {
        let mut st = self.shared.state.lock();
        let sid = &session.session_id;
        st.sessions.remove(sid);
        // The seq counter stays (see the trait): only the events go.
        if let Some(log) = st.logs.get_mut(sid) {
            log.entries.clear();
        }
        // A turn running in the deleted session stops: with its lease and record gone, neither its events nor
        // an ending (its own or a sweeper's) can bring the log back.
        st.leases.remove(sid);
        st.turns.remove(sid);
        st.ended.remove(sid);
        st.steps.remove(sid);
        st.parked.remove(sid);
        st.decided.remove(sid);
        st.last_decision.remove(sid);
        // What the session knew of its person goes with it, as in Redis.
        st.contacts.remove(sid);
        st.otp_codes.remove(sid);
        st.conversations.remove(&session.conversation_id);
        st.messages.remove(&session.conversation_id);
        st.summaries.remove(&session.conversation_id);
        Ok(())
    }

    async fn summary(&self, conversation_id: &str) -> BResult<Option<Summary>> {
        Ok(self.shared.state.lock().summaries.get(conversation_id).cloned())
    }

    async fn set_summary(&self, conversation_id: &str, summary: &Summary) -> BResult<bool> {
        let mut st = self.shared.state.lock();
        if !st.conversations.contains_key(conversation_id) {
            return Ok(false);
        }
        st.summaries.insert(conversation_id.to_string(), summary.clone());
        Ok(true)
    }

    async fn set_conversation_supports(&self, conversation_id: &str, supports: &[String]) -> BResult<bool> {
        let mut st = self.shared.state.lock();
        Ok(st.conversations.get_mut(conversation_id).map(|c| c.supports = Some(supports.to_vec())).is_some())
    }

    async fn rename_conversation(&self, conversation_id: &str, title: &str) -> BResult<bool> {
        let mut st = self.shared.state.lock();
        Ok(match st.conversations.get_mut(conversation_id) {
            Some(c) => {
                c.title = title.to_string();
                true
            }
            None => false,
        })
    }
}

struct MemoryBus {
    shared: Arc<Shared>,
    id: u64,
    /// Sender side of this pod's receiver; owned by the bus, receivers are handed to the hub.
    tx: broadcast::Sender<BusEvent>,
}

#[async_trait]
impl Bus for MemoryBus {
    async fn publish(&self, channel: &Channel, payload: &str) -> BResult<()> {
        let st = self.shared.state.lock();
        self.shared.deliver(&st, channel, payload);
        Ok(())
    }
    async fn subscribe(&self, channel: &Channel) -> BResult<()> {
        self.shared.state.lock().subs.entry(channel.clone()).or_default().insert(self.id);
        Ok(())
    }
    async fn unsubscribe(&self, channel: &Channel) -> BResult<()> {
        let mut st = self.shared.state.lock();
        if let Some(set) = st.subs.get_mut(channel) {
            set.remove(&self.id);
            if set.is_empty() {
                st.subs.remove(channel);
            }
        }
        Ok(())
    }
    fn receiver(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }
}

impl Drop for MemoryBus {
    fn drop(&mut self) {
        self.shared.pods.lock().remove(&self.id);
    }
}

#[async_trait]
impl Health for MemoryStore {
    async fn ping(&self) -> bool {
        true
    }
}

impl SocketFilter {
    pub fn matches(&self, e: &SocketEntry) -> bool {
        self.session.as_ref().is_none_or(|s| e.sessions.contains(s))
            && self.user.as_ref().is_none_or(|u| &e.user_id == u)
            && self.org.as_ref().is_none_or(|o| &e.org_id == o)
            && self.connection.as_ref().is_none_or(|c| &e.connection_id == c)
    }
}
