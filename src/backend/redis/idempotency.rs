//! Idempotency keys in Redis: `P:idem:<key>` holds a pending marker (`SET NX PX`: the first claim wins on
//! every pod), then the first request's answer, for the key's TTL.

use async_trait::async_trait;
use fred::interfaces::KeysInterface;
use fred::types::{Expiration, SetOptions};

use super::conn::RedisStore;
use crate::backend::idempotency::{Claim, IdempotencyStore};
use crate::backend::BResult;

/// The value of a claimed key until its answer is recorded (an answer is JSON, so it never equals this).
const PENDING: &str = "\u{0}pending";

fn px(ttl_ms: u64) -> Expiration {
    Expiration::PX(i64::try_from(ttl_ms).unwrap_or(i64::MAX).max(1))
}

#[async_trait]
impl IdempotencyStore for RedisStore {
    async fn claim(&self, key: &str, ttl_ms: u64) -> BResult<Claim> {
        let s = self.s();
        let k = s.keys.idempotency(key);
        let set: Option<String> =
            s.client.set(&k, PENDING, Some(px(ttl_ms)), Some(SetOptions::NX), false).await.map_err(|e| s.err(e))?;
        if set.is_some() {
            return Ok(Claim::Claimed);
        }
        let current: Option<String> = s.client.get(&k).await.map_err(|e| s.err(e))?;
        Ok(match current {
            Some(v) if v == PENDING => Claim::InFlight,
            Some(answer) => Claim::Done(answer),
            // Lapsed between the two commands: claim again.
            None => return Box::pin(self.claim(key, ttl_ms)).await,
        })
    }

    async fn complete(&self, key: &str, answer: &str, ttl_ms: u64) -> BResult<()> {
        let s = self.s();
        s.client
            .set::<(), _, _>(s.keys.idempotency(key), answer, Some(px(ttl_ms)), None, false)
            .await
            .map_err(|e| s.err(e))
    }

    async fn abandon(&self, key: &str) -> BResult<()> {
        let s = self.s();
        let k = s.keys.idempotency(key);
        // Only a pending claim goes; a recorded answer stays.
        let current: Option<String> = s.client.get(&k).await.map_err(|e| s.err(e))?;
        if current.as_deref() == Some(PENDING) {
            s.client.del::<(), _>(k).await.map_err(|e| s.err(e))?;
        }
        Ok(())
    }
}
