//! Idempotent requests: a request that carries an `Idempotency-Key` claims the key; a retry of it gets the
//! first request's answer instead of acting again (for a while: the key's TTL). The trait is backend-neutral;
//! [`MemoryIdempotency`] is the memory sibling, the Redis one is `redis::idempotency`.

use std::collections::HashMap;
use std::sync::Arc;

use async_trait::async_trait;
use parking_lot::Mutex;

use super::BResult;
use crate::util::now_ms;

/// What claiming a key found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// The key is this request's: act, then [`IdempotencyStore::complete`] (or `abandon` on failure).
    Claimed,
    /// A first request with this key is still acting.
    InFlight,
    /// The first request's answer.
    Done(String),
}

/// Keys of idempotent requests, shared by every pod. Claims are first-wins across pods.
#[async_trait]
pub trait IdempotencyStore: Send + Sync {
    /// Claims `key` for `ttl_ms` (a claim whose request never completes lapses after that too).
    async fn claim(&self, key: &str, ttl_ms: u64) -> BResult<Claim>;
    /// Records the answer of the request that claimed `key`, kept `ttl_ms`.
    async fn complete(&self, key: &str, answer: &str, ttl_ms: u64) -> BResult<()>;
    /// Gives up a claim whose request failed, so that a retry acts.
    async fn abandon(&self, key: &str) -> BResult<()>;
}

/// The memory sibling: one map shared by every pod of a [`super::memory::MemoryBackend`].
#[derive(Default)]
pub struct MemoryIdempotency {
    /// key → (answer, None while the first request acts; expiry in Unix ms).
    keys: Mutex<HashMap<String, (Option<String>, i64)>>,
}

impl MemoryIdempotency {
    pub fn new() -> Arc<MemoryIdempotency> {
        Arc::new(MemoryIdempotency::default())
    }
}

#[async_trait]
impl IdempotencyStore for MemoryIdempotency {
    async fn claim(&self, key: &str, ttl_ms: u64) -> BResult<Claim> {
        let now = now_ms();
        let mut keys = self.keys.lock();
        keys.retain(|_, (_, expires)| *expires > now);
        Ok(match keys.get(key) {
            Some((Some(answer), _)) => Claim::Done(answer.clone()),
            Some((None, _)) => Claim::InFlight,
            None => {
                keys.insert(key.to_string(), (None, now.saturating_add(ttl_ms as i64)));
                Claim::Claimed
            }
        })
    }

    async fn complete(&self, key: &str, answer: &str, ttl_ms: u64) -> BResult<()> {
        let expires = now_ms().saturating_add(ttl_ms as i64);
        self.keys.lock().insert(key.to_string(), (Some(answer.to_string()), expires));
        Ok(())
    }

    async fn abandon(&self, key: &str) -> BResult<()> {
        let mut keys = self.keys.lock();
        if keys.get(key).is_some_and(|(answer, _)| answer.is_none()) {
            keys.remove(key);
        }
        Ok(())
    }
}
