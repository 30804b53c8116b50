//! The per-session event log: a counter and a stream per session, one stream entry per appended batch;
//! appending assigns the seqs, trims the stream and publishes, in one script
//! ([`super::scripts::Scripts::append_batch`]), which guards its own resends.

use async_trait::async_trait;
use std::sync::Arc;

use fred::interfaces::{KeysInterface, StreamsInterface};
use fred::types::Value;

use super::conn::{array, corrupt, int, text, RedisStore, Shared};
use super::keys::seq_of;
use super::replicated::{Replicated, Settled, Ticketing};
use crate::backend::{BResult, BackendError, Channel, EventLog, Guard};

/// Stream entries read per XRANGE by [`EventLog::read_after`].
const READ_PAGE: usize = 128;

/// One stream entry: its id, its batch's first seq (`f`; none in an entry of one event written before batches)
/// and its events (`e`, one per line).
fn parse_entry(entry: Value) -> BResult<(String, Option<u64>, String)> {
    let mut parts = array(entry).into_iter();
    let id = parts.next().as_ref().and_then(text).ok_or_else(|| corrupt("log entry", "no id"))?;
    let fields = parts.next().map(array).unwrap_or_default();
    let field = |name: &str| {
        fields
            .chunks(2)
            .find(|kv| kv.first().and_then(text).as_deref() == Some(name))
            .and_then(|kv| kv.get(1).and_then(text))
    };
    let events = field("e").ok_or_else(|| corrupt("log entry", format!("no event in {id}")))?;
    let first = match field("f") {
        Some(f) => Some(f.parse::<u64>().map_err(|_| corrupt("log entry", format!("bad first seq in {id}")))?),
        None => None,
    };
    Ok((id, first, events))
}

#[async_trait]
impl EventLog for RedisStore {
    async fn append_guarded(&self, session_id: &str, events: Vec<String>, guard: Guard<'_>) -> BResult<Option<u64>> {
        if events.is_empty() && guard == Guard::None {
            return Ok(Some(0));
        }
        let s = self.s();
        let channel = Channel::Session(session_id.to_string()).name(&s.keys.prefix);
        // With `redis_wait_replicas` the pod publishes, once replicas have the events ([`settle_append`]): the
        // script gets no channel and no command. Otherwise the script publishes in the same step.
        let (channel, publish, kept_channel) = match (&s.replicated, s.cluster) {
            (Some(_), _) => (String::new(), "", Some(channel)),
            (None, true) => (channel, "SPUBLISH", None),
            (None, false) => (channel, "PUBLISH", None),
        };
        let (mode, turn) = match guard {
            Guard::None => ("none", ""),
            Guard::Holder(t) => ("holder", t),
            Guard::Release(t) => ("release", t),
            Guard::Lapsed(t) => ("lapsed", t),
            Guard::Live => ("live", ""),
            Guard::Orphan(request) => ("orphan", request),
        };
        let mut args = Vec::with_capacity(events.len() + 9);
        args.extend([s.log_len.to_string(), s.idle_ttl_s.to_string(), channel, publish.to_string()]);
        args.extend([mode.to_string(), turn.to_string(), crate::util::new_epoch()]);
        // The call's token: a resend of a call that ran is answered from its first run.
        args.push(uuid::Uuid::new_v4().simple().to_string());
        // Where this pod expects the counter: a running turn's appends follow each other (and its step, which
        // read the counter, and the session's last turn on this pod), so they find it there and need no token
        // bookkeeping. Other calls keep their token in the token key.
        args.push(match guard {
            Guard::Holder(_) | Guard::Release(_) => s.expected.get(session_id).unwrap_or(0).to_string(),
            _ => String::new(),
        });
        let n = events.len() as u64;
        let payload = events.join("\n");
        // Kept to publish after the wait (the script's copy goes to Redis): one copy, in that mode only.
        let kept = s.replicated.as_ref().zip(kept_channel).map(|(r, channel)| (r, channel, payload.clone()));
        args.extend([events.len().to_string(), payload]);
        let keys = ["seq", "log", "lease", "turn", "epoch", "session", "toks", "step"]
            .map(|k| s.keys.session_key(session_id, k));
        // Resend-safe by itself (a resend finds the counter moved, then its token), so fred may resend it after a
        // dropped connection.
        let (first, settled) = match kept {
            Some((replicated, channel, payload)) => {
                let (reply, at) = s.eval_ticketed(replicated, &s.scripts.append_batch, keys.to_vec(), args).await?;
                if int(&reply) == Some(-1) {
                    return Ok(None);
                }
                let v = array(reply);
                let first = v.first().and_then(int).and_then(|n| u64::try_from(n).ok());
                let (Some(first), Some(epoch)) = (first, v.get(1).and_then(text)) else {
                    return Err(corrupt("append_batch", "no seq and epoch returned"));
                };
                let batch = Unsettled { first, n, epoch, payload, channel, session_id: session_id.to_string() };
                let settled =
                    settle_append(&self.shared, replicated, at, batch, matches!(guard, Guard::Holder(_))).await?;
                (first, settled)
            }
            None => {
                let reply = s.eval(&s.scripts.append_batch, keys.to_vec(), args).await?;
                match int(&reply) {
                    Some(-1) => return Ok(None),
                    Some(n) => (u64::try_from(n).map_err(|_| corrupt("append_batch", "bad seq"))?, true),
                    None => return Err(corrupt("append_batch", "no seq returned")),
                }
            }
        };
        match guard {
            // The session's next turn on this pod, likely the next writer, starts where this one ended.
            Guard::Holder(_) | Guard::Release(_) => s.expected.set(session_id, first + n),
            Guard::Lapsed(_) | Guard::Orphan(_) => s.expected.forget(session_id),
            _ => {}
        }
        if let (Guard::Release(t) | Guard::Lapsed(t), true) = (guard, settled) {
            // The turn ended: its lapsed-lease index entry goes now rather than when a sweeper comes across it.
            // Best effort: a sweeper that finds it later drops it (the turn's record is gone). Not before replicas
            // have the ending: should a failover take it back, the entry is how a sweeper finds the turn again.
            if let Err(e) = s.unindex_turn(session_id, t).await {
                tracing::debug!(error = %e, %session_id, "could not drop an ended turn's index entry");
            }
        }
        Ok(Some(first))
    }

    async fn read_after(&self, session_id: &str, after: u64, max: usize) -> BResult<Vec<(u64, String)>> {
        if max == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        let s = self.s();
        let key = s.keys.session_key(session_id, "log");
        // With `redis_wait_replicas` the read goes on the replicated connection and is fenced there (see
        // [`fenced`]): a client is shown from the log only what a failover cannot take back, as it is live.
        let (client, first) = match &s.replicated {
            Some(r) => (&r.client, Some(r.before(&key))),
            None => (&s.client, None),
        };
        // An entry's id is its batch's last seq, so the first entry at or past `after + 1` holds the next event.
        let mut start = format!("{}-0", after + 1);
        let mut out = Vec::new();
        loop {
            // Entries hold one event or more: read a page of them at a time, never more than `max` events' worth.
            let page = max.saturating_sub(out.len()).min(READ_PAGE);
            let reply: Value =
                client.xrange(&key, start.as_str(), "+", Some(page as u64)).await.map_err(|e| s.err(e))?;
            let entries = array(reply);
            let full = entries.len() == page;
            let last_id = entries.last().cloned().map(parse_entry).transpose()?.map(|(id, _, _)| id);
            let mut events = events_after(entries, after)?;
            events.truncate(max.saturating_sub(out.len()));
            out.extend(events);
            match last_id {
                Some(id) if full && out.len() < max => start = format!("({id}"),
                _ => break,
            }
        }
        // Every event the read saw is on a replica before anyone is shown it (`Shared::fence_key`).
        if let Some(first) = first.filter(|_| !out.is_empty()) {
            s.fence_key(&key, Some(&first)).await?;
        }
        Ok(out)
    }

    async fn epoch(&self, session_id: &str) -> BResult<Option<String>> {
        let s = self.s();
        s.client.get(s.keys.session_key(session_id, "epoch")).await.map_err(|e| s.err(e))
    }

    async fn bounds(&self, session_id: &str) -> BResult<(u64, u64)> {
        let s = self.s();
        let reply = s
            .eval(
                &s.scripts.bounds,
                vec![s.keys.session_key(session_id, "seq"), s.keys.session_key(session_id, "log")],
                vec![],
            )
            .await?;
        let v = array(reply);
        let get = |i: usize| v.get(i).and_then(int).and_then(|n| u64::try_from(n).ok());
        match (get(0), get(1)) {
            (Some(o), Some(l)) => Ok((o, l)),
            _ => Err(corrupt("bounds", "unexpected reply")),
        }
    }
}

/// The events of stream entries (as XRANGE gives them) with a seq after `after`, in order.
pub(super) fn events_after(entries: Vec<Value>, after: u64) -> BResult<Vec<(u64, String)>> {
    let mut out = Vec::new();
    for entry in entries {
        let (id, first, events) = parse_entry(entry)?;
        let last = seq_of(&id).ok_or_else(|| corrupt("log entry", format!("bad id {id}")))?;
        let first = first.unwrap_or(last);
        out.extend((first..).zip(events.split('\n')).filter(|(seq, _)| *seq > after).map(|(s, e)| (s, e.to_string())));
    }
    Ok(out)
}

/// A logged batch not yet shown to anyone (`redis_wait_replicas`).
struct Unsettled {
    session_id: String,
    first: u64,
    n: u64,
    epoch: String,
    payload: String,
    /// The session's bus channel (full name).
    channel: String,
}

/// How long a batch not confirmed in time keeps waiting, in the background, to be published.
const LATE_SETTLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Publishes a replicated append once replicas have it (returns whether they have it now), so a failover never
/// takes back an event a client has seen (the next event would reuse its seq, and the client would drop it as
/// already seen).
///
/// - Confirmed: published now.
/// - Moved (its connection was replaced, e.g. by a Sentinel switch): followed to the master the pod talks to
///   now, published once replicas have it there; if that master does not hold it, it is lost and the caller is
///   told (a turn then hands itself over, and its takeover goes on from what the log really holds).
/// - Not confirmed within `redis_wait_timeout_ms`: it waits on in the background and is published once
///   confirmed. A running turn's append (`holder`) fails meanwhile: the turn must not stream on from events a
///   failover could take back, so it is handed over; its takeover, on a master that has them, reads them.
async fn settle_append(
    shared: &Arc<Shared>,
    replicated: &Arc<Replicated>,
    at: Ticketing,
    batch: Unsettled,
    holder: bool,
) -> BResult<bool> {
    match confirm(shared, replicated, at, &batch, replicated.timeout).await? {
        Fate::Published => Ok(true),
        Fate::Lost => Err(BackendError::Unconfirmed("the batch was lost by a change of master")),
        Fate::Waiting(at) => {
            let shared = shared.clone();
            let session_id = batch.session_id.clone();
            let replicated_too = replicated.clone();
            let waiting = replicated.late(async move {
                if let Ok(Fate::Waiting(_)) = confirm(&shared, &replicated_too, at, &batch, LATE_SETTLE).await {
                    tracing::warn!(
                        session_id = %batch.session_id,
                        "a logged batch was never confirmed by replicas and is not published (a resume reads it)"
                    );
                }
            });
            if !waiting {
                tracing::warn!(%session_id, "too many batches wait for replicas: this one is left to resumes");
            }
            if holder {
                return Err(BackendError::Unconfirmed("replicas did not confirm the turn's events in time"));
            }
            Ok(false)
        }
    }
}

/// What became of a replicated batch.
enum Fate {
    /// Replicas have it, and it was published.
    Published,
    /// Not confirmed yet (the ticket to go on waiting with).
    Waiting(Ticketing),
    /// The master the pod talks to now does not hold it: nobody was shown it.
    Lost,
}

/// Changes of master a write is followed across before it counts as not confirmed yet.
const MAX_MOVES: usize = 3;

/// Waits up to `within` for replicas to have the batch, following it to a new master when its connection is
/// replaced, and publishes it once they do.
async fn confirm(
    s: &Shared,
    replicated: &Arc<Replicated>,
    mut at: Ticketing,
    batch: &Unsettled,
    within: std::time::Duration,
) -> BResult<Fate> {
    let deadline = tokio::time::Instant::now() + within;
    let key = s.keys.session_key(&batch.session_id, "log");
    let (id, first) = (format!("{}-0", batch.first + batch.n - 1), batch.first.to_string());
    for _ in 0..=MAX_MOVES {
        let left = deadline.saturating_duration_since(tokio::time::Instant::now());
        match replicated.settle(&at, left).await {
            Settled::Confirmed => {
                publish(s, batch).await;
                return Ok(Fate::Published);
            }
            Settled::Short => return Ok(Fate::Waiting(at)),
            Settled::Moved => match s.follow_moved(replicated, &key, ["entry", &id, &first, &batch.payload]).await? {
                None => {
                    let seq = batch.first;
                    tracing::warn!(session_id = %batch.session_id, seq, "a batch was lost by a change of master before replicas had it; nobody was shown it");
                    return Ok(Fate::Lost);
                }
                Some((Settled::Confirmed, _)) => {
                    publish(s, batch).await;
                    return Ok(Fate::Published);
                }
                Some((_, next)) => at = next,
            },
        }
    }
    Ok(Fate::Waiting(at))
}

/// Should this publish fail, the events are logged and a socket's gap repair reads them.
async fn publish(s: &Shared, batch: &Unsettled) {
    let message = crate::backend::framing::message(batch.first, &batch.epoch, &batch.payload);
    // A session's channel: sharded in a cluster.
    if let Err(e) = s.publish(batch.channel.clone(), s.cluster, message).await {
        tracing::warn!(error = %e, session_id = %batch.session_id, "a replicated append was logged but not published");
    }
}
