//! The generic conformance suite: one set of behaviours every backend pair must show. Each check takes two
//! "pods" (backend handles sharing one store) and panics with a message on a violation. Run against memory
//! (unit tests below) and Redis (`tests/it/redis_backends.rs`).

use std::time::Duration;

use super::*;
use crate::util::now_ms;

mod admin;
mod identity;
mod log;
mod takeover;
mod tenancy;
mod turns;
pub use admin::{deployment_keys, org_listing, org_settings, usage_counters};
pub use identity::{identities, interaction_parks};
pub use log::event_log_and_publish;
pub use takeover::{orphans, takeovers};
pub use tenancy::{conversation_bounds, deletion_forgets_the_person, identity_moves};
use turns::parked;
pub use turns::{confirmations, guarded_appends, turn_leases};

fn sid() -> String {
    uuid::Uuid::new_v4().to_string()
}

async fn recv_message(rx: &mut broadcast::Receiver<BusEvent>, want: &Channel) -> String {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(ev)) if ev.raw().is_some_and(|(channel, _)| &channel == want) => {
                return ev.raw().map(|(_, payload)| payload.to_string()).unwrap_or_default()
            }
            Ok(Ok(_)) => continue,
            Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("bus receiver closed: {e}"),
            Err(_) => panic!("no message on {want:?} within 5 s"),
        }
    }
}

async fn assert_silent(rx: &mut broadcast::Receiver<BusEvent>, channel: &Channel) {
    let deadline = tokio::time::Instant::now() + Duration::from_millis(300);
    loop {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(ev)) if ev.raw().is_some_and(|(c, _)| &c == channel) => {
                let payload = ev.raw().map(|(_, p)| p.to_string()).unwrap_or_default();
                panic!("unexpected message on {channel:?}: {payload}")
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(_)) | Err(_) => return,
        }
    }
}

/// A new session `id` of `user` and its new conversation, as a door would create them.
pub fn session(id: &str, user: &str) -> (SessionRecord, ConversationRecord) {
    let cid = uuid::Uuid::new_v4().to_string();
    (
        SessionRecord {
            session_id: id.into(),
            conversation_id: cid.clone(),
            agent_id: "agent".into(),
            agent_name: "Agent".into(),
            user_id: user.into(),
            org_id: "org".into(),
            user_participant_id: "up".into(),
            agent_participant_id: "ap".into(),
            created_at_ms: now_ms(),
            namespace: None,
            supports: Vec::new(),
        },
        ConversationRecord {
            conversation_id: cid,
            user_id: user.into(),
            org_id: "org".into(),
            agent_id: "agent".into(),
            title: String::new(),
            created_at_ms: now_ms(),
            updated_at_ms: now_ms(),
            message_count: 0,
            namespace: Some("web:n1".into()),
            supports: None,
        },
    )
}

fn msg(dir: Direction, text: &str) -> StoredMessage {
    StoredMessage {
        id: uuid::Uuid::new_v4().to_string(),
        direction: dir,
        text: text.into(),
        created_at: "2026-01-01T00:00:00Z".into(),
    }
}

/// A conversation keeps its newest `max` messages (`session.conversation_max_messages`); its message count and
/// page indexes go on counting every message, so paging over a trimmed conversation neither repeats nor skips.
pub async fn history_cap(a: &Backends, b: &Backends, max: usize) {
    let (s, c) = session(&sid(), "alice");
    a.sessions.create_session(&s, Some(&c)).await.expect("create");
    let total = max + 3;
    for i in 0..total {
        a.sessions
            .append_message(&c.conversation_id, &msg(Direction::Inbound, &format!("m{i}")), now_ms())
            .await
            .expect("append");
    }
    let conv = b.sessions.get_conversation(&c.conversation_id).await.expect("conv").expect("exists");
    assert_eq!(conv.message_count, total as u64, "the count is of every message, kept or not");
    let recent = b.sessions.recent_messages(&c.conversation_id, total).await.expect("recent");
    let newest: Vec<String> = (3..total).map(|i| format!("m{i}")).collect();
    assert_eq!(recent.iter().map(|m| m.text.clone()).collect::<Vec<_>>(), newest, "only the newest {max} are kept");
    let (mut seen, mut before) = (Vec::new(), None);
    loop {
        let page = b.sessions.messages_page(&c.conversation_id, before, 2).await.expect("page");
        seen.extend(page.messages.iter().map(|m| m.text.clone()));
        if !page.has_more {
            assert_eq!(page.oldest_index, 3, "indexes count the trimmed messages too");
            break;
        }
        before = Some(page.oldest_index);
    }
    seen.reverse();
    assert_eq!(seen, newest, "paging walks the kept messages once each, newest first");
    // A cursor taken before more messages were trimmed still pages on from where it was, never repeating.
    let p1 = b.sessions.messages_page(&c.conversation_id, None, 2).await.expect("page");
    a.sessions.append_message(&c.conversation_id, &msg(Direction::Inbound, "late"), now_ms()).await.expect("append");
    let p2 = b.sessions.messages_page(&c.conversation_id, Some(p1.oldest_index), 2).await.expect("page");
    let texts = |p: &MessagePage| p.messages.iter().map(|m| m.text.clone()).collect::<Vec<_>>();
    assert_eq!(texts(&p1), [format!("m{}", total - 1), format!("m{}", total - 2)]);
    assert_eq!(texts(&p2), [format!("m{}", total - 3), format!("m{}", total - 4)]);
}

/// Sessions and conversations written on one pod are read on the other; history pages are newest first.
pub async fn sessions_and_history(a: &Backends, b: &Backends) {
    let id = sid();
    let (s, c) = session(&id, "alice");
    a.sessions.create_session(&s, Some(&c)).await.expect("create");
    assert_eq!(b.sessions.get_session(&id).await.expect("get"), Some(s.clone()));
    assert_eq!(b.sessions.get_session(&sid()).await.expect("get"), None);
    for i in 0..5 {
        let dir = if i % 2 == 0 { Direction::Inbound } else { Direction::Outbound };
        a.sessions.append_message(&c.conversation_id, &msg(dir, &format!("m{i}")), now_ms() + i).await.expect("append");
    }
    let conv = b.sessions.get_conversation(&c.conversation_id).await.expect("conv").expect("exists");
    assert_eq!(conv.message_count, 5);
    assert_eq!(conv.title, "m0", "the first inbound message names the conversation");
    let p1 = b.sessions.messages_page(&c.conversation_id, None, 2).await.expect("page");
    assert_eq!(p1.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m4", "m3"]);
    assert!(p1.has_more);
    let p2 = b.sessions.messages_page(&c.conversation_id, Some(p1.oldest_index), 2).await.expect("page");
    assert_eq!(p2.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m2", "m1"]);
    let p3 = b.sessions.messages_page(&c.conversation_id, Some(p2.oldest_index), 2).await.expect("page");
    assert_eq!(p3.messages.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m0"]);
    assert!(!p3.has_more);
    let recent = b.sessions.recent_messages(&c.conversation_id, 3).await.expect("recent");
    assert_eq!(recent.iter().map(|m| m.text.as_str()).collect::<Vec<_>>(), ["m2", "m3", "m4"]);
    assert!(b.sessions.rename_conversation(&c.conversation_id, "Renamed").await.expect("rename"));
    assert!(!b.sessions.rename_conversation(&sid(), "x").await.expect("rename missing"));
    assert_eq!(a.sessions.get_conversation(&c.conversation_id).await.expect("c").expect("c").title, "Renamed");
}

/// Conversations list per user, most recently updated first, paged by offset.
pub async fn conversation_listing(a: &Backends, b: &Backends) {
    let user = format!("u-{}", sid());
    let mut ids = Vec::new();
    // Real times: an index drops members older than the conversations' retention.
    let base = now_ms();
    for i in 0..3 {
        let (s, mut c) = session(&sid(), &user);
        c.updated_at_ms = base + i;
        a.sessions.create_session(&s, Some(&c)).await.expect("create");
        ids.push(c.conversation_id.clone());
    }
    // Touch the oldest so it becomes the newest.
    a.sessions.append_message(&ids[0], &msg(Direction::Inbound, "hello"), base + 5_000).await.expect("append");
    let page = b.sessions.list_conversations("org", &user, 0, 2).await.expect("list");
    assert_eq!(page.conversations.len(), 2);
    assert_eq!(page.conversations[0].conversation_id, ids[0]);
    assert_eq!(page.conversations[1].conversation_id, ids[2]);
    assert!(page.has_more);
    let rest = b.sessions.list_conversations("org", &user, 2, 2).await.expect("list");
    assert_eq!(rest.conversations.len(), 1);
    assert_eq!(rest.conversations[0].conversation_id, ids[1]);
    assert!(!rest.has_more);
    assert!(b.sessions.list_conversations("org", "nobody", 0, 10).await.expect("list").conversations.is_empty());
    // The same user id in another org is another user: it sees none of these, and its own only.
    let (mut s2, mut c2) = session(&sid(), &user);
    (s2.org_id, c2.org_id) = ("org-2".into(), "org-2".into());
    a.sessions.create_session(&s2, Some(&c2)).await.expect("create");
    a.sessions.append_message(&c2.conversation_id, &msg(Direction::Inbound, "other org"), 6_000).await.expect("append");
    let other = b.sessions.list_conversations("org-2", &user, 0, 10).await.expect("list");
    assert_eq!(
        other.conversations.iter().map(|c| c.conversation_id.as_str()).collect::<Vec<_>>(),
        [c2.conversation_id.as_str()]
    );
    assert_eq!(b.sessions.list_conversations("org", &user, 0, 10).await.expect("list").conversations.len(), 3);
}

/// Non-session channels deliver to subscribed pods only, and stop after unsubscribe.
pub async fn bus_routing(a: &Backends, b: &Backends) {
    let user = Channel::User(sid());
    let org = Channel::Org(sid());
    let mut rx = b.bus.receiver();
    b.bus.subscribe(&user).await.expect("sub");
    a.bus.publish(&user, r#"{"type":"hello"}"#).await.expect("pub");
    assert_eq!(recv_message(&mut rx, &user).await, r#"{"type":"hello"}"#);
    a.bus.publish(&org, r#"{"type":"nobody"}"#).await.expect("pub");
    assert_silent(&mut rx, &org).await;
    b.bus.unsubscribe(&user).await.expect("unsub");
    a.bus.publish(&user, r#"{"type":"late"}"#).await.expect("pub");
    assert_silent(&mut rx, &user).await;

    // Many at once (a restore after reconnect), mixing kinds and sessions in different hash slots, one of them
    // already subscribed: each delivers, once.
    let mut many: Vec<Channel> = (0..40).map(|_| Channel::Session(sid())).collect();
    many.extend([Channel::User(sid()), Channel::Org(sid()), Channel::Agent(sid())]);
    b.bus.subscribe(&many[0]).await.expect("sub one");
    b.bus.subscribe_many(&many).await.expect("sub many");
    for (i, channel) in many.iter().enumerate() {
        let payload = format!(r#"{{"type":"n{i}"}}"#);
        a.bus.publish(channel, &payload).await.expect("pub");
        assert_eq!(recv_message(&mut rx, channel).await, payload);
        if i == 0 {
            // Subscribed twice, still delivered once.
            assert_silent(&mut rx, channel).await;
        }
    }
}

/// A quota is one counter for every pod: the limit holds across them, a give-back frees a use, keys are
/// independent.
pub async fn quotas(a: &Backends, b: &Backends) {
    let key = format!("q-{}", sid());
    let other = format!("q-{}", sid());
    let took: Vec<bool> = vec![
        a.quotas.take(&key, 3, 60_000).await.expect("take"),
        b.quotas.take(&key, 3, 60_000).await.expect("take"),
        a.quotas.take(&key, 3, 60_000).await.expect("take"),
        b.quotas.take(&key, 3, 60_000).await.expect("take"),
    ];
    assert_eq!(took, [true, true, true, false], "three uses across two pods, then refused");
    assert!(a.quotas.take(&other, 1, 60_000).await.expect("take"), "another key has its own count");
    b.quotas.give_back(&key, 60_000).await.expect("give back");
    assert!(a.quotas.take(&key, 3, 60_000).await.expect("take"), "a use given back can be taken again");
    assert!(!b.quotas.take(&key, 3, 60_000).await.expect("take"));
    // Amounts (bytes) count at once, and one that would pass the limit counts nothing.
    let bytes = format!("q-{}", sid());
    assert!(a.quotas.take_amount(&bytes, 600, 1_000, 60_000).await.expect("take"));
    assert!(!b.quotas.take_amount(&bytes, 500, 1_000, 60_000).await.expect("take"), "600 + 500 passes 1,000");
    assert!(b.quotas.take_amount(&bytes, 400, 1_000, 60_000).await.expect("take"), "the refused 500 counted nothing");
    assert!(!a.quotas.take(&bytes, 1_000, 60_000).await.expect("take"));
    // A new window starts from zero (start right after a window boundary so the two takes share a window).
    let short = format!("q-{}", sid());
    tokio::time::sleep(Duration::from_millis(300 - (now_ms() % 300) as u64 + 5)).await;
    assert!(a.quotas.take(&short, 1, 300).await.expect("take"));
    assert!(!a.quotas.take(&short, 1, 300).await.expect("take"));
    tokio::time::sleep(Duration::from_millis(350)).await;
    assert!(b.quotas.take(&short, 1, 300).await.expect("take"), "the next window counts again");
    // Holds: at most `limit` holders across pods; a holder renews its own place; lapsed places free themselves.
    let h = format!("h-{}", sid());
    let now = now_ms();
    assert!(a.quotas.hold(&h, "t1", 2, 10_000, now).await.expect("hold"));
    assert!(b.quotas.hold(&h, "t2", 2, 10_000, now).await.expect("hold"));
    assert!(!a.quotas.hold(&h, "t3", 2, 10_000, now).await.expect("hold"), "a third place is refused");
    assert!(b.quotas.hold(&h, "t1", 2, 10_000, now).await.expect("renew"), "a holder renews whatever the limit");
    b.quotas.release_hold(&h, "t2").await.expect("release");
    assert!(a.quotas.hold(&h, "t3", 2, 500, now).await.expect("hold"), "a released place is free");
    assert!(!b.quotas.hold(&h, "t4", 2, 10_000, now + 100).await.expect("hold"));
    assert!(b.quotas.hold(&h, "t4", 2, 10_000, now + 600).await.expect("hold"), "t3's place lapsed");
}

/// Sockets registered on one pod are listed from another, filtered, and removed; sessions are recorded per
/// attach and kept across heartbeats.
pub async fn registry(a: &Backends, b: &Backends) {
    let user = sid();
    let e1 = SocketEntry {
        connection_id: sid(),
        pod_id: "pod-a".into(),
        user_id: user.clone(),
        org_id: "org-x".into(),
        sessions: vec![],
        agents: vec![],
        connected_at_ms: now_ms(),
    };
    let e2 = SocketEntry { connection_id: sid(), pod_id: "pod-b".into(), ..e1.clone() };
    let (s1, s2, s3) = (sid(), sid(), sid());
    a.registry.upsert(&e1, 10_000).await.expect("upsert");
    a.registry.attach(&e1.connection_id, &s1, 10_000).await.expect("attach");
    b.registry.upsert(&e2, 10_000).await.expect("upsert");
    b.registry.attach(&e2.connection_id, &s2, 10_000).await.expect("attach");
    let by_user =
        a.registry.list(&SocketFilter { user: Some(user.clone()), ..Default::default() }, 100).await.expect("list");
    assert_eq!(by_user.len(), 2);
    assert_eq!(b.registry.count_user("org-x", &user).await.expect("count"), 2);
    assert_eq!(b.registry.count_user("org-y", &user).await.expect("count"), 0, "the same user id in another org");
    let by_session = b
        .registry
        .list(&SocketFilter { session: Some(s2.clone()), user: Some(user.clone()), ..Default::default() }, 100)
        .await
        .expect("list");
    assert_eq!(by_session, vec![SocketEntry { sessions: vec![s2.clone()], ..e2.clone() }]);
    // A heartbeat keeps what was attached; a later attach adds to it.
    a.registry.upsert(&e1, 10_000).await.expect("heartbeat");
    a.registry.attach(&e1.connection_id, &s3, 10_000).await.expect("attach");
    let mut both = vec![s1.clone(), s3.clone()];
    both.sort();
    let with_e1 = SocketEntry { sessions: both, ..e1.clone() };
    let by_s3 = b.registry.list(&SocketFilter { session: Some(s3.clone()), ..Default::default() }, 100).await;
    assert_eq!(by_s3.expect("list"), vec![with_e1.clone()]);
    a.registry.remove(&e2.connection_id).await.expect("remove");
    let left =
        b.registry.list(&SocketFilter { user: Some(user.clone()), ..Default::default() }, 100).await.expect("list");
    assert_eq!(left, vec![with_e1.clone()]);
    assert_eq!(a.registry.count_user("org-x", &user).await.expect("count"), 1);
    let by_s2 = b.registry.list(&SocketFilter { session: Some(s2), ..Default::default() }, 100).await;
    assert!(by_s2.expect("list").is_empty(), "a removed socket is in no session's index");
    a.registry.remove(&e1.connection_id).await.expect("remove");
    let by_s1 = a.registry.list(&SocketFilter { session: Some(s1), ..Default::default() }, 100).await;
    assert!(by_s1.expect("list").is_empty());
}

/// Deleting a session removes its record, conversation, messages, log and parked turn on every pod, and its
/// place in the owner's list; the namespace of a gateway conversation is stored and read back.
pub async fn deletion(a: &Backends, b: &Backends) {
    let id = sid();
    let user = format!("u-{}", sid());
    let (s, c) = session(&id, &user);
    a.sessions.create_session(&s, Some(&c)).await.expect("create");
    let stored = b.sessions.get_conversation(&c.conversation_id).await.expect("conv").expect("exists");
    assert_eq!(stored.namespace.as_deref(), Some("web:n1"));
    a.sessions.append_message(&c.conversation_id, &msg(Direction::Inbound, "hi"), now_ms()).await.expect("msg");
    a.log.append(&id, r#"{"n":1}"#).await.expect("append");
    a.confirms.park(&parked(&id, "call-1", now_ms() + 60_000)).await.expect("park");
    let (other, other_c) = session(&sid(), &user);
    a.sessions.create_session(&other, Some(&other_c)).await.expect("create another");

    b.sessions.delete_session(&s).await.expect("delete");
    assert_eq!(a.sessions.get_session(&id).await.expect("get"), None);
    assert_eq!(a.sessions.get_conversation(&c.conversation_id).await.expect("conv"), None);
    assert!(a.sessions.recent_messages(&c.conversation_id, 10).await.expect("recent").is_empty());
    assert!(a.log.read_after(&id, 0, 10).await.expect("read").is_empty(), "no event is left");
    assert_eq!(a.log.bounds(&id).await.expect("bounds").1, 1, "the seq counter is kept");
    assert_eq!(a.log.append(&id, r#"{"n":2}"#).await.expect("append"), 2, "and continues");
    assert!(a.confirms.get(&id).await.expect("parked").is_none());
    let listed = a.sessions.list_conversations("org", &user, 0, 10).await.expect("list");
    let ids: Vec<&str> = listed.conversations.iter().map(|c| c.conversation_id.as_str()).collect();
    assert_eq!(ids, [other_c.conversation_id.as_str()], "only the other conversation is left");
    b.sessions.delete_session(&s).await.expect("deleting again is no error");
}

/// An idempotency key is claimed once across pods; a retry gets the first answer; an abandoned or lapsed claim
/// can be taken again.
pub async fn idempotency(a: &Backends, b: &Backends) {
    let key = format!("k-{}", sid());
    assert_eq!(a.idempotency.claim(&key, 60_000).await.expect("claim"), Claim::Claimed);
    assert_eq!(b.idempotency.claim(&key, 60_000).await.expect("claim"), Claim::InFlight);
    a.idempotency.complete(&key, r#"{"accepted":true,"seq":7}"#, 60_000).await.expect("complete");
    assert_eq!(
        b.idempotency.claim(&key, 60_000).await.expect("claim"),
        Claim::Done(r#"{"accepted":true,"seq":7}"#.into())
    );
    b.idempotency.abandon(&key).await.expect("abandon");
    assert!(matches!(a.idempotency.claim(&key, 60_000).await.expect("claim"), Claim::Done(_)), "an answer stays");

    let failed = format!("f-{}", sid());
    assert_eq!(a.idempotency.claim(&failed, 60_000).await.expect("claim"), Claim::Claimed);
    a.idempotency.abandon(&failed).await.expect("abandon");
    assert_eq!(
        b.idempotency.claim(&failed, 60_000).await.expect("claim"),
        Claim::Claimed,
        "a retry acts after a failure"
    );

    let short = format!("s-{}", sid());
    assert_eq!(a.idempotency.claim(&short, 100).await.expect("claim"), Claim::Claimed);
    tokio::time::sleep(Duration::from_millis(250)).await;
    assert_eq!(b.idempotency.claim(&short, 100).await.expect("claim"), Claim::Claimed, "a lapsed claim is free");
}

#[cfg(test)]
mod memory_suite {
    use super::*;
    use crate::backend::memory::MemoryBackend;

    const HISTORY_CAP: usize = 6;
    const CONVERSATION_CAP: usize = 3;

    #[tokio::test]
    async fn memory_conversation_bounds() {
        let mut config = Config::default();
        config.session.conversations_per_user = CONVERSATION_CAP;
        config.session.empty_conversation_ttl_s = 1;
        let m = MemoryBackend::new(&config);
        conversation_bounds(&m.backends(), &m.backends(), CONVERSATION_CAP).await;
    }

    fn pods() -> (Backends, Backends) {
        let mut config = Config::default();
        config.limits.log_len = 50;
        config.session.conversation_max_messages = HISTORY_CAP;
        let m = MemoryBackend::new(&config);
        (m.backends(), m.backends())
    }

    macro_rules! on_memory {
        ($($name:ident => $check:ident $(, $arg:expr)?);* $(;)?) => {$(
            #[tokio::test]
            async fn $name() {
                let (a, b) = pods();
                $check(&a, &b $(, $arg)?).await;
            }
        )*};
    }

    on_memory! {
        memory_sessions_and_history => sessions_and_history;
        memory_history_cap => history_cap, HISTORY_CAP;
        memory_conversation_listing => conversation_listing;
        memory_event_log_and_publish => event_log_and_publish, 50;
        memory_bus_routing => bus_routing;
        memory_confirmations => confirmations;
        memory_turn_leases => turn_leases;
        memory_takeovers => takeovers;
        memory_orphans => orphans;
        memory_guarded_appends => guarded_appends;
        memory_quotas => quotas;
        memory_registry => registry;
        memory_deletion => deletion;
        memory_idempotency => idempotency;
        memory_interaction_parks => interaction_parks;
        memory_identities => identities;
        memory_org_listing => org_listing;
        memory_org_settings => org_settings;
        memory_identity_moves => identity_moves;
        memory_deployment_keys => deployment_keys;
        memory_usage_counters => usage_counters;
        memory_deletion_forgets_the_person => deletion_forgets_the_person;
    }
}
