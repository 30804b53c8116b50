//! Turn leases: one running turn per session (`SET NX PX`, renewed by compare-and-set on the turn id), the turn
//! record that outlives the lease so a sweeper can end a dead pod's turn, and the cluster-wide deadline index.

use async_trait::async_trait;
use fred::interfaces::{KeysInterface, SortedSetsInterface};
use fred::types::sorted_sets::Ordering as ZOrdering;
use fred::types::SetOptions;

use super::conn::{array, corrupt, int, parse_json, text, to_json, RedisStore};
use crate::backend::{BResult, TurnInfo, TurnLease, LAPSED_RETRY_MS};
use crate::util::now_ms;

#[async_trait]
impl TurnLease for RedisStore {
    async fn acquire(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let s = self.s();
        let deadline = now_ms().saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let reply = s
            .eval(
                &s.scripts.acquire,
                vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")],
                vec![to_json(info)?, ttl_ms.max(1).to_string(), s.idle_ttl_s.to_string()],
            )
            .await?;
        if int(&reply) != Some(1) {
            return Ok(false);
        }
        s.index_turn_deadline(session_id, deadline).await?;
        Ok(true)
    }

    async fn renew(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let s = self.s();
        let deadline = now_ms().saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let reply = s
            .eval(
                &s.scripts.renew,
                vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")],
                vec![info.turn_id.clone(), to_json(info)?, ttl_ms.max(1).to_string(), s.idle_ttl_s.to_string()],
            )
            .await?;
        if int(&reply) != Some(1) {
            return Ok(false);
        }
        s.index_turn_deadline(session_id, deadline).await?;
        Ok(true)
    }

    async fn release(&self, session_id: &str, turn_id: &str) -> BResult<bool> {
        let s = self.s();
        // The deadline index entry is left for `claim_lapsed` to prune: removing it here could remove the entry
        // of a turn that acquired the slot right after this release.
        let reply = s
            .eval_once(
                &s.scripts.release,
                vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")],
                vec![turn_id.to_string()],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }

    async fn current(&self, session_id: &str) -> BResult<Option<TurnInfo>> {
        let s = self.s();
        let raw: Option<String> = s.client.get(s.keys.session_key(session_id, "lease")).await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("turn lease", &r)).transpose()
    }

    async fn claim_lapsed(&self, now_ms: i64, max: usize) -> BResult<Vec<(String, TurnInfo)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let index = s.keys.turns_deadline();
        let due = s.due(&index, now_ms, max).await?;
        let mut out = Vec::new();
        for sid in due {
            // Moving the entry forward picks the one caller that handles it now (`GT CH`: only the first mover
            // changes it); it comes due again if this caller does not end the turn.
            let retry_at = (now_ms + LAPSED_RETRY_MS) as f64;
            let moved: i64 = s
                .client
                .zadd(&index, Some(SetOptions::XX), Some(ZOrdering::GreaterThan), true, false, (retry_at, sid.as_str()))
                .await
                .map_err(|e| s.err(e))?;
            if moved != 1 {
                continue;
            }
            let reply = s
                .eval_once(
                    &s.scripts.claim,
                    vec![s.keys.session_key(&sid, "lease"), s.keys.session_key(&sid, "turn")],
                    vec![],
                )
                .await?;
            let v = array(reply);
            match v.first().and_then(text).as_deref() {
                Some("claimed") => {
                    let json = v.get(1).and_then(text).ok_or_else(|| corrupt("claim", "no turn record"))?;
                    out.push((sid, parse_json("turn record", &json)?));
                }
                Some("alive") => {
                    // A lease runs (a new turn took the slot): put its deadline back so it is still watched.
                    let pttl = v.get(1).and_then(int).filter(|t| *t > 0).unwrap_or(1_000);
                    let deadline = crate::util::now_ms().saturating_add(pttl);
                    s.client
                        .zadd::<(), _, _>(
                            &index,
                            None,
                            Some(ZOrdering::GreaterThan),
                            false,
                            false,
                            (deadline as f64, sid.as_str()),
                        )
                        .await
                        .map_err(|e| s.err(e))?;
                }
                _ => {
                    // No turn record: ended (or released) since; the stale entry goes.
                    s.client.zrem::<(), _, _>(&index, sid.as_str()).await.map_err(|e| s.err(e))?;
                }
            }
        }
        Ok(out)
    }
}
