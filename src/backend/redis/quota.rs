//! Quotas in Redis: `P:quota:<key>:<window>` counts the uses of one window (`INCR`, expiring with the window);
//! one script takes a use only while under the limit, so pods racing for the last one never pass it.

use async_trait::async_trait;
use fred::interfaces::SortedSetsInterface;

use super::conn::{int, RedisStore};
use crate::backend::quota::{window_of, QuotaStore};
use crate::backend::BResult;
use crate::util::now_ms;

impl RedisStore {
    fn hold_key(&self, key: &str) -> String {
        format!("{}:hold:{key}", self.s().keys.prefix)
    }

    fn quota_key(&self, key: &str, window_ms: u64) -> String {
        format!("{}:quota:{key}:{}", self.s().keys.prefix, window_of(now_ms(), window_ms))
    }
}

#[async_trait]
impl QuotaStore for RedisStore {
    async fn take_amount(&self, key: &str, amount: u64, limit: u64, window_ms: u64) -> BResult<bool> {
        let s = self.s();
        let k = self.quota_key(key, window_ms);
        let args = vec![limit.to_string(), window_ms.max(1).to_string(), amount.to_string()];
        let reply = s.eval(&s.scripts.quota_take, vec![k], args).await?;
        Ok(int(&reply) == Some(1))
    }

    async fn give_back(&self, key: &str, window_ms: u64) -> BResult<()> {
        let s = self.s();
        // The window may have turned between the take and the give-back: then nothing of this window is given.
        s.eval(&s.scripts.quota_give, vec![self.quota_key(key, window_ms)], Vec::new()).await.map(drop)
    }

    async fn hold(&self, key: &str, holder: &str, limit: u64, ttl_ms: u64, now_ms: i64) -> BResult<bool> {
        let s = self.s();
        let until = now_ms.saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX / 2));
        let args = vec![
            holder.to_string(),
            limit.to_string(),
            until.to_string(),
            now_ms.to_string(),
            ttl_ms.max(1).to_string(),
        ];
        let reply = s.eval(&s.scripts.hold, vec![self.hold_key(key)], args).await?;
        Ok(int(&reply) == Some(1))
    }

    async fn release_hold(&self, key: &str, holder: &str) -> BResult<()> {
        let s = self.s();
        s.client.zrem::<(), _, _>(self.hold_key(key), holder).await.map_err(|e| s.err(e))
    }
}
