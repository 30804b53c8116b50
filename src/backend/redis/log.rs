//! The per-session event log: a counter and a stream per session; appending assigns the seqs, trims the
//! stream and publishes, in one script ([`super::scripts::Scripts::append_batch`]).

use async_trait::async_trait;
use fred::interfaces::{KeysInterface, StreamsInterface};
use fred::types::Value;

use super::conn::{array, corrupt, int, text, RedisStore};
use super::keys::seq_of;
use crate::backend::{BResult, Channel, EventLog, Guard};

#[async_trait]
impl EventLog for RedisStore {
    async fn append_guarded(&self, session_id: &str, events: Vec<String>, guard: Guard<'_>) -> BResult<Option<u64>> {
        if events.is_empty() && guard == Guard::None {
            return Ok(Some(0));
        }
        let s = self.s();
        let channel = Channel::Session(session_id.to_string()).name(&s.keys.prefix);
        let publish = if s.cluster { "SPUBLISH" } else { "PUBLISH" };
        let (mode, turn) = match guard {
            Guard::None => ("none", ""),
            Guard::Holder(t) => ("holder", t),
            Guard::Release(t) => ("release", t),
            Guard::Lapsed(t) => ("lapsed", t),
            Guard::Live => ("live", ""),
        };
        let mut args = Vec::with_capacity(events.len() + 6);
        args.extend([s.log_len.to_string(), s.idle_ttl_s.to_string(), channel, publish.to_string()]);
        args.extend([mode.to_string(), turn.to_string(), crate::util::new_epoch()]);
        args.extend(events);
        let reply = s
            .eval_once_replicated(
                &s.scripts.append_batch,
                vec![
                    s.keys.session_key(session_id, "seq"),
                    s.keys.session_key(session_id, "log"),
                    s.keys.session_key(session_id, "lease"),
                    s.keys.session_key(session_id, "turn"),
                    s.keys.session_key(session_id, "epoch"),
                    s.keys.session_key(session_id, "session"),
                ],
                args,
            )
            .await?;
        match int(&reply) {
            Some(-1) => Ok(None),
            Some(n) => u64::try_from(n).map(Some).map_err(|_| corrupt("append_batch", "bad seq")),
            None => Err(corrupt("append_batch", "no seq returned")),
        }
    }

    async fn read_after(&self, session_id: &str, after: u64, max: usize) -> BResult<Vec<(u64, String)>> {
        if max == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        let s = self.s();
        // fred rejects counts that do not fit its signed integer type; no log is that long anyway.
        let count = u64::try_from(max).unwrap_or(u64::MAX).min(i32::MAX as u64);
        let start = format!("{}-0", after + 1);
        let reply: Value = s
            .client
            .xrange(s.keys.session_key(session_id, "log"), start, "+", Some(count))
            .await
            .map_err(|e| s.err(e))?;
        let mut out = Vec::new();
        for entry in array(reply) {
            let mut parts = array(entry).into_iter();
            let id = parts.next().as_ref().and_then(text).ok_or_else(|| corrupt("log entry", "no id"))?;
            let seq = seq_of(&id).ok_or_else(|| corrupt("log entry", format!("bad id {id}")))?;
            let fields = parts.next().map(array).unwrap_or_default();
            // Fields come as [name, value, …]; the event is the value of `e`.
            let event = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("e"))
                .and_then(|kv| kv.get(1).and_then(text))
                .ok_or_else(|| corrupt("log entry", format!("no event in {id}")))?;
            out.push((seq, event));
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
