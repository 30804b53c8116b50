//! The socket registry (which pod holds which socket, for `/admin/connections` and connection-targeted
//! publishes): one entry per socket with the heartbeat's TTL, and zset indexes by session, user, org and all.
//! Also the health check.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, KeysInterface, SortedSetsInterface};
use fred::types::config::Options;
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use fred::types::Expiration;
use futures_util::future::join_all;

use super::conn::{parse_json, to_json, RedisStore};
use super::keys::entry_indexes;
use crate::backend::{BResult, Health, Registry, SocketEntry, SocketFilter};
use crate::util::now_ms;

/// How long an index key outlives its newest member, so one slow heartbeat never drops a live socket.
const INDEX_GRACE_MS: i64 = 60_000;
/// Candidates read per index page when listing sockets.
const LIST_PAGE: i64 = 256;

#[async_trait]
impl Registry for RedisStore {
    async fn upsert(&self, entry: &SocketEntry, ttl_ms: u64) -> BResult<()> {
        let s = self.s();
        let now = now_ms();
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX).max(1);
        let deadline = now.saturating_add(ttl);
        let key = s.keys.sock(&entry.connection_id);
        let old: Option<String> =
            s.client.set(&key, to_json(entry)?, Some(Expiration::PX(ttl)), None, true).await.map_err(|e| s.err(e))?;
        let new_idx = entry_indexes(&s.keys, entry);
        let keep = ttl.saturating_add(INDEX_GRACE_MS).to_string();
        let adds = new_idx.iter().map(|idx| {
            s.eval(
                &s.scripts.index_add,
                vec![idx.clone()],
                vec![deadline.to_string(), entry.connection_id.clone(), now.to_string(), keep.clone()],
            )
        });
        for r in join_all(adds).await {
            r?;
        }
        // Drop the socket from indexes it left (e.g. detached from a session); list() re-checks anyway.
        if let Some(old) = old.and_then(|o| serde_json::from_str::<SocketEntry>(&o).ok()) {
            for idx in entry_indexes(&s.keys, &old).difference(&new_idx) {
                s.client.zrem::<(), _, _>(idx, entry.connection_id.as_str()).await.map_err(|e| s.err(e))?;
            }
        }
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> BResult<()> {
        let s = self.s();
        let key = s.keys.sock(connection_id);
        let old: Option<String> = s.client.getdel(&key).await.map_err(|e| s.err(e))?;
        let mut indexes = BTreeSet::from([s.keys.idx_all()]);
        if let Some(old) = old.and_then(|o| serde_json::from_str::<SocketEntry>(&o).ok()) {
            indexes.extend(entry_indexes(&s.keys, &old));
        }
        for idx in indexes {
            s.client.zrem::<(), _, _>(idx, connection_id).await.map_err(|e| s.err(e))?;
        }
        Ok(())
    }

    async fn list(&self, filter: &SocketFilter, max: usize) -> BResult<Vec<SocketEntry>> {
        let s = self.s();
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(conn) = &filter.connection {
            let raw: Option<String> = s.client.get(s.keys.sock(conn)).await.map_err(|e| s.err(e))?;
            let entry = raw.map(|r| parse_json::<SocketEntry>("socket entry", &r)).transpose()?;
            return Ok(entry.filter(|e| filter.matches(e)).into_iter().collect());
        }
        // The most selective index; the entries themselves are the truth and are re-filtered.
        let index = if let Some(sid) = &filter.session {
            s.keys.idx("session", sid)
        } else if let (Some(uid), Some(oid)) = (&filter.user, &filter.org) {
            s.keys.idx("user", &crate::backend::user_key(oid, uid))
        } else if let Some(oid) = &filter.org {
            s.keys.idx("org", oid)
        } else {
            s.keys.idx_all()
        };
        let live_from = ZRange { kind: ZRangeKind::Exclusive, range: ZRangeBound::Score(now_ms() as f64) };
        let mut out = Vec::new();
        let mut offset = 0i64;
        loop {
            let ids: Vec<String> = s
                .client
                .zrangebyscore(&index, live_from.clone(), "+inf", false, Some((offset, LIST_PAGE)))
                .await
                .map_err(|e| s.err(e))?;
            let got = ids.len() as i64;
            let fetched = join_all(ids.iter().map(|id| s.client.get::<Option<String>, _>(s.keys.sock(id)))).await;
            for raw in fetched {
                let Some(raw) = raw.map_err(|e| s.err(e))? else {
                    continue;
                };
                let entry: SocketEntry = parse_json("socket entry", &raw)?;
                if filter.matches(&entry) && out.len() < max {
                    out.push(entry);
                }
            }
            if got < LIST_PAGE || out.len() >= max {
                break;
            }
            offset += got;
        }
        out.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(out)
    }
}

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> bool {
        let opts = Options { timeout: Some(Duration::from_secs(1)), max_attempts: Some(1), ..Default::default() };
        let client = self.s().client.with_options(&opts);
        let ping = client.ping::<String>(None);
        matches!(tokio::time::timeout(Duration::from_millis(1_500), ping).await, Ok(Ok(_)))
    }
}
