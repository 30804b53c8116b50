//! Parked turns waiting for a human decision: one record per session, the decisions already taken (so a
//! repeated decision gets the first answer again) and the cluster-wide expiry index the sweepers read.

use async_trait::async_trait;
use fred::interfaces::{HashesInterface, KeysInterface, SortedSetsInterface};
use tracing::warn;

use super::conn::{array, corrupt, parse_json, text, to_json, RedisStore};
use super::keys::expiry_member;
use crate::backend::{BResult, ConfirmStore, Decided, ParkedTurn};
use crate::util::now_ms;

#[async_trait]
impl ConfirmStore for RedisStore {
    async fn park(&self, parked: &ParkedTurn) -> BResult<()> {
        let s = self.s();
        // The record outlives its deadline so a sweeper that was down still finds it and fails it closed.
        let ttl_ms = (parked.expires_at_ms - now_ms()).max(0).saturating_add(s.idle_ms()).max(1_000);
        s.eval_replicated(
            &s.scripts.park,
            vec![s.keys.session_key(&parked.session_id, "confirm")],
            vec![
                to_json(parked)?,
                parked.call.tool_call_id.clone(),
                parked.request_id.clone(),
                ttl_ms.to_string(),
                parked.gate.name().to_string(),
            ],
        )
        .await?;
        s.client
            .zadd::<(), _, _>(
                s.keys.confirm_expiry(),
                None,
                None,
                false,
                false,
                (parked.expires_at_ms as f64, expiry_member(&parked.session_id, &parked.call.tool_call_id)),
            )
            .await
            .map_err(|e| s.err(e))
    }

    async fn get(&self, session_id: &str) -> BResult<Option<ParkedTurn>> {
        let s = self.s();
        let raw: Option<String> =
            s.client.hget(s.keys.session_key(session_id, "confirm"), "json").await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("parked turn", &r)).transpose()
    }

    async fn decide(&self, session_id: &str, tool_call_id: Option<&str>, approved: bool) -> BResult<Decided> {
        let s = self.s();
        let reply = s
            .eval_once_replicated(
                &s.scripts.decide,
                vec![
                    s.keys.session_key(session_id, "confirm"),
                    s.keys.session_key(session_id, "decided"),
                    s.keys.session_key(session_id, "last"),
                    s.keys.session_key(session_id, "lease"),
                ],
                vec![
                    tool_call_id.unwrap_or("").to_string(),
                    if approved { "1" } else { "0" }.into(),
                    s.idle_ttl_s.to_string(),
                    self.taken_hold_ms(session_id).await?,
                ],
            )
            .await?;
        let v: Vec<Option<String>> = array(reply).iter().map(text).collect();
        match v.first().cloned().flatten().as_deref() {
            Some("claimed") => {
                let json = v.get(1).cloned().flatten().ok_or_else(|| corrupt("decide", "no record"))?;
                let parked: ParkedTurn = parse_json("parked turn", &json)?;
                let call = v.get(2).cloned().flatten().unwrap_or_default();
                let removed = s
                    .client
                    .zrem::<(), _, _>(s.keys.confirm_expiry(), expiry_member(session_id, &call))
                    .await
                    .map_err(|e| s.err(e));
                if let Err(e) = removed {
                    // The decision stands; the stale index entry is pruned by `expired`.
                    warn!(error = %e, "could not remove a decided confirmation from the expiry index");
                }
                Ok(Decided::Claimed(Box::new(parked)))
            }
            Some("already") => {
                let call = v.get(1).cloned().flatten().unwrap_or_default();
                let decision = v.get(2).cloned().flatten().unwrap_or_default();
                let (flag, request_id) = decision.split_at(decision.len().min(1));
                Ok(Decided::AlreadyDecided { tool_call_id: call, approved: flag == "1", request_id: request_id.into() })
            }
            Some("none") => Ok(Decided::NoPending),
            _ => Err(corrupt("decide", "unexpected reply")),
        }
    }

    async fn last_decision(&self, session_id: &str) -> BResult<Option<(String, bool, String)>> {
        let s = self.s();
        let v: Vec<Option<String>> = s
            .client
            .hmget(s.keys.session_key(session_id, "last"), vec!["call", "decision"])
            .await
            .map_err(|e| s.err(e))?;
        match (v.first().cloned().flatten(), v.get(1).cloned().flatten()) {
            (Some(call), Some(decision)) => {
                let (flag, request_id) = decision.split_at(decision.len().min(1));
                Ok(Some((call, flag == "1", request_id.to_string())))
            }
            _ => Ok(None),
        }
    }

    async fn take(&self, session_id: &str, call: Option<&str>) -> BResult<Option<ParkedTurn>> {
        let s = self.s();
        let keys = vec![s.keys.session_key(session_id, "confirm"), s.keys.session_key(session_id, "lease")];
        let args = vec![call.unwrap_or("").to_string(), self.taken_hold_ms(session_id).await?];
        let reply = s.eval_once_replicated(&s.scripts.take, keys, args).await?;
        let v: Vec<Option<String>> = array(reply).iter().map(text).collect();
        let Some(json) = v.first().cloned().flatten() else {
            return Ok(None);
        };
        let call = v.get(1).cloned().flatten().unwrap_or_default();
        if let Err(e) = s.client.zrem::<(), _, _>(s.keys.confirm_expiry(), expiry_member(session_id, &call)).await {
            warn!(error = %e, "could not remove a taken confirmation from the expiry index");
        }
        parse_json("parked turn", &json).map(Some)
    }

    async fn expired(&self, now_ms: i64, max: usize) -> BResult<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let index = s.keys.confirm_expiry();
        let members = s.due(&index, now_ms, max).await?;
        let mut out = Vec::new();
        for member in members {
            let Ok((sid, call)) = serde_json::from_str::<(String, String)>(&member) else {
                let _ = s.client.zrem::<(), _, _>(&index, &member).await;
                continue;
            };
            // The index only points; the record decides. A decided, taken, replaced or vanished call is stale.
            let live: Option<String> =
                s.client.hget(s.keys.session_key(&sid, "confirm"), "call").await.map_err(|e| s.err(e))?;
            if live.as_deref() == Some(call.as_str()) {
                out.push(sid);
            } else {
                let _ = s.client.zrem::<(), _, _>(&index, &member).await;
            }
        }
        Ok(out)
    }

    async fn pending_count(&self) -> BResult<u64> {
        let s = self.s();
        s.client.zcard(s.keys.confirm_expiry()).await.map_err(|e| s.err(e))
    }
}

impl RedisStore {
    /// What a taken park's hold is cut to (`lua/cut_hold.lua`, run by `decide.lua` and `take.lua`), as the
    /// scripts' argument: two leases, plus `redis_wait_timeout_ms` when the take waits for replicas before the
    /// taker resumes. First brings the parked turn's
    /// lapsed-lease entry forward to when that cut hold runs out, so a sweeper ends the turn then should the
    /// taker's pod die before it resumes or ends it. Written before the script (the index is another slot):
    /// should the park not be taken after all, the sweeper finds the hold alive then and puts the entry back.
    async fn taken_hold_ms(&self, session_id: &str) -> BResult<String> {
        let s = self.s();
        // (Off with `redis_wait_replicas` for a while: Sentinel chaos runs with it had replies lacking a token the
        // client was shown. Runs without it had them too; they came from reads of a master being replaced, now
        // fenced: docs/benchmarks.md.)
        let waits = s.replicated.as_ref().map_or(0, |r| u64::try_from(r.timeout.as_millis()).unwrap_or(u64::MAX));
        let hold = s.lease_ms.saturating_mul(2).saturating_add(waits);
        let lease: Option<String> =
            s.client.get(s.keys.session_key(session_id, "lease")).await.map_err(|e| s.err(e))?;
        if let Some(info) = lease.and_then(|l| serde_json::from_str::<crate::backend::TurnInfo>(&l).ok()) {
            if info.pod_id.is_empty() {
                let due = crate::util::now_ms().saturating_add(i64::try_from(hold).unwrap_or(i64::MAX));
                s.index_turn_deadline(session_id, &info.turn_id, due, false).await?;
            }
        }
        Ok(hold.to_string())
    }
}
