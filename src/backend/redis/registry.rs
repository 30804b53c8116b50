//! The socket registry (which pod holds which socket, for `/admin/connections` and connection-targeted
//! publishes): one entry per socket with the heartbeat's TTL, the set of sessions it follows (written once per
//! attach), and zset indexes by session, user, org and all. A heartbeat is five commands and an attach three,
//! whatever the number of sessions (docs/benchmarks.md).
//! Also the health check.

use std::collections::BTreeSet;
use std::time::Duration;

use async_trait::async_trait;
use fred::interfaces::{ClientLike, KeysInterface, SetsInterface, SortedSetsInterface};
use fred::types::config::Options;
use fred::types::sorted_sets::{ZRange, ZRangeBound, ZRangeKind};
use fred::types::Expiration;
use futures_util::future::join_all;

use super::conn::{parse_json, to_json, RedisStore, Shared};
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
        // The entry without its sessions: they live in their own set, written once per attach, so the
        // heartbeat costs the same for a socket with 10,000 sessions as for one with one.
        let entry = SocketEntry { sessions: Vec::new(), ..entry.clone() };
        let id = entry.connection_id.as_str();
        let stored =
            s.client.set::<(), _, _>(s.keys.sock(id), to_json(&entry)?, Some(Expiration::PX(ttl)), None, false);
        let sessions = s.client.pexpire::<(), _>(s.keys.sock_sessions(id), ttl, None);
        let indexes = [
            s.keys.idx("user", &crate::backend::user_key(&entry.org_id, &entry.user_id)),
            s.keys.idx("org", &entry.org_id),
            s.keys.idx_all(),
        ];
        let deadline = now.saturating_add(ttl);
        let adds = join_all(indexes.into_iter().map(|idx| index_add(s, idx, id, deadline, now, ttl)));
        let (stored, sessions, adds) = tokio::join!(stored, sessions, adds);
        stored.map_err(|e| s.err(e))?;
        sessions.map_err(|e| s.err(e))?;
        adds.into_iter().collect::<BResult<Vec<_>>>()?;
        Ok(())
    }

    async fn attach(&self, connection_id: &str, session_id: &str, ttl_ms: u64) -> BResult<()> {
        let s = self.s();
        let now = now_ms();
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX).max(1);
        let set = s.keys.sock_sessions(connection_id);
        let added = s.client.sadd::<(), _, _>(&set, session_id);
        let kept = s.client.pexpire::<(), _>(&set, ttl, None);
        // Not renewed by heartbeats (that would cost a write per session): a session index member lives a day
        // and `list` re-checks it against the socket's entry and set, pruning the dead.
        let index = index_add(s, s.keys.idx("session", session_id), connection_id, now + SESSION_MEMBER_MS, now, ttl);
        let (added, kept, index) = tokio::join!(added, kept, index);
        added.map_err(|e| s.err(e))?;
        kept.map_err(|e| s.err(e))?;
        index.map(|_| ())
    }

    async fn remove(&self, connection_id: &str) -> BResult<()> {
        let s = self.s();
        let old: Option<String> = s.client.getdel(s.keys.sock(connection_id)).await.map_err(|e| s.err(e))?;
        let set = s.keys.sock_sessions(connection_id);
        let sessions: Vec<String> = s.client.smembers(&set).await.map_err(|e| s.err(e))?;
        let mut indexes: BTreeSet<String> = sessions.iter().map(|sid| s.keys.idx("session", sid)).collect();
        indexes.insert(s.keys.idx_all());
        if let Some(old) = old.and_then(|o| serde_json::from_str::<SocketEntry>(&o).ok()) {
            indexes.insert(s.keys.idx("user", &crate::backend::user_key(&old.org_id, &old.user_id)));
            indexes.insert(s.keys.idx("org", &old.org_id));
        }
        // Once per socket, at its close: every index it is in, concurrently (fred pipelines them).
        let removed = join_all(indexes.iter().map(|idx| s.client.zrem::<(), _, _>(idx, connection_id))).await;
        for r in removed {
            r.map_err(|e| s.err(e))?;
        }
        s.client.del::<(), _>(&set).await.map_err(|e| s.err(e))
    }

    async fn count_user(&self, org_id: &str, user_id: &str) -> BResult<usize> {
        let s = self.s();
        // The user index's scores are heartbeat deadlines: the live members are those after now.
        let index = s.keys.idx("user", &crate::backend::user_key(org_id, user_id));
        // Scores are whole milliseconds: after now is from now + 1.
        let n: u64 = s.client.zcount(&index, (now_ms() + 1) as f64, f64::INFINITY).await.map_err(|e| s.err(e))?;
        Ok(usize::try_from(n).unwrap_or(usize::MAX))
    }

    async fn forget_identity(&self, connection_id: &str, org_id: &str, user_id: &str) -> BResult<()> {
        let s = self.s();
        let user =
            s.client.zrem::<(), _, _>(s.keys.idx("user", &crate::backend::user_key(org_id, user_id)), connection_id);
        let org = s.client.zrem::<(), _, _>(s.keys.idx("org", org_id), connection_id);
        let (user, org) = tokio::join!(user, org);
        user.map_err(|e| s.err(e))?;
        org.map_err(|e| s.err(e))
    }

    async fn list(&self, filter: &SocketFilter, max: usize) -> BResult<Vec<SocketEntry>> {
        let s = self.s();
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(conn) = &filter.connection {
            let entry = self.entry(conn).await?;
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
            let fetched = join_all(ids.iter().map(|id| self.entry(id))).await;
            for (id, entry) in ids.iter().zip(fetched) {
                match entry? {
                    Some(entry) if filter.matches(&entry) && out.len() < max => out.push(entry),
                    Some(_) => {}
                    // A socket that is gone (its pod died): its session-index membership is not renewed by
                    // heartbeats, so it is pruned here.
                    None if filter.session.is_some() => {
                        s.client.zrem::<(), _, _>(&index, id.as_str()).await.map_err(|e| s.err(e))?;
                    }
                    None => {}
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

impl RedisStore {
    /// A live socket's entry with the sessions it follows.
    async fn entry(&self, connection_id: &str) -> BResult<Option<SocketEntry>> {
        let s = self.s();
        let raw: Option<String> = s.client.get(s.keys.sock(connection_id)).await.map_err(|e| s.err(e))?;
        let Some(raw) = raw else { return Ok(None) };
        let mut entry: SocketEntry = parse_json("socket entry", &raw)?;
        let mut sessions: Vec<String> =
            s.client.smembers(s.keys.sock_sessions(connection_id)).await.map_err(|e| s.err(e))?;
        sessions.sort();
        entry.sessions = sessions;
        Ok(Some(entry))
    }
}

/// Adds a socket to an index zset with its deadline, pruning expired members, in one script call.
async fn index_add(s: &Shared, index: String, id: &str, deadline: i64, now: i64, ttl: i64) -> BResult<()> {
    let keep = deadline.saturating_sub(now).max(ttl).saturating_add(INDEX_GRACE_MS).to_string();
    s.eval(&s.scripts.index_add, vec![index], vec![deadline.to_string(), id.to_string(), now.to_string(), keep])
        .await
        .map(|_| ())
}

/// How long a socket stays in a session's index without being re-attached; `list` prunes dead members sooner.
const SESSION_MEMBER_MS: i64 = 24 * 3_600_000;

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> bool {
        let opts = Options { timeout: Some(Duration::from_secs(1)), max_attempts: Some(1), ..Default::default() };
        let client = self.s().client.with_options(&opts);
        let ping = client.ping::<String>(None);
        matches!(tokio::time::timeout(Duration::from_millis(1_500), ping).await, Ok(Ok(_)))
    }
}
