//! The event log's conformance: seq, batches, reads from inside a batch, trimming and the bus message.

use super::{recv_message, sid};
use crate::backend::*;

/// Seq starts at 1 and has no gaps under concurrent appends from two pods; the log is bounded; publishes
/// carry the batch (`<first seq>:<epoch>` then the events, one per line) and reach a subscriber on the other pod.
pub async fn event_log_and_publish(a: &Backends, b: &Backends, log_len: usize) {
    let id = sid();
    assert_eq!(a.log.bounds(&id).await.expect("bounds"), (0, 0));
    assert_eq!(a.log.epoch(&id).await.expect("epoch"), None, "no epoch before the first event");
    let ch = Channel::Session(id.clone());
    let mut rx = b.bus.receiver();
    b.bus.subscribe(&ch).await.expect("subscribe");
    let s1 = a.log.append(&id, r#"{"n":1}"#).await.expect("append");
    assert_eq!(s1, 1);
    // A bus message opens with `<first seq>:<epoch>`; the epoch is the log's, the same from every pod.
    let epoch = b.log.epoch(&id).await.expect("epoch").expect("an epoch once the log exists");
    assert!(!epoch.is_empty() && !epoch.contains(':'), "{epoch}");
    assert_eq!(a.log.epoch(&id).await.expect("epoch").as_deref(), Some(epoch.as_str()));
    assert_eq!(recv_message(&mut rx, &ch).await, format!("1:{epoch}\n{{\"n\":1}}"));
    let mut tasks = Vec::new();
    for i in 0..20 {
        let log = if i % 2 == 0 { a.log.clone() } else { b.log.clone() };
        let id = id.clone();
        tasks.push(tokio::spawn(async move { log.append(&id, &format!(r#"{{"n":{}}}"#, i + 2)).await }));
    }
    let mut seqs = Vec::new();
    for t in tasks {
        seqs.push(t.await.expect("join").expect("append"));
    }
    seqs.sort();
    assert_eq!(seqs, (2..=21).collect::<Vec<u64>>(), "seq must be gap-free under concurrency");
    let all = b.log.read_after(&id, 0, 1000).await.expect("read");
    let got: Vec<u64> = all.iter().map(|(s, _)| *s).collect();
    assert_eq!(got, (1..=21).collect::<Vec<u64>>());
    let tail = b.log.read_after(&id, 19, 1000).await.expect("read");
    assert_eq!(tail.iter().map(|(s, _)| *s).collect::<Vec<_>>(), [20, 21]);
    assert_eq!(b.log.read_after(&id, 5, 2).await.expect("read").len(), 2);
    // A batch gets consecutive seqs and arrives as one message.
    let batch = vec![r#"{"b":1}"#.to_string(), r#"{"b":2}"#.to_string(), r#"{"b":3}"#.to_string()];
    assert_eq!(a.log.append_batch(&id, batch.clone()).await.expect("batch"), 22);
    // The 20 concurrent appends published one message each; the batch is the next, its three events in one.
    for _ in 0..20 {
        recv_message(&mut rx, &ch).await;
    }
    let lines = format!("22:{epoch}\n{{\"b\":1}}\n{{\"b\":2}}\n{{\"b\":3}}");
    assert_eq!(recv_message(&mut rx, &ch).await, lines);
    let read = |after: u64, max: usize| b.log.read_after(&id, after, max);
    let ev = |i: usize| (22 + i as u64, batch[i].clone());
    assert_eq!(read(21, 10).await.expect("read"), vec![ev(0), ev(1), ev(2)]);
    // A read from inside a batch (a resume at `afterSeq` 22) gets the rest of it, and `max` cuts it too.
    assert_eq!(
        (read(22, 10).await.expect("read"), read(21, 2).await.expect("read")),
        (vec![ev(1), ev(2)], vec![ev(0), ev(1)])
    );
    assert_eq!(a.log.append_batch(&id, Vec::new()).await.expect("empty batch"), 0);
    // Bounded: write past the limit; the oldest retained moves up, the latest stays exact.
    for _ in 0..(log_len + 50) {
        a.log.append(&id, "{}").await.expect("append");
    }
    let (oldest, latest) = b.log.bounds(&id).await.expect("bounds");
    assert_eq!(latest, 24 + log_len as u64 + 50);
    assert!(oldest > 1, "log must be trimmed");
    let retained = b.log.read_after(&id, 0, usize::MAX).await.expect("read");
    assert!(retained.len() <= log_len * 2, "log holds {} entries, limit {log_len}", retained.len());
    assert_eq!(retained.first().map(|e| e.0), Some(oldest));
    b.bus.unsubscribe(&ch).await.expect("unsubscribe");
}
