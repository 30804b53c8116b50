//! Turn leases: one running turn per session (`SET NX PX`, renewed by compare-and-set on the turn id), the turn
//! record that outlives the lease so a sweeper can end a dead pod's turn, and the cluster-wide deadline index.

use async_trait::async_trait;
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::types::scripts::Script;
use fred::types::sorted_sets::Ordering as ZOrdering;
use fred::types::{SetOptions, Value};
use futures_util::StreamExt;

use super::conn::{array, corrupt, int, parse_json, text, to_json, RedisStore};
use super::keys::parse_deadline_member;
use crate::backend::{BResult, Checkpoint, Resumed, TakeOver, TurnInfo, TurnLease, LAPSED_RETRY_MS};
use crate::util::now_ms;

#[async_trait]
impl TurnLease for RedisStore {
    async fn acquire(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let s = self.s();
        // Replicated (with `redis_wait_replicas`): a failover that lost a new turn's record would leave a turn
        // the client was told of (202) that no sweeper can ever find. So a start whose connection was replaced
        // before replicas had it (a Sentinel switch) counts only if the master the pod talks to now holds it.
        let record = s.keys.session_key(session_id, "turn");
        // The lapsed-lease entry goes first (the index is another slot): a pod that died between the start and
        // its entry left a turn no sweeper could find, and with replicas the start may wait seconds for them.
        let deadline = now_ms().saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        s.index_turn_deadline(session_id, &info.turn_id, deadline, false).await?;
        let (reply, settled) = s
            .eval_settled(
                &s.scripts.acquire,
                vec![s.keys.session_key(session_id, "lease"), record.clone()],
                vec![to_json(info)?, ttl_ms.max(1).to_string(), s.idle_ttl_s.to_string()],
            )
            .await?;
        if int(&reply) != Some(1) {
            s.unindex_turn(session_id, &info.turn_id).await?;
            return Ok(false);
        }
        // Not kept (not on a replica in time, or lost by a change of master): a failover could take the start
        // back after the client was told the turn runs, and then no sweeper could find it. It is given back.
        if let Err(e) = s.kept(settled, &record, ["turn", &info.turn_id, "", ""]).await {
            let _ = self.release(session_id, &info.turn_id).await;
            return Err(e);
        }
        Ok(true)
    }

    async fn renew(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let reply = self.set_lease(&self.s().scripts.renew, session_id, info, ttl_ms, None).await?;
        self.indexed_if(int(&reply) == Some(1), session_id, info, ttl_ms).await
    }

    async fn resume(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<Resumed> {
        let reply = self.set_lease(&self.s().scripts.resume, session_id, info, ttl_ms, None).await?;
        match text(&reply).as_deref() {
            Some("held") => {
                self.indexed_if(true, session_id, info, ttl_ms).await?;
                Ok(Resumed::Held)
            }
            Some("ended") => Ok(Resumed::Ended),
            Some("replaced") => Ok(Resumed::Replaced),
            other => Err(corrupt("resume", format!("unexpected reply {other:?}"))),
        }
    }

    async fn hand_over(&self, session_id: &str, info: &TurnInfo, call: &str, ttl_ms: u64) -> BResult<bool> {
        let reply = self.set_lease(&self.s().scripts.hand_over, session_id, info, ttl_ms, Some(call)).await?;
        self.indexed_if(int(&reply) == Some(1), session_id, info, ttl_ms).await
    }

    async fn release(&self, session_id: &str, turn_id: &str) -> BResult<bool> {
        let s = self.s();
        let reply = s
            .eval_once(
                &s.scripts.release,
                ["lease", "turn", "step"].map(|k| s.keys.session_key(session_id, k)).to_vec(),
                vec![turn_id.to_string()],
            )
            .await?;
        // The turn's own index entry (never another turn's: the member names the turn).
        s.unindex_turn(session_id, turn_id).await?;
        Ok(int(&reply) == Some(1))
    }

    async fn checkpoint(&self, session_id: &str, turn_id: &str, state: &str) -> BResult<bool> {
        let s = self.s();
        let keys = ["lease", "step", "seq"].map(|k| s.keys.session_key(session_id, k)).to_vec();
        let args = vec![turn_id.to_string(), state.to_string(), s.idle_ttl_s.to_string()];
        let step_key = keys[1].clone();
        // Writes the same step again on a resend: safe as it is.
        let (reply, settled) = s.eval_settled(&s.scripts.checkpoint, keys, args).await?;
        let next = int(&reply).and_then(|next| u64::try_from(next).ok()).filter(|next| *next > 0);
        match next {
            Some(next) => {
                // Replicated (`redis_wait_replicas`): a step a failover could take back is not one. A takeover
                // would go on from the one before, and run again a call this step said may have run.
                s.kept(settled, &step_key, ["step", turn_id, state, ""]).await?;
                s.expected.set(session_id, next);
                Ok(true)
            }
            None => Ok(false),
        }
    }

    async fn take_over(
        &self,
        session_id: &str,
        lapsed: &str,
        info: &TurnInfo,
        ttl_ms: u64,
        max: u32,
    ) -> BResult<TakeOver> {
        let s = self.s();
        let keys = ["lease", "turn", "step", "seq", "log"].map(|k| s.keys.session_key(session_id, k)).to_vec();
        let args = vec![
            lapsed.to_string(),
            to_json(info)?,
            info.turn_id.clone(),
            ttl_ms.max(1).to_string(),
            s.idle_ttl_s.to_string(),
            max.to_string(),
            s.log_len.to_string(),
        ];
        let record = keys[1].clone();
        let (reply, settled) = s.eval_once_settled(&s.scripts.take_over, keys, args).await?;
        let v = array(reply);
        let field = |i: usize| v.get(i).and_then(text);
        let number = |i: usize| field(i).and_then(|n| n.parse::<u64>().ok());
        match field(0).as_deref() {
            Some("taken") => {
                let (Some(seq), Some(state), Some(takeovers), Some(now)) = (number(1), field(2), number(3), number(4))
                else {
                    return Err(corrupt("take_over", "incomplete reply"));
                };
                // The new lease is watched by its own entry. The lapsed turn's entry stays until a claim finds
                // the record names a running turn (and drops it): should a failover lose this takeover's writes,
                // that entry still leads a sweeper to the lapsed turn.
                self.indexed_if(true, session_id, info, ttl_ms).await?;
                // Replicated (`redis_wait_replicas`): a takeover a failover could take back is not run. Made on a
                // master being replaced (a Sentinel switch not yet followed: the turn's lease lapsed there because
                // its pod renews it on the new one) it would run the turn beside its live self, or beside another
                // pod's takeover or ending on the new master: two endings. Unconfirmed, the new lease lapses
                // unrun and a sweeper claims the turn again (under that new id, when the write did stay).
                s.kept(settled, &record, ["turn", &info.turn_id, "", ""]).await?;
                let takeovers = u32::try_from(takeovers).unwrap_or(u32::MAX);
                let entries = v.get(5).cloned().map(array).unwrap_or_default();
                let sent = super::log::events_after(entries, seq)?.into_iter().map(|(_, e)| e).collect();
                Ok(TakeOver::Taken { checkpoint: Checkpoint { seq, state, takeovers }, from_seq: now + 1, sent })
            }
            Some("unsaved") => Ok(TakeOver::Unsaved),
            Some("exhausted") => Ok(TakeOver::Exhausted),
            Some("gone") => Ok(TakeOver::Gone),
            other => Err(corrupt("take_over", format!("unexpected reply {other:?}"))),
        }
    }

    async fn current(&self, session_id: &str) -> BResult<Option<TurnInfo>> {
        let s = self.s();
        let raw: Option<String> = s.client.get(s.keys.session_key(session_id, "lease")).await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("turn lease", &r)).transpose()
    }

    async fn rewatch(&self, session_id: &str) -> BResult<bool> {
        let s = self.s();
        let keys = vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")];
        let (lease, record): (Option<String>, Option<String>) = s.client.mget(keys).await.map_err(|e| s.err(e))?;
        // A tombstone (what an ending leaves, lua/append_batch.lua) is no turn.
        let Some(info) = record.filter(|_| lease.is_none()).and_then(|r| serde_json::from_str::<TurnInfo>(&r).ok())
        else {
            return Ok(false);
        };
        s.index_turn_deadline(session_id, &info.turn_id, now_ms(), true).await?;
        Ok(true)
    }

    async fn claim_lapsed(&self, now_ms: i64, max: usize) -> BResult<Vec<(String, TurnInfo)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let due = s.due(&s.keys.turns_deadline(), now_ms, max).await?;
        // One claim per session in a sweep: a session can have two due entries (a lapsed turn's, kept until a
        // claim finds a running turn, and its takeover's), both leading to the turn its record names; claiming
        // both set two endings (or takeovers) of that one turn going at once. The other waits for the next sweep.
        let mut sessions = std::collections::HashSet::new();
        let due = due.into_iter().filter(|m| sessions.insert(parse_deadline_member(m).0.to_string()));
        // Entries are independent (each session its own slot): claimed concurrently, a batch in a few round
        // trips rather than three per entry in turn.
        let claims = futures_util::stream::iter(due)
            .map(|member| async move { self.claim_one(&member, now_ms).await })
            .buffer_unordered(CLAIMS_IN_FLIGHT);
        let mut out = Vec::new();
        for claimed in claims.collect::<Vec<_>>().await {
            if let Some(c) = claimed? {
                out.push(c);
            }
        }
        Ok(out)
    }
}

impl RedisStore {
    /// Runs a script that sets the session's lease and turn record to `info` for `ttl_ms` under its own
    /// condition (`lua/renew.lua`, `resume.lua`, `hand_over.lua`: keys lease, turn record [, confirm]; arguments
    /// turn id, the record, ttl, idle ttl [, call]).
    async fn set_lease(
        &self,
        script: &Script,
        session_id: &str,
        info: &TurnInfo,
        ttl_ms: u64,
        call: Option<&str>,
    ) -> BResult<Value> {
        let s = self.s();
        let mut keys = vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")];
        let mut args = vec![info.turn_id.clone(), to_json(info)?, ttl_ms.max(1).to_string(), s.idle_ttl_s.to_string()];
        if let Some(call) = call {
            keys.push(s.keys.session_key(session_id, "confirm"));
            args.push(call.to_string());
        }
        s.eval(script, keys, args).await
    }

    /// When `set` holds, records the lease's new deadline in the lapsed-lease index; returns `set`.
    async fn indexed_if(&self, set: bool, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        if set {
            let deadline = now_ms().saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
            self.s().index_turn_deadline(session_id, &info.turn_id, deadline, false).await?;
        }
        Ok(set)
    }
}

/// Index entries claimed at once by one sweep.
const CLAIMS_IN_FLIGHT: usize = 32;

impl RedisStore {
    /// Claims one due entry of the lapsed-lease index for this caller, or leaves it (see `lua/claim.lua`).
    async fn claim_one(&self, member: &str, now_ms: i64) -> BResult<Option<(String, TurnInfo)>> {
        let s = self.s();
        let index = s.keys.turns_deadline();
        let (sid, turn) = parse_deadline_member(member);
        // Moving the entry forward picks the one caller that handles it now (`GT CH`: only the first mover
        // changes it); it comes due again if this caller does not end the turn.
        let retry_at = (now_ms + LAPSED_RETRY_MS) as f64;
        let moved: i64 = s
            .client
            .zadd(&index, Some(SetOptions::XX), Some(ZOrdering::GreaterThan), true, false, (retry_at, member))
            .await
            .map_err(|e| s.err(e))?;
        if moved != 1 {
            return Ok(None);
        }
        let reply = s
            .eval_once(
                &s.scripts.claim,
                vec![s.keys.session_key(sid, "lease"), s.keys.session_key(sid, "turn")],
                vec![turn.unwrap_or_default().to_string()],
            )
            .await?;
        let v = array(reply);
        match v.first().and_then(text).as_deref() {
            Some("claimed") => {
                let json = v.get(1).and_then(text).ok_or_else(|| corrupt("claim", "no turn record"))?;
                Ok(Some((sid.to_string(), parse_json("turn record", &json)?)))
            }
            Some(kind @ ("alive" | "other")) => {
                // A lease runs. `alive`: this entry's turn (or an entry of the older form, whose turn may be
                // another): its deadline is put back so it is still watched. `other`: the record is another
                // turn's, so this entry is stale and goes, but that turn gets an entry of its own first (a
                // takeover whose reply was lost never wrote it).
                let pttl = v.get(1).and_then(int).filter(|t| *t > 0).unwrap_or(1_000);
                let deadline = crate::util::now_ms().saturating_add(pttl);
                if kind == "alive" {
                    let gt = Some(ZOrdering::GreaterThan);
                    let entry = (deadline as f64, member);
                    s.client.zadd::<(), _, _>(&index, None, gt, false, false, entry).await.map_err(|e| s.err(e))?;
                    return Ok(None);
                }
                if let Some(turn) = v.get(2).and_then(text) {
                    s.index_turn_deadline(sid, &turn, deadline, true).await?;
                }
                s.client.zrem::<(), _, _>(&index, member).await.map_err(|e| s.err(e))?;
                Ok(None)
            }
            _ => {
                // No record of this turn: it ended (or was released) since; the stale entry goes.
                s.client.zrem::<(), _, _>(&index, member).await.map_err(|e| s.err(e))?;
                Ok(None)
            }
        }
    }
}
