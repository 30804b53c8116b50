//! Conformance checks for what keeps tenants apart and the backend bounded: a socket that takes another
//! identity leaves the old one's index, a deleted session forgets its person, and a user's conversations are
//! bounded (empty ones expire soon, past the cap the least recently used go).

use std::time::Duration;

use super::{msg, session, sid};
use crate::backend::*;
use crate::util::now_ms;

/// A socket registered as one user that takes another identity (a widget `authContext`) is counted and
/// listed under the new one only, at once, on every pod.
pub async fn identity_moves(a: &Backends, b: &Backends) {
    let anon = format!("anon-{}", sid());
    let alice = format!("alice-{}", sid());
    let entry = SocketEntry {
        connection_id: sid(),
        pod_id: "pod-a".into(),
        user_id: anon.clone(),
        org_id: "default".into(),
        sessions: vec![],
        agents: vec![],
        connected_at_ms: now_ms(),
    };
    a.registry.upsert(&entry, 10_000).await.expect("upsert");
    assert_eq!(b.registry.count_user("default", &anon).await.expect("count"), 1);
    a.registry.forget_identity(&entry.connection_id, "default", &anon).await.expect("forget");
    let moved = SocketEntry { user_id: alice.clone(), org_id: "shop".into(), ..entry.clone() };
    a.registry.upsert(&moved, 10_000).await.expect("upsert as alice");
    assert_eq!(b.registry.count_user("default", &anon).await.expect("count"), 0, "the old identity lets go");
    assert_eq!(b.registry.count_user("shop", &alice).await.expect("count"), 1);
    let by_org = b.registry.list(&SocketFilter { org: Some("default".into()), ..Default::default() }, 100).await;
    assert!(by_org.expect("list").iter().all(|e| e.connection_id != entry.connection_id), "nor the old org");
    a.registry.remove(&entry.connection_id).await.expect("remove");
    assert_eq!(b.registry.count_user("shop", &alice).await.expect("count"), 0);
}

/// Deleting a session forgets what it knew of its person: contact, verified flag and any OTP code.
pub async fn deletion_forgets_the_person(a: &Backends, b: &Backends) {
    let (s, c) = session(&sid(), &format!("u-{}", sid()));
    a.sessions.create_session(&s, Some(&c)).await.expect("create");
    let id = s.session_id.as_str();
    a.identity.stamp(id, Some("Ann"), Some("ann@example.com"), None).await.expect("stamp");
    a.identity.set_verified(id).await.expect("verified");
    let code = OtpCode { hash: "h".into(), salt: "s".into(), expires_at_ms: now_ms() + 60_000, max_attempts: 3 };
    a.identity.put_code(id, &code).await.expect("code");
    b.sessions.delete_session(&s).await.expect("delete");
    assert_eq!(a.identity.contact(id).await.expect("contact"), Contact::default(), "no contact, not verified");
    assert_eq!(a.identity.attempt(id, now_ms()).await.expect("attempt"), OtpAttempt::NotFound, "no code");
}

/// With `session.conversations_per_user = cap` and `session.empty_conversation_ttl_s = 1`: a conversation
/// that never gets a message is gone within the second, one with a message stays, and a user who creates more
/// than `cap` keeps the `cap` most recently used (the others are gone, not only unlisted).
pub async fn conversation_bounds(a: &Backends, b: &Backends, cap: usize) {
    let user = format!("u-{}", sid());
    let (empty_s, empty_c) = session(&sid(), &user);
    a.sessions.create_session(&empty_s, Some(&empty_c)).await.expect("create");
    let (used_s, used_c) = session(&sid(), &user);
    a.sessions.create_session(&used_s, Some(&used_c)).await.expect("create");
    assert!(a
        .sessions
        .append_message(&used_c.conversation_id, &msg(Direction::Inbound, "hi"), now_ms())
        .await
        .expect("msg"));
    tokio::time::sleep(Duration::from_millis(1_300)).await;
    assert_eq!(b.sessions.get_conversation(&empty_c.conversation_id).await.expect("get"), None, "empty: expired");
    assert!(b.sessions.get_conversation(&used_c.conversation_id).await.expect("get").is_some(), "used: kept");
    let gone = msg(Direction::Inbound, "late");
    assert!(!b.sessions.append_message(&empty_c.conversation_id, &gone, now_ms()).await.expect("msg"), "no revival");

    let other = format!("o-{}", sid());
    let mut made = Vec::new();
    for i in 0..cap + 2 {
        let (s, mut c) = session(&sid(), &other);
        c.updated_at_ms = now_ms() + i as i64;
        c.message_count = 1;
        a.sessions.create_session(&s, Some(&c)).await.expect("create");
        made.push(c.conversation_id);
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    let listed = b.sessions.list_conversations("org", &other, 0, 100).await.expect("list");
    let mut ids: Vec<&str> = listed.conversations.iter().map(|c| c.conversation_id.as_str()).collect();
    ids.reverse();
    let newest: Vec<&str> = made[2..].iter().map(String::as_str).collect();
    assert_eq!(ids, newest, "the {cap} most recently used are kept");
    for cid in &made[..2] {
        assert_eq!(a.sessions.get_conversation(cid).await.expect("get"), None, "trimmed past the cap: deleted");
    }
}
