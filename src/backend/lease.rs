//! The turn lease: one running turn per session across pods, and the record a sweeper ends a dead pod's turn by.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BResult;

/// Who holds a session's turn slot.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TurnInfo {
    pub turn_id: String,
    pub request_id: String,
    /// Pod running the turn; empty while parked (no pod needed).
    pub pod_id: String,
}

impl TurnInfo {
    pub fn new(turn_id: &str, request_id: &str, pod_id: &str) -> TurnInfo {
        TurnInfo { turn_id: turn_id.to_string(), request_id: request_id.to_string(), pod_id: pod_id.to_string() }
    }
}

/// What [`TurnLease::resume`] found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resumed {
    /// The lease is the turn's: it runs.
    Held,
    /// The turn was ended meanwhile (its record is gone): it must not run, nor end again.
    Ended,
    /// Another turn holds the session: this one never ended, and must end now.
    Replaced,
}

/// How long a claimed lapsed turn is not handed out again (see [`TurnLease::claim_lapsed`]).
pub const LAPSED_RETRY_MS: i64 = 5_000;

/// One turn at a time per session, across pods: a lease renewed while the turn runs.
#[async_trait]
pub trait TurnLease: Send + Sync {
    /// Takes the slot if free. Records the turn so a sweeper can end it if its pod dies.
    async fn acquire(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool>;
    /// Extends the lease (and may change the holder's pod, e.g. parked → running) if `turn_id` holds it.
    async fn renew(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool>;
    /// Takes (or renews) the lease for a parked turn that resumes, only while its turn record is still its own,
    /// checked in the same step: a sweeper that ended the turn forgot the record with its ending.
    async fn resume(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<Resumed>;
    /// Hands a parked turn's lease over to its park (`info` held by no pod, for `ttl_ms`), only while `call` is
    /// still the call parked and the lease still the turn's, checked in the same step. False when not.
    async fn hand_over(&self, session_id: &str, info: &TurnInfo, call: &str, ttl_ms: u64) -> BResult<bool>;
    /// Frees the slot if `turn_id` holds it (or held it and it lapsed); forgets the turn record.
    async fn release(&self, session_id: &str, turn_id: &str) -> BResult<bool>;
    /// The current holder, if the lease is live.
    async fn current(&self, session_id: &str) -> BResult<Option<TurnInfo>>;
    /// Turns whose lease lapsed without release (their pod died or stalled). Each is handed to one caller at a
    /// time, which ends it with an append guarded by [`Guard::Lapsed`](super::Guard::Lapsed) (that forgets the turn record); a turn
    /// not ended that way (the caller died, the append failed) is handed out again after [`LAPSED_RETRY_MS`].
    async fn claim_lapsed(&self, now_ms: i64, max: usize) -> BResult<Vec<(String, TurnInfo)>>;
}
