//! The per-session event log: a counter and a stream per session, one stream entry per appended batch;
//! appending assigns the seqs, trims the stream and publishes, in one script
//! ([`super::scripts::Scripts::append_batch`]), which guards its own resends.

use async_trait::async_trait;
use fred::interfaces::{KeysInterface, PubsubInterface, StreamsInterface};
use fred::types::Value;

use super::conn::{array, corrupt, int, text, RedisStore};
use super::keys::seq_of;
use crate::backend::{BResult, Channel, EventLog, Guard};

/// Stream entries read per XRANGE by [`EventLog::read_after`].
const READ_PAGE: usize = 128;

/// One stream entry: its id, its batch's first seq (`f`; none in an entry of one event written before batches)
/// and its events (`e`, one per line).
fn batch(entry: Value) -> BResult<(String, Option<u64>, String)> {
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
        // With `redis_wait_replicas`, the bus message goes out only once replicas have the events (after the
        // `WAIT`), so a failover never takes back an event a client has already seen (the next one would reuse
        // its seq). Otherwise the script publishes in the same step.
        let after_wait = s.replicated.is_some();
        let publish = match (after_wait, s.cluster) {
            (true, _) => "",
            (false, true) => "SPUBLISH",
            (false, false) => "PUBLISH",
        };
        let (mode, turn) = match guard {
            Guard::None => ("none", ""),
            Guard::Holder(t) => ("holder", t),
            Guard::Release(t) => ("release", t),
            Guard::Lapsed(t) => ("lapsed", t),
            Guard::Live => ("live", ""),
        };
        let mut args = Vec::with_capacity(events.len() + 9);
        let publish_to = after_wait.then(|| channel.clone());
        args.extend([s.log_len.to_string(), s.idle_ttl_s.to_string(), channel, publish.to_string()]);
        args.extend([mode.to_string(), turn.to_string(), crate::util::new_epoch()]);
        // The call's token: a resend of a call that ran is answered from its first run.
        args.push(uuid::Uuid::new_v4().simple().to_string());
        let payload = events.join("\n");
        let kept = after_wait.then(|| payload.clone());
        args.extend([events.len().to_string(), payload]);
        let keys = ["seq", "log", "lease", "turn", "epoch", "session", "toks", "step"]
            .map(|k| s.keys.session_key(session_id, k));
        // Resend-safe by itself (a resend finds its token), so fred may resend it after a dropped connection.
        let reply = s.eval_replicated(&s.scripts.append_batch, keys.to_vec(), args).await?;
        let first = match (int(&reply), kept.zip(publish_to)) {
            (Some(-1), _) => return Ok(None),
            (Some(n), _) => u64::try_from(n).map_err(|_| corrupt("append_batch", "bad seq"))?,
            (None, Some((payload, channel))) => {
                let v = array(reply);
                let first = v.first().and_then(int).and_then(|n| u64::try_from(n).ok());
                let (Some(first), Some(epoch)) = (first, v.get(1).and_then(text)) else {
                    return Err(corrupt("append_batch", "no seq and epoch returned"));
                };
                // Replicas have it (or `redis_wait_timeout_ms` ran out): now the sockets may see it. Should this
                // publish fail, the events are logged and a socket's gap repair reads them.
                let message = crate::backend::framing::message(first, &epoch, &payload);
                let published = match s.cluster {
                    true => s.client.spublish::<(), _, _>(channel, message).await,
                    false => s.client.publish::<(), _, _>(channel, message).await,
                };
                if let Err(e) = published {
                    tracing::warn!(error = %e, %session_id, "a replicated append was logged but not published");
                }
                first
            }
            (None, None) => return Err(corrupt("append_batch", "no seq returned")),
        };
        if let Guard::Release(t) | Guard::Lapsed(t) = guard {
            // The turn ended: its lapsed-lease index entry goes now rather than when a sweeper comes across it.
            // Best effort: a sweeper that finds it later drops it (the turn's record is gone).
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
        // An entry's id is its batch's last seq, so the first entry at or past `after + 1` holds the next event.
        let mut start = format!("{}-0", after + 1);
        let mut out = Vec::new();
        loop {
            // Entries hold one event or more: read a page of them at a time, never more than `max` events' worth.
            let page = max.saturating_sub(out.len()).min(READ_PAGE);
            let reply: Value =
                s.client.xrange(&key, start.as_str(), "+", Some(page as u64)).await.map_err(|e| s.err(e))?;
            let entries = array(reply);
            let full = entries.len() == page;
            let mut last_id = None;
            for entry in entries {
                let (id, first, events) = batch(entry)?;
                let last = seq_of(&id).ok_or_else(|| corrupt("log entry", format!("bad id {id}")))?;
                let first = first.unwrap_or(last);
                for (seq, event) in (first..).zip(events.split('\n')) {
                    if seq > after && out.len() < max {
                        out.push((seq, event.to_string()));
                    }
                }
                last_id = Some(id);
            }
            match last_id {
                Some(id) if full && out.len() < max => start = format!("({id}"),
                _ => return Ok(out),
            }
        }
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
