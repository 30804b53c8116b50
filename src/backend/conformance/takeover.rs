//! Conformance checks for durable turn steps and takeover: a step is written only by the lease's holder, a
//! lapsed turn is taken over once, under a new turn id that fences the old one out, at most `max` times, and
//! the step goes with the turn's ending.

use std::time::Duration;

use super::{session, sid};
use crate::backend::*;

fn ev(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{{\"type\":\"stream_token\",\"i\":{i}}}")).collect()
}

fn info(turn: &str, pod: &str) -> TurnInfo {
    TurnInfo { turn_id: turn.into(), request_id: "req".into(), pod_id: pod.into() }
}

async fn lapse() {
    tokio::time::sleep(Duration::from_millis(120)).await;
}

pub async fn takeovers(a: &Backends, b: &Backends) {
    let id = sid();
    let (rec, conv) = session(&id, "alice");
    a.sessions.create_session(&rec, Some(&conv)).await.expect("create");
    let first = info("t1", "pod-a");
    assert!(a.leases.acquire(&id, &first, 60).await.expect("acquire"));
    assert!(!b.leases.checkpoint(&id, "other", "{}").await.expect("checkpoint"), "only the holder writes a step");
    assert_eq!(a.log.append_guarded(&id, ev(2), Guard::Holder("t1")).await.expect("append"), Some(1));
    assert!(a.leases.checkpoint(&id, "t1", "{\"step\":1}").await.expect("checkpoint"));
    assert_eq!(a.log.append_guarded(&id, ev(3), Guard::Holder("t1")).await.expect("append"), Some(3));

    // While the lease runs, nobody takes the turn over.
    let second = info("t2", "pod-b");
    assert_eq!(b.leases.take_over(&id, "t1", &second, 5_000, 2).await.expect("take"), TakeOver::Gone);
    lapse().await;
    assert_eq!(b.leases.take_over(&id, "wrong", &second, 5_000, 2).await.expect("take"), TakeOver::Gone);
    // Two sweepers at once: one takes it, from the step's seq, and the seq its own events start at.
    let third = info("t3", "pod-c");
    let (rb, rc) =
        tokio::join!(b.leases.take_over(&id, "t1", &second, 5_000, 2), a.leases.take_over(&id, "t1", &third, 5_000, 2));
    let (rb, rc) = (rb.expect("b"), rc.expect("c"));
    let taken = [&rb, &rc].into_iter().filter(|t| matches!(t, TakeOver::Taken { .. })).count();
    assert_eq!(taken, 1, "exactly one takeover: {rb:?} / {rc:?}");
    let (winner, holder) = if matches!(rb, TakeOver::Taken { .. }) { (rb, second) } else { (rc, third) };
    let TakeOver::Taken { checkpoint, from_seq, sent } = winner else { unreachable!() };
    assert_eq!(checkpoint, Checkpoint { seq: 2, state: "{\"step\":1}".into(), takeovers: 1 });
    assert_eq!(from_seq, 6);
    assert_eq!(sent, ev(3), "the events after the step, read with the takeover");
    assert_eq!(a.leases.current(&id).await.expect("current"), Some(holder.clone()));

    // The old turn is fenced out: no step, no event, no ending, no renewal.
    assert!(!a.leases.checkpoint(&id, "t1", "{\"stale\":1}").await.expect("checkpoint"));
    for guard in [Guard::Holder("t1"), Guard::Release("t1")] {
        assert_eq!(a.log.append_guarded(&id, ev(1), guard).await.expect("append"), None, "{guard:?}");
    }
    assert!(!a.leases.renew(&id, &first, 5_000).await.expect("renew"));
    let t = holder.turn_id.as_str();
    assert_eq!(b.log.append_guarded(&id, ev(1), Guard::Holder(t)).await.expect("append"), Some(6));

    // The new holder's lease lapses too, before it wrote a step: the step it took is taken over again, and the
    // count goes on; past `max`, nobody takes it.
    assert!(b.leases.renew(&id, &holder, 60).await.expect("shorten"));
    lapse().await;
    let fourth = info("t4", "pod-a");
    match a.leases.take_over(&id, t, &fourth, 60, 2).await.expect("take") {
        TakeOver::Taken { checkpoint, .. } => assert_eq!((checkpoint.seq, checkpoint.takeovers), (2, 2)),
        other => panic!("a second takeover: {other:?}"),
    }
    assert!(a.leases.checkpoint(&id, "t4", "{\"step\":2}").await.expect("checkpoint"));
    lapse().await;
    assert_eq!(b.leases.take_over(&id, "t4", &info("t5", "pod-b"), 60, 2).await.expect("take"), TakeOver::Exhausted);
    // The sweeper then ends it, and the step goes with the ending.
    assert_eq!(b.log.append_guarded(&id, ev(1), Guard::Lapsed("t4")).await.expect("end"), Some(7));
    assert_eq!(b.leases.take_over(&id, "t4", &info("t5", "pod-b"), 60, 9).await.expect("take"), TakeOver::Gone);

    // A turn that never wrote a step is not taken over; a new turn starts its count again; a turn's own
    // ending (release) forgets its step.
    let other = sid();
    assert!(a.leases.acquire(&other, &info("u1", "pod-a"), 60).await.expect("acquire"));
    lapse().await;
    assert_eq!(b.leases.take_over(&other, "u1", &info("u2", "pod-b"), 60, 2).await.expect("take"), TakeOver::Unsaved);
    assert_eq!(b.log.append_guarded(&other, ev(1), Guard::Lapsed("u1")).await.expect("end"), Some(1));
    assert!(a.leases.acquire(&other, &info("u3", "pod-a"), 60).await.expect("acquire"));
    assert!(a.leases.checkpoint(&other, "u3", "{}").await.expect("checkpoint"));
    assert!(a.leases.release(&other, "u3").await.expect("release"));
    assert!(a.leases.acquire(&other, &info("u4", "pod-a"), 60).await.expect("acquire"));
    lapse().await;
    assert_eq!(b.leases.take_over(&other, "u4", &info("u5", "pod-b"), 60, 2).await.expect("take"), TakeOver::Unsaved);
}

/// The ending of a turn whose state a failover took back ([`Guard::Orphan`]): appended only when no lease runs,
/// no record is there (neither a turn a sweeper can claim nor the mark an ending leaves) and the session exists;
/// once. A turn ended by its own ending or a sweeper's is never ended again this way.
pub async fn orphans(a: &Backends, b: &Backends) {
    let id = sid();
    let (rec, conv) = session(&id, "alice");
    a.sessions.create_session(&rec, Some(&conv)).await.expect("create");

    // A running turn, and one whose lease lapsed (a sweeper's to claim): not an orphan.
    assert!(a.leases.acquire(&id, &info("t1", "pod-a"), 60).await.expect("acquire"));
    assert_eq!(b.log.append_guarded(&id, ev(1), Guard::Orphan("req")).await.expect("append"), None, "the lease runs");
    assert!(!b.leases.rewatch(&id).await.expect("rewatch"), "a running turn needs no sweeper");
    lapse().await;
    assert_eq!(
        b.log.append_guarded(&id, ev(1), Guard::Orphan("req")).await.expect("append"),
        None,
        "a record is there"
    );
    assert!(b.leases.rewatch(&id).await.expect("rewatch"), "a lapsed turn is watched again");
    let claimed = b.leases.claim_lapsed(crate::util::now_ms(), 100).await.expect("claim");
    assert!(claimed.iter().any(|(s, i)| *s == id && i.turn_id == "t1"), "a sweeper finds it: {claimed:?}");

    // Ended by a sweeper (or by itself): never again.
    assert_eq!(b.log.append_guarded(&id, ev(1), Guard::Lapsed("t1")).await.expect("end"), Some(1));
    assert_eq!(a.log.append_guarded(&id, ev(1), Guard::Orphan("req")).await.expect("append"), None, "it ended");
    assert!(!a.leases.rewatch(&id).await.expect("rewatch"), "an ended turn is no sweeper's");
    assert!(a.leases.acquire(&id, &info("t2", "pod-a"), 5_000).await.expect("acquire"));
    assert_eq!(a.log.append_guarded(&id, ev(1), Guard::Release("t2")).await.expect("end"), Some(2));
    assert_eq!(b.log.append_guarded(&id, ev(1), Guard::Orphan("req")).await.expect("append"), None, "it ended");

    // A turn whose lease and record are gone without an ending (here given back, as a failover takes them back):
    // its ending is appended, once.
    assert!(a.leases.acquire(&id, &info("t3", "pod-a"), 5_000).await.expect("acquire"));
    assert!(a.leases.release(&id, "t3").await.expect("release"));
    let (x, y) = tokio::join!(
        a.log.append_guarded(&id, ev(1), Guard::Orphan("req")),
        b.log.append_guarded(&id, ev(1), Guard::Orphan("req"))
    );
    let ended: Vec<_> = [x.expect("a"), y.expect("b")].into_iter().flatten().collect();
    assert_eq!(ended, vec![3], "one ending");
    assert!(!a.leases.rewatch(&id).await.expect("rewatch"));

    // Never into a session that is gone.
    let gone = sid();
    assert_eq!(a.log.append_guarded(&gone, ev(1), Guard::Orphan("req")).await.expect("append"), None, "no session");
    assert_eq!(a.log.read_after(&gone, 0, 10).await.expect("read"), vec![], "no log brought back");
}
