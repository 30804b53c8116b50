//! Quotas in Redis: `P:quota:<key>:<window>` counts the uses of one window (`INCR`, expiring with the window);
//! one script takes a use only while under the limit, so pods racing for the last one never pass it.

use async_trait::async_trait;
use fred::interfaces::KeysInterface;

use super::conn::{int, RedisStore};
use crate::backend::quota::{window_of, QuotaStore};
use crate::backend::BResult;
use crate::util::now_ms;

impl RedisStore {
    fn quota_key(&self, key: &str, window_ms: u64) -> String {
        format!("{}:quota:{key}:{}", self.s().keys.prefix, window_of(now_ms(), window_ms))
    }
}

#[async_trait]
impl QuotaStore for RedisStore {
    async fn take(&self, key: &str, limit: u64, window_ms: u64) -> BResult<bool> {
        let s = self.s();
        let k = self.quota_key(key, window_ms);
        let reply =
            s.eval(&s.scripts.quota_take, vec![k], vec![limit.to_string(), window_ms.max(1).to_string()]).await?;
        Ok(int(&reply) == Some(1))
    }

    async fn give_back(&self, key: &str, window_ms: u64) -> BResult<()> {
        let s = self.s();
        let k = self.quota_key(key, window_ms);
        let left: i64 = s.client.decr(&k).await.map_err(|e| s.err(e))?;
        if left < 0 {
            // The window turned between the take and the give-back: nothing of this window to give back.
            s.client.incr::<i64, _>(&k).await.map_err(|e| s.err(e))?;
        }
        Ok(())
    }
}
