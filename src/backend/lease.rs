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

/// A running turn's last durable step ([`TurnLease::checkpoint`]): what another pod resumes it from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The session's last logged seq when the step was written: events after it were sent since (tokens of a
    /// model response cut by the pod's death).
    pub seq: u64,
    /// The turn's whole state, serialized by the turn engine (opaque here).
    pub state: String,
    /// Takeovers so far, this one included.
    pub takeovers: u32,
}

/// What [`TurnLease::take_over`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TakeOver {
    /// The lease is the new holder's, the turn record names it and `from_seq` is the first seq it may write.
    /// `sent`: the events logged after the step (`checkpoint.seq`) up to `from_seq`, read in the same step as the
    /// takeover, on the store that took it: what the turn's client may already have (a cut reply's tokens).
    Taken { checkpoint: Checkpoint, from_seq: u64, sent: Vec<String> },
    /// The turn wrote no step to resume from (or `turn.takeover` was off on its pod): it is ended instead.
    Unsaved,
    /// The turn was taken over `max` times already: it is ended instead.
    Exhausted,
    /// The turn is no longer the lapsed one (it ended, or a lease runs again): nothing to do.
    Gone,
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
    /// Records a running turn's durable step (its state, opaque here, and the log's seq now), only while
    /// `turn_id` holds the lease, checked in the same step. False when it does not (the turn must stop).
    async fn checkpoint(&self, session_id: &str, turn_id: &str, state: &str) -> BResult<bool>;
    /// Takes over the lapsed turn `lapsed` (claimed with [`claim_lapsed`](TurnLease::claim_lapsed)) for `info`,
    /// a new turn id (the new lease generation: everything guarded by the old id, on a pod that wakes up, is
    /// refused), in one step: only while no lease runs, the turn record is still `lapsed`'s, it has a checkpoint
    /// and fewer than `max` takeovers. The checkpoint then belongs to `info`'s turn.
    async fn take_over(
        &self,
        session_id: &str,
        lapsed: &str,
        info: &TurnInfo,
        ttl_ms: u64,
        max: u32,
    ) -> BResult<TakeOver>;
    /// Frees the slot if `turn_id` holds it (or held it and it lapsed); forgets the turn record and its checkpoint.
    async fn release(&self, session_id: &str, turn_id: &str) -> BResult<bool>;
    /// The current holder, if the lease is live.
    async fn current(&self, session_id: &str) -> BResult<Option<TurnInfo>>;
    /// Whether the session has a turn record with no live lease (a turn a sweeper must end or take over). Such a
    /// turn is put back where sweepers look, due now (a failover can take its entry back and keep the record;
    /// a later deadline already there is kept).
    async fn rewatch(&self, session_id: &str) -> BResult<bool>;
    /// Turns whose lease lapsed without release (their pod died or stalled). Each is handed to one caller at a
    /// time, which ends it with an append guarded by [`Guard::Lapsed`](super::Guard::Lapsed) (that forgets the turn record); a turn
    /// not ended that way (the caller died, the append failed) is handed out again after [`LAPSED_RETRY_MS`].
    async fn claim_lapsed(&self, now_ms: i64, max: usize) -> BResult<Vec<(String, TurnInfo)>>;
}
