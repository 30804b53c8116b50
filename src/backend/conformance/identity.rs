//! Conformance checks for the parks of interactions and OTP waits and for the identity store.

use super::sid;
use super::turns::parked;
use crate::backend::*;
use crate::util::now_ms;

fn interaction(session_id: &str, call: &str, interaction_id: &str, expires_at_ms: i64) -> ParkedTurn {
    let mut p = parked(session_id, call, expires_at_ms);
    p.gate = Gate::Interaction {
        interaction_id: interaction_id.into(),
        interaction_kind: "identity_intake".into(),
        spec: serde_json::json!({"fields": [{"key": "email", "required": true}]}),
        reason: "to send you the quote".into(),
    };
    p
}

/// An interaction or OTP park is stored with its gate, is never decided by a confirmation, is taken by exactly
/// one of two racing answers, and shows in the expiry index when due.
pub async fn interaction_parks(a: &Backends, b: &Backends) {
    let id = sid();
    let p = interaction(&id, "call-1", "int-1", now_ms() + 60_000);
    a.confirms.park(&p).await.expect("park");
    assert_eq!(b.confirms.get(&id).await.expect("get"), Some(p.clone()), "the gate is stored with the park");
    assert_eq!(b.confirms.take(&id, Some("call-0")).await.expect("take"), None, "another call's answer takes nothing");
    assert_eq!(b.confirms.get(&id).await.expect("get"), Some(p.clone()), "and leaves the park");
    for call in [None, Some("call-1")] {
        assert_eq!(b.confirms.decide(&id, call, true).await.expect("decide"), Decided::NoPending, "{call:?}");
    }
    assert_eq!(a.confirms.get(&id).await.expect("get"), Some(p.clone()), "a refused decision leaves the park");
    let (ta, tb) = tokio::join!(a.confirms.take(&id, Some("call-1")), b.confirms.take(&id, Some("call-1")));
    let (ta, tb) = (ta.expect("a"), tb.expect("b"));
    assert_eq!(ta.is_some() as u8 + tb.is_some() as u8, 1, "first answer wins: {ta:?} / {tb:?}");
    assert_eq!(ta.or(tb), Some(p), "the winner gets the whole park");
    assert_eq!(a.confirms.take(&id, None).await.expect("take"), None, "taken once");
    // Expiry: due parks of every gate are listed.
    let (i1, i2) = (sid(), sid());
    b.confirms.park(&interaction(&i1, "call-2", "int-2", now_ms() - 1)).await.expect("park");
    let mut otp = parked(&i2, "call-3", now_ms() - 1);
    otp.gate = Gate::Otp { auth_level: "end_user".into() };
    b.confirms.park(&otp).await.expect("park");
    let due = a.confirms.expired(now_ms(), 100).await.expect("expired");
    assert!(due.contains(&i1) && due.contains(&i2), "{due:?}");
    assert_eq!(
        a.confirms.get(&i2).await.expect("get").map(|p| p.gate),
        Some(Gate::Otp { auth_level: "end_user".into() })
    );
    a.confirms.take(&i1, None).await.expect("take");
    a.confirms.take(&i2, None).await.expect("take");
}

/// Contacts merge across pods, a changed email clears `verified`, and OTP attempts are counted in the store
/// (shared by pods) before anyone compares: exactly `max_attempts` checks, then locked.
pub async fn identities(a: &Backends, b: &Backends) {
    let id = sid();
    assert_eq!(a.identity.contact(&id).await.expect("contact"), Contact::default());
    a.identity.stamp(&id, Some("Ada"), Some("ada@example.com"), None).await.expect("stamp");
    b.identity.stamp(&id, None, None, Some("+15551234567")).await.expect("stamp");
    b.identity.set_verified(&id).await.expect("verify");
    let c = a.identity.contact(&id).await.expect("contact");
    assert_eq!(
        c,
        Contact {
            name: Some("Ada".into()),
            email: Some("ada@example.com".into()),
            phone: Some("+15551234567".into()),
            verified: true
        }
    );
    a.identity.stamp(&id, Some("Ada L"), Some("ada@example.com"), None).await.expect("same email");
    assert!(b.identity.contact(&id).await.expect("contact").verified, "the same email keeps the proof");
    a.identity.stamp(&id, None, Some("other@example.com"), None).await.expect("new email");
    assert!(!b.identity.contact(&id).await.expect("contact").verified, "a new email needs a new proof");

    assert_eq!(a.identity.attempt(&id, now_ms()).await.expect("attempt"), OtpAttempt::NotFound);
    let code = OtpCode { hash: "h".into(), salt: "s".into(), expires_at_ms: now_ms() + 60_000, max_attempts: 3 };
    a.identity.put_code(&id, &code).await.expect("put");
    let (x, y) = tokio::join!(a.identity.attempt(&id, now_ms()), b.identity.attempt(&id, now_ms()));
    let mut used = [x.expect("x"), y.expect("y")]
        .into_iter()
        .map(|r| match r {
            OtpAttempt::Check { code: c, used } => {
                assert_eq!(c, code);
                used
            }
            other => panic!("{other:?}"),
        })
        .collect::<Vec<_>>();
    used.sort();
    assert_eq!(used, vec![1, 2], "attempts on two pods share one count");
    assert!(matches!(b.identity.attempt(&id, now_ms()).await.expect("3"), OtpAttempt::Check { used: 3, .. }));
    assert_eq!(a.identity.attempt(&id, now_ms()).await.expect("4"), OtpAttempt::Locked);
    // A new code starts a new count; an expired one says so; a used one is gone for everyone.
    a.identity.put_code(&id, &code).await.expect("put");
    assert!(matches!(b.identity.attempt(&id, now_ms()).await.expect("1"), OtpAttempt::Check { used: 1, .. }));
    assert_eq!(b.identity.attempt(&id, code.expires_at_ms).await.expect("late"), OtpAttempt::Expired);
    let (c1, c2) = tokio::join!(a.identity.consume_code(&id), b.identity.consume_code(&id));
    assert_eq!(c1.expect("c1") as u8 + c2.expect("c2") as u8, 1, "a code is used once");
    assert_eq!(a.identity.attempt(&id, now_ms()).await.expect("gone"), OtpAttempt::NotFound);
}
