//! The pod's shutdown phases, in the order the drain enters them: draining (readiness fails, no new sockets
//! or turns) → sockets closing (`reconnect` + 1012) → turns interrupted (`TURN_INTERRUPTED`) → stopped
//! (background loops end). Each phase is a cancellation token; only the server's drain sequence (and `main`
//! on SIGTERM, and a killed pod in tests) enters a phase, everyone else waits on them or asks.

use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};

#[derive(Default)]
pub(crate) struct Lifecycle {
    /// Entered by [`Lifecycle::begin_drain`]: readiness fails, upgrades and new turns are refused.
    draining: CancellationToken,
    /// Entered after the pre-stop pause: every socket gets `reconnect` and a 1012 close.
    close_sockets: CancellationToken,
    /// Entered when the drain timeout ends: running turns stop with `TURN_INTERRUPTED`.
    interrupt: CancellationToken,
    /// Entered last (or at once when the pod is killed): background loops stop.
    stopped: CancellationToken,
    /// Cancelled with `close_sockets` or `stopped`, whichever comes first: the parent of every socket's own
    /// token ([`Lifecycle::socket_token`]), so a socket waits on one token, not on three (each wait is part of
    /// every idle socket's state).
    sockets_stop: CancellationToken,
}

impl Lifecycle {
    /// Starts the graceful drain (SIGTERM).
    pub(crate) fn begin_drain(&self) {
        self.draining.cancel();
    }
    pub(crate) fn close_sockets(&self) {
        self.close_sockets.cancel();
        self.sockets_stop.cancel();
    }
    pub(crate) fn interrupt_turns(&self) {
        self.interrupt.cancel();
    }
    /// Stops the pod: without a drain this is a crash (sockets drop, turns are abandoned mid-flight).
    pub(crate) fn stop(&self) {
        self.stopped.cancel();
        self.sockets_stop.cancel();
    }

    pub(crate) fn is_draining(&self) -> bool {
        self.draining.is_cancelled()
    }
    pub(crate) fn draining(&self) -> WaitForCancellationFuture<'_> {
        self.draining.cancelled()
    }
    pub(crate) fn are_sockets_closing(&self) -> bool {
        self.close_sockets.is_cancelled()
    }
    pub(crate) fn turns_interrupted(&self) -> WaitForCancellationFuture<'_> {
        self.interrupt.cancelled()
    }
    pub(crate) fn stopped(&self) -> WaitForCancellationFuture<'_> {
        self.stopped.cancelled()
    }
    pub(crate) fn is_stopped(&self) -> bool {
        self.stopped.is_cancelled()
    }
    /// The stop token itself, for a task that outlives any borrow of the pod.
    pub(crate) fn stopped_token(&self) -> CancellationToken {
        self.stopped.clone()
    }
    pub(crate) fn sockets_closing_token(&self) -> CancellationToken {
        self.close_sockets.clone()
    }
    /// A socket's own stop token: cancelled by its owner (a slow consumer), or with the pod's sockets closing or
    /// the pod stopping.
    pub(crate) fn socket_token(&self) -> CancellationToken {
        self.sockets_stop.child_token()
    }
}
