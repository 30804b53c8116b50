//! Conformance checks for parked turns, turn leases and the appends they fence.

use std::time::Duration;

use super::{session, sid};
use crate::backend::*;
use crate::util::now_ms;

pub(super) fn parked(session_id: &str, call: &str, expires_at_ms: i64) -> ParkedTurn {
    ParkedTurn {
        session_id: session_id.into(),
        turn_id: "turn-1".into(),
        request_id: "req-1".into(),
        call: PendingCall { tool_call_id: call.into(), tool_name: "delete_record".into(), arguments: "{}".into() },
        gate: Gate::Confirm,
        expires_at_ms,
        state: serde_json::json!({"k": "v"}),
    }
}

/// First decision wins across pods; repeats return the first decision; nothing pending is said so.
pub async fn confirmations(a: &Backends, b: &Backends) {
    let id = sid();
    assert_eq!(a.confirms.decide(&id, None, true).await.expect("decide"), Decided::NoPending);
    let p = parked(&id, "call-1", now_ms() + 60_000);
    a.confirms.park(&p).await.expect("park");
    assert_eq!(b.confirms.get(&id).await.expect("get"), Some(p.clone()));
    assert_eq!(b.confirms.decide(&id, Some("other"), true).await.expect("decide"), Decided::NoPending);
    let (ra, rb) = tokio::join!(a.confirms.decide(&id, None, true), b.confirms.decide(&id, Some("call-1"), false));
    let (ra, rb) = (ra.expect("a"), rb.expect("b"));
    let winners = [&ra, &rb].iter().filter(|d| matches!(d, Decided::Claimed(_))).count();
    assert_eq!(winners, 1, "exactly one decision wins: {ra:?} / {rb:?}");
    let first = matches!(ra, Decided::Claimed(_));
    match a.confirms.decide(&id, Some("call-1"), !first).await.expect("repeat") {
        Decided::AlreadyDecided { approved, tool_call_id, request_id } => {
            assert_eq!(approved, first);
            assert_eq!(tool_call_id, "call-1");
            assert_eq!(request_id, "req-1");
        }
        other => panic!("repeat must return the first decision, got {other:?}"),
    }
    assert_eq!(b.confirms.last_decision(&id).await.expect("last"), Some(("call-1".into(), first, "req-1".into())));
    assert_eq!(b.confirms.get(&id).await.expect("get"), None);
    assert_eq!(a.confirms.pending_count().await.expect("count"), 0, "a decided call is no longer pending");
    // Cancel takes a parked turn exactly once.
    a.confirms.park(&parked(&id, "call-2", now_ms() + 60_000)).await.expect("park");
    assert_eq!(b.confirms.pending_count().await.expect("count"), 1, "every pod counts every parked turn");
    let (ta, tb) = tokio::join!(a.confirms.take(&id, None), b.confirms.take(&id, None));
    assert_eq!(ta.expect("a").is_some() as u8 + tb.expect("b").is_some() as u8, 1);
    assert_eq!(a.confirms.pending_count().await.expect("count"), 0, "a taken call is no longer pending");
    // Expiry is visible to any pod.
    let id2 = sid();
    a.confirms.park(&parked(&id2, "call-3", now_ms() - 1)).await.expect("park");
    let expired = b.confirms.expired(now_ms(), 100).await.expect("expired");
    assert!(expired.contains(&id2), "{expired:?}");
    b.confirms.take(&id2, None).await.expect("take");
}

/// One holder at a time; renew only by the holder; a lapsed lease frees the slot and is claimed once.
pub async fn turn_leases(a: &Backends, b: &Backends) {
    let id = sid();
    let t1 = TurnInfo { turn_id: "t1".into(), request_id: "r1".into(), pod_id: "pod-a".into() };
    let t2 = TurnInfo { turn_id: "t2".into(), request_id: "r2".into(), pod_id: "pod-b".into() };
    assert!(a.leases.acquire(&id, &t1, 5_000).await.expect("acquire"));
    assert!(!b.leases.acquire(&id, &t2, 5_000).await.expect("acquire"), "second turn must be refused");
    assert_eq!(b.leases.current(&id).await.expect("current"), Some(t1.clone()));
    assert!(!b.leases.renew(&id, &t2, 5_000).await.expect("renew"), "only the holder renews");
    let moved = TurnInfo { pod_id: "pod-b".into(), ..t1.clone() };
    assert!(b.leases.renew(&id, &moved, 5_000).await.expect("renew"));
    assert_eq!(a.leases.current(&id).await.expect("current"), Some(moved));
    assert!(!b.leases.release(&id, "t2").await.expect("release"));
    assert!(a.leases.release(&id, "t1").await.expect("release"));
    assert_eq!(b.leases.current(&id).await.expect("current"), None);
    assert!(b.leases.acquire(&id, &t2, 1_000).await.expect("acquire after release"));
    // Let it lapse: the slot frees itself and the lapsed turn is claimed by exactly one sweeper.
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(a.leases.current(&id).await.expect("current"), None);
    let now = now_ms();
    let (ca, cb) = tokio::join!(a.leases.claim_lapsed(now, 100), b.leases.claim_lapsed(now, 100));
    let claimed: Vec<_> = ca.expect("a").into_iter().chain(cb.expect("b")).filter(|(s, _)| s == &id).collect();
    assert_eq!(claimed.len(), 1, "{claimed:?}");
    assert_eq!(claimed[0].1, t2);
    assert!(a.leases.claim_lapsed(now_ms(), 100).await.expect("again").iter().all(|(s, _)| s != &id));
    let t3 = TurnInfo { turn_id: "t3".into(), request_id: "r3".into(), pod_id: "pod-a".into() };
    assert!(a.leases.acquire(&id, &t3, 5_000).await.expect("acquire after lapse"));
    assert!(a.leases.release(&id, "t3").await.expect("release"));
    assert!(a.leases.claim_lapsed(now_ms() + 10_000, 100).await.expect("none").iter().all(|(s, _)| s != &id));
}

/// A turn's appends are fenced by its lease: the holder appends, anyone else's guarded append is refused, the
/// terminal append frees the slot, and a lapsed turn is ended exactly once, only while no lease runs.
pub async fn guarded_appends(a: &Backends, b: &Backends) {
    let id = sid();
    let t1 = TurnInfo { turn_id: "t1".into(), request_id: "r1".into(), pod_id: "pod-a".into() };
    let ev = |n: u32| vec![format!(r#"{{"n":{n}}}"#)];
    assert!(a.leases.acquire(&id, &t1, 5_000).await.expect("acquire"));
    assert_eq!(a.log.append_guarded(&id, ev(1), Guard::Holder("t1")).await.expect("append"), Some(1));
    assert_eq!(b.log.append_guarded(&id, ev(2), Guard::Holder("t0")).await.expect("append"), None, "not the holder");
    assert_eq!(b.log.append_guarded(&id, ev(2), Guard::Lapsed("t1")).await.expect("append"), None, "lease is live");
    assert_eq!(b.log.append_guarded(&id, ev(2), Guard::Release("t1")).await.expect("append"), Some(2));
    assert_eq!(a.leases.current(&id).await.expect("current"), None, "the terminal append freed the slot");
    assert_eq!(a.log.append_guarded(&id, ev(3), Guard::Holder("t1")).await.expect("append"), None, "released");
    assert!(a.leases.claim_lapsed(now_ms() + 60_000, 1_000).await.expect("claim").iter().all(|(s, _)| s != &id));

    // A turn whose lease lapses: its own appends are refused from then on, and the sweeper ends it once.
    let t2 = TurnInfo { turn_id: "t2".into(), request_id: "r2".into(), pod_id: "pod-b".into() };
    assert!(b.leases.acquire(&id, &t2, 300).await.expect("acquire"));
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(b.log.append_guarded(&id, ev(4), Guard::Holder("t2")).await.expect("append"), None, "lapsed");
    let claimed = a.leases.claim_lapsed(now_ms(), 1_000).await.expect("claim");
    assert!(claimed.iter().any(|(s, i)| s == &id && i == &t2), "{claimed:?}");
    let retried = b.leases.claim_lapsed(now_ms(), 1_000).await.expect("claim");
    assert!(retried.iter().all(|(s, _)| s != &id), "handed to one caller at a time: {retried:?}");
    // The claimer's append failed (not made here): after the retry window the turn is handed out again.
    let later = now_ms() + LAPSED_RETRY_MS + 1;
    assert!(b.leases.claim_lapsed(later, 1_000).await.expect("claim").iter().any(|(s, _)| s == &id));
    let (ea, eb) = tokio::join!(
        a.log.append_guarded(&id, ev(5), Guard::Lapsed("t2")),
        b.log.append_guarded(&id, ev(5), Guard::Lapsed("t2"))
    );
    let ended: Vec<u64> = [ea.expect("a"), eb.expect("b")].into_iter().flatten().collect();
    assert_eq!(ended, vec![3], "ended exactly once, right after the last event");
    let much_later = now_ms() + 2 * LAPSED_RETRY_MS;
    assert!(a.leases.claim_lapsed(much_later, 1_000).await.expect("claim").iter().all(|(s, _)| s != &id));
    let t3 = TurnInfo { turn_id: "t3".into(), request_id: "r3".into(), pod_id: "pod-a".into() };
    assert!(a.leases.acquire(&id, &t3, 5_000).await.expect("the slot is free again"));
    assert_eq!(a.log.append_guarded(&id, ev(6), Guard::Lapsed("t2")).await.expect("append"), None);
    assert_eq!(a.log.append_guarded(&id, vec![], Guard::Release("t3")).await.expect("release"), Some(0));
    assert_eq!(b.log.bounds(&id).await.expect("bounds"), (1, 3));

    // Another service's publish appends only into a session that exists, and never brings a deleted one's log
    // back.
    let live = sid();
    assert_eq!(a.log.append_guarded(&live, ev(1), Guard::Live).await.expect("append"), None, "no such session");
    assert_eq!(b.log.bounds(&live).await.expect("bounds"), (0, 0), "nothing was logged");
    let (rec, conv) = session(&live, "alice");
    a.sessions.create_session(&rec, Some(&conv)).await.expect("create");
    assert_eq!(b.log.append_guarded(&live, ev(1), Guard::Live).await.expect("append"), Some(1));
    b.sessions.delete_session(&rec).await.expect("delete");
    assert_eq!(a.log.append_guarded(&live, ev(2), Guard::Live).await.expect("append"), None, "deleted");

    // A session deleted while its turn runs stops the turn: the lease and the turn record go with the session,
    // so neither the turn's next events, nor its ending, nor a sweeper's bring the deleted log back.
    let doomed = sid();
    let (rec, conv) = session(&doomed, "bob");
    a.sessions.create_session(&rec, Some(&conv)).await.expect("create");
    let t4 = TurnInfo { turn_id: "t4".into(), request_id: "r4".into(), pod_id: "pod-a".into() };
    assert!(a.leases.acquire(&doomed, &t4, 5_000).await.expect("acquire"));
    assert_eq!(a.log.append_guarded(&doomed, ev(1), Guard::Holder("t4")).await.expect("append"), Some(1));
    b.sessions.delete_session(&rec).await.expect("delete");
    for guard in [Guard::Holder("t4"), Guard::Release("t4"), Guard::Lapsed("t4")] {
        assert_eq!(a.log.append_guarded(&doomed, ev(2), guard).await.expect("append"), None, "{guard:?}");
    }
    assert!(b.log.read_after(&doomed, 0, 10).await.expect("read").is_empty(), "the deleted log stays gone");

    // A parked turn resumes only while its record is its own: not once a sweeper ended it, nor once a newer
    // turn took the slot.
    let resuming = sid();
    let t5 = TurnInfo { turn_id: "t5".into(), request_id: "r5".into(), pod_id: String::new() };
    assert!(a.leases.acquire(&resuming, &t5, 5_000).await.expect("acquire"));
    let on_b = TurnInfo { pod_id: "pod-b".into(), ..t5.clone() };
    assert_eq!(b.leases.resume(&resuming, &on_b, 5_000).await.expect("resume"), Resumed::Held);
    assert_eq!(a.leases.current(&resuming).await.expect("current"), Some(on_b.clone()), "held by its new pod");
    assert!(a.leases.renew(&resuming, &t5, 50).await.expect("hand back"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(a.log.append_guarded(&resuming, ev(1), Guard::Lapsed("t5")).await.expect("end"), Some(1));
    assert_eq!(b.leases.resume(&resuming, &on_b, 5_000).await.expect("resume"), Resumed::Ended);
    assert_eq!(a.leases.current(&resuming).await.expect("current"), None, "an ended turn takes nothing back");
    let t6 = TurnInfo { turn_id: "t6".into(), request_id: "r6".into(), pod_id: "pod-a".into() };
    assert!(a.leases.acquire(&resuming, &t6, 5_000).await.expect("acquire"));
    assert_eq!(b.leases.resume(&resuming, &on_b, 5_000).await.expect("resume"), Resumed::Replaced);

    // A turn hands its lease over to its park only while that call is parked and the lease is its own.
    let handing = sid();
    let t7 = TurnInfo { turn_id: "turn-1".into(), request_id: "r7".into(), pod_id: "pod-a".into() };
    let held_by_park = TurnInfo { pod_id: String::new(), ..t7.clone() };
    assert!(a.leases.acquire(&handing, &t7, 5_000).await.expect("acquire"));
    a.confirms.park(&parked(&handing, "call-7", now_ms() + 60_000)).await.expect("park");
    assert!(!b.leases.hand_over(&handing, &held_by_park, "call-other", 60_000).await.expect("hand over"));
    assert!(b.leases.hand_over(&handing, &held_by_park, "call-7", 60_000).await.expect("hand over"));
    assert_eq!(a.leases.current(&handing).await.expect("current"), Some(held_by_park.clone()));
    // An answer took the park and resumed the turn elsewhere: a late hand-over changes nothing.
    assert!(matches!(a.confirms.decide(&handing, None, true).await.expect("decide"), Decided::Claimed(_)));
    assert_eq!(b.leases.resume(&handing, &t7, 5_000).await.expect("resume"), Resumed::Held);
    assert!(!a.leases.hand_over(&handing, &held_by_park, "call-7", 60_000).await.expect("hand over"));
    assert_eq!(a.leases.current(&handing).await.expect("current"), Some(t7), "the resumed turn keeps its lease");
}
