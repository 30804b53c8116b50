//! Conformance checks for what the admin API reads: an org's conversations across users, and per-org
//! settings shared by every pod.

use super::{msg, session, sid};
use crate::backend::*;

/// Usage counters add up per (day, user, model) across pods; an org's month spend sums its days; another org's
/// counters are its own.
pub async fn usage_counters(a: &Backends, b: &Backends) {
    let org = format!("org-{}", sid());
    let entry = |user: &str, model: &str, i, o, c| UsageEntry {
        user_id: user.into(),
        model: model.into(),
        input_tokens: i,
        output_tokens: o,
        cost_micro_usd: c,
    };
    a.usage.record_usage(&org, "2026-12-01", &entry("ann", "m1", 100, 10, 150)).await.expect("record");
    b.usage.record_usage(&org, "2026-12-01", &entry("ann", "m1", 50, 5, 75)).await.expect("record");
    a.usage.record_usage(&org, "2026-12-01", &entry("bob:x", "m2", 7, 3, 0)).await.expect("record");
    b.usage.record_usage(&org, "2026-12-02", &entry("ann", "m1", 1, 1, 25)).await.expect("record");
    a.usage.record_usage(&org, "2026-11-30", &entry("ann", "m1", 1, 1, 1_000)).await.expect("record");
    a.usage.record_usage("other", "2026-12-01", &entry("ann", "m1", 9, 9, 9)).await.expect("record");
    let days = vec!["2026-12-01".to_string(), "2026-12-02".to_string()];
    let mut got = b.usage.usage(&org, &days).await.expect("usage");
    got.sort_by(|x, y| (&x.0, &x.1.user_id).cmp(&(&y.0, &y.1.user_id)));
    assert_eq!(
        got,
        vec![
            ("2026-12-01".to_string(), entry("ann", "m1", 150, 15, 225)),
            ("2026-12-01".to_string(), entry("bob:x", "m2", 7, 3, 0)),
            ("2026-12-02".to_string(), entry("ann", "m1", 1, 1, 25)),
        ]
    );
    assert_eq!(a.usage.month_spend(&org, "2026-12").await.expect("spend"), 250);
    assert_eq!(b.usage.month_spend(&org, "2026-11").await.expect("spend"), 1_000);
    assert_eq!(b.usage.month_spend(&org, "2026-10").await.expect("spend"), 0);
}

/// A deployment-wide key is the first one stored, the same on every pod; another name has its own.
pub async fn deployment_keys(a: &Backends, b: &Backends) {
    let name = format!("k-{}", sid());
    let first = a.settings.deployment_key(&name, b"first-candidate").await.expect("key");
    assert_eq!(first, b"first-candidate");
    assert_eq!(b.settings.deployment_key(&name, b"second").await.expect("key"), b"first-candidate", "the first wins");
    let other = format!("o-{}", sid());
    assert_eq!(b.settings.deployment_key(&other, b"\x00\xff").await.expect("key"), b"\x00\xff", "binary survives");
}

/// An org lists every user's conversations (newest first, paged), never another org's; deleted ones go.
pub async fn org_listing(a: &Backends, b: &Backends) {
    let org = format!("org-{}", sid());
    let mut ids = Vec::new();
    // Real times: an index drops members older than the conversations' retention.
    let base = crate::util::now_ms();
    for (i, user) in ["ann", "bob", "ann"].iter().enumerate() {
        let (mut s, mut c) = session(&sid(), user);
        (s.org_id, c.org_id) = (org.clone(), org.clone());
        c.updated_at_ms = base + i as i64;
        a.sessions.create_session(&s, Some(&c)).await.expect("create");
        ids.push((s, c.conversation_id.clone()));
    }
    a.sessions.append_message(&ids[0].1, &msg(Direction::Inbound, "bump"), base + 9_000).await.expect("append");
    let page = b.sessions.list_org_conversations(&org, 0, 2).await.expect("list");
    let got: Vec<&str> = page.conversations.iter().map(|c| c.conversation_id.as_str()).collect();
    assert_eq!(got, [ids[0].1.as_str(), ids[2].1.as_str()]);
    assert!(page.has_more);
    let rest = b.sessions.list_org_conversations(&org, 2, 2).await.expect("list");
    assert_eq!(rest.conversations.len(), 1);
    assert!(!rest.has_more);
    assert!(b.sessions.list_org_conversations("another-org", 0, 10).await.expect("list").conversations.is_empty());
    a.sessions.delete_session(&ids[1].0).await.expect("delete");
    assert_eq!(b.sessions.list_org_conversations(&org, 0, 10).await.expect("list").conversations.len(), 2);
}

/// Settings written on one pod are read on the other; orgs are separate.
pub async fn org_settings(a: &Backends, b: &Backends) {
    let org = format!("org-{}", sid());
    assert_eq!(b.settings.get_settings(&org).await.expect("get"), None);
    let s = OrgSettings { model: Some("gpt-4o".into()), system_prompt: Some("Be brief.".into()), updated_at_ms: 7 };
    a.settings.put_settings(&org, &s).await.expect("put");
    assert_eq!(b.settings.get_settings(&org).await.expect("get"), Some(s));
    let cleared = OrgSettings { model: None, system_prompt: None, updated_at_ms: 8 };
    b.settings.put_settings(&org, &cleared).await.expect("put");
    assert_eq!(a.settings.get_settings(&org).await.expect("get"), Some(cleared));
    assert_eq!(a.settings.get_settings(&format!("{org}-x")).await.expect("get"), None);
}
