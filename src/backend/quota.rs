//! Cluster-wide quotas: counters shared by every pod, so a limit cannot be multiplied by opening more sockets
//! or reaching more pods. A fixed window per key (the window's index is part of the key), counted atomically
//! in the backend; a use that would pass the limit is not counted.

use async_trait::async_trait;

use super::BResult;

/// Counters of uses per key and window, shared by every pod.
#[async_trait]
pub trait QuotaStore: Send + Sync {
    /// Counts one use of `key` in the current window of `window_ms`; false (nothing counted) when `limit`
    /// uses are already counted there.
    async fn take(&self, key: &str, limit: u64, window_ms: u64) -> BResult<bool> {
        self.take_amount(key, 1, limit, window_ms).await
    }
    /// Counts `amount` uses of `key` at once (e.g. bytes replayed); false (nothing counted) when they would
    /// take the window's count past `limit`.
    async fn take_amount(&self, key: &str, amount: u64, limit: u64, window_ms: u64) -> BResult<bool>;
    /// Uncounts one use of `key` in the current window (the request it was taken for did nothing).
    async fn give_back(&self, key: &str, window_ms: u64) -> BResult<()>;
    /// Holds one of at most `limit` places of `key` for `holder` until `now_ms + ttl_ms` (holding again renews
    /// it; a holder already in keeps its place whatever the limit). False (nothing held) when `limit` others hold
    /// one. A place not renewed lapses, so a dead pod's holds free themselves: concurrent turns per user.
    async fn hold(&self, key: &str, holder: &str, limit: u64, ttl_ms: u64, now_ms: i64) -> BResult<bool>;
    /// Gives `holder`'s place of `key` back.
    async fn release_hold(&self, key: &str, holder: &str) -> BResult<()>;
}

/// The current window's index for `window_ms` (0 when the window is 0).
pub(crate) fn window_of(now_ms: i64, window_ms: u64) -> i64 {
    now_ms.checked_div(i64::try_from(window_ms).unwrap_or(i64::MAX)).unwrap_or(0)
}
