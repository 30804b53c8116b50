//! Group commit for a turn's events (see [`Emitter`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{mpsc, oneshot, watch};

use super::Turns;
use crate::backend::Guard;
use crate::error::{ClientError, ErrorCode};
use crate::ids::{SessionId, TurnId};

/// Why a turn's emitter stopped appending; the turn stops with it, so no tool runs whose result nobody sees.
#[derive(Debug, Clone)]
pub(super) enum Halt {
    /// The turn's lease is no longer its own (it stalled past `turn.lease_ms`, and a sweeper ended it):
    /// the turn must emit nothing more.
    LeaseLost,
    /// An append failed (Redis unreachable): what happened to the batch is unknown, so nothing after it may be
    /// appended either (it would leave a gap the client cannot tell from a loss).
    Failed(ClientError),
}

/// Group commit for a turn's events: the turn queues events without waiting; one task appends whatever has
/// queued up while the previous append was in flight, and within `turn.coalesce_ms` of a batch's first event,
/// as one batch (consecutive seqs, one bus message). Order is the queue's order; `flush` cuts the wait short
/// and returns once everything queued is in the log. Every append is fenced by the turn's lease
/// ([`Guard::Holder`]); the first refused or failed append halts the emitter ([`Emitter::halted`]).
pub(super) struct Emitter {
    /// Sender side of the turn's event queue; the emitter task owns the receiver.
    tx: mpsc::UnboundedSender<EmitCmd>,
    /// Wakes the emitter task out of its coalescing wait; shared by this handle (`flush`) and the task.
    flush_now: Arc<tokio::sync::Notify>,
    /// Set once by the emitter task when it halts; the turn watches it.
    halt: watch::Receiver<Option<Halt>>,
    /// The halt's sender, shared with the task: a backlog past [`MAX_BACKLOG`] halts from here.
    halt_tx: Arc<watch::Sender<Option<Halt>>>,
    /// Events queued and not yet taken by the task (the turn adds, the task subtracts); past [`MAX_BACKLOG`]
    /// the turn halts instead of queueing without bound while the store is slow.
    backlog: Arc<AtomicUsize>,
}

/// Events a turn may have waiting for the store (a slow Redis) before it stops: ~2 MB of tokens.
const MAX_BACKLOG: usize = 10_000;

enum EmitCmd {
    Event(String),
    Flush(oneshot::Sender<Result<(), Halt>>),
    /// The turn's terminal event: appended last, in the same batch as whatever is still queued, with the lease
    /// freed in the same step ([`Guard::Release`]); nothing is queued after it.
    Finish(String, oneshot::Sender<Result<(), Halt>>),
}

/// Largest batch per append (bounds one script call).
const EMIT_BATCH: usize = 256;

impl Emitter {
    pub(super) fn start(turns: Arc<Turns>, session_id: SessionId, turn_id: TurnId) -> Emitter {
        let (tx, mut rx) = mpsc::unbounded_channel::<EmitCmd>();
        let flush_now = Arc::new(tokio::sync::Notify::new());
        let wake = flush_now.clone();
        let (halt_tx, halt) = watch::channel(None);
        let halt_tx = Arc::new(halt_tx);
        let halts = halt_tx.clone();
        let backlog = Arc::new(AtomicUsize::new(0));
        let taken = backlog.clone();
        let coalesce = Duration::from_millis(turns.config.turn.coalesce_ms);
        tokio::spawn(async move {
            // The turn's first event (time to first token) is appended at once.
            let mut first_batch = true;
            while let Some(first) = rx.recv().await {
                if !first_batch && !coalesce.is_zero() && matches!(first, EmitCmd::Event(_)) {
                    // Sleeping on a timer, not on the queue: tokens sent meanwhile do not wake this task.
                    tokio::select! {
                        _ = tokio::time::sleep(coalesce) => {}
                        _ = wake.notified() => {}
                    }
                }
                first_batch = false;
                let mut events = Vec::new();
                let mut flushes = Vec::new();
                let mut finish = false;
                let mut next = Some(first);
                while let Some(cmd) = next.take() {
                    match cmd {
                        EmitCmd::Event(e) => {
                            taken.fetch_sub(1, Ordering::Relaxed);
                            events.push(e);
                        }
                        EmitCmd::Flush(f) => flushes.push(f),
                        EmitCmd::Finish(e, f) => {
                            events.push(e);
                            flushes.push(f);
                            finish = true;
                        }
                    }
                    if events.len() < EMIT_BATCH && !finish {
                        next = rx.try_recv().ok();
                    }
                }
                if !events.is_empty() && halt_tx.borrow().is_none() {
                    let n = events.len() as u64;
                    let guard = if finish { Guard::Release(&turn_id) } else { Guard::Holder(&turn_id) };
                    match turns.backends.log.append_guarded(&session_id, events, guard).await {
                        Ok(Some(_)) => turns.metrics.events_published(n),
                        Ok(None) => {
                            tracing::warn!(%session_id, %turn_id, "the turn's lease is gone: it stops, emitting nothing more");
                            halt_tx.send_replace(Some(Halt::LeaseLost));
                        }
                        Err(e) => {
                            tracing::warn!(%session_id, %turn_id, error = %e, "an append failed: the turn stops");
                            halt_tx.send_replace(Some(Halt::Failed(e.into())));
                        }
                    }
                }
                for f in flushes {
                    let _ = f.send(halt_tx.borrow().clone().map_or(Ok(()), Err));
                }
            }
        });
        Emitter { tx, flush_now, halt, halt_tx: halts, backlog }
    }

    /// Resolves once the emitter has halted (never, while appends succeed).
    pub(super) async fn halted(&self) -> Halt {
        let mut halt = self.halt.clone();
        let seen = halt.wait_for(Option::is_some).await.map(|h| h.clone());
        match seen {
            Ok(h) => h.unwrap_or(Halt::LeaseLost),
            // The task is gone (the runtime is shutting down): nothing more can be appended.
            Err(_) => Halt::Failed(ClientError::new(ErrorCode::Internal, "event emitter stopped")),
        }
    }

    /// Halts the emitter because the turn's lease is gone (found by a write other than an append): nothing more
    /// is appended, and the turn ends as one that lost its lease.
    pub(super) fn lease_lost(&self) {
        self.halt_with(Halt::LeaseLost);
    }

    /// Halts the emitter because a write the turn needs failed (a step before a call): nothing more is appended,
    /// and the turn ends as one whose append failed (handed over to a sweeper, when it can be).
    pub(super) fn failed(&self, e: ClientError) {
        self.halt_with(Halt::Failed(e));
    }

    fn halt_with(&self, halt: Halt) {
        self.halt_tx.send_if_modified(|h| {
            let first = h.is_none();
            if first {
                *h = Some(halt);
            }
            first
        });
    }

    pub(super) fn send(&self, event: &Value) {
        self.send_text(event.to_string());
    }

    pub(super) fn send_text(&self, event: String) {
        // Never blocks the turn: past the bound the event is dropped and the turn halts (it stops at once).
        if self.backlog.fetch_add(1, Ordering::Relaxed) >= MAX_BACKLOG {
            self.backlog.fetch_sub(1, Ordering::Relaxed);
            self.halt_tx.send_if_modified(|h| {
                let first = h.is_none();
                if first {
                    tracing::warn!("a turn's events outran the store: the turn stops");
                    let e = ClientError::new(ErrorCode::Internal, "the turn's events could not be stored in time");
                    *h = Some(Halt::Failed(e));
                }
                first
            });
            return;
        }
        let _ = self.tx.send(EmitCmd::Event(event));
    }

    /// Ends the current coalescing wait now, without waiting for the append (the model's burst is complete).
    pub(super) fn kick(&self) {
        self.flush_now.notify_one();
    }

    pub(super) async fn flush(&self) -> Result<(), Halt> {
        self.close(EmitCmd::Flush).await
    }

    /// [`Emitter::flush`] with the turn's terminal event as the last of the final batch, appended only while the
    /// turn holds its lease, which that same step frees: the ending costs no append of its own.
    pub(super) async fn finish(&self, ending: &Value) -> Result<(), Halt> {
        let ending = ending.to_string();
        self.close(|tx| EmitCmd::Finish(ending, tx)).await
    }

    async fn close(&self, cmd: impl FnOnce(oneshot::Sender<Result<(), Halt>>) -> EmitCmd) -> Result<(), Halt> {
        let stopped = || Halt::Failed(ClientError::new(ErrorCode::Internal, "event emitter stopped"));
        let (tx, rx) = oneshot::channel();
        if self.tx.send(cmd(tx)).is_err() {
            return Err(stopped());
        }
        // A permit left over when the task was not waiting only ends a later wait early.
        self.flush_now.notify_one();
        rx.await.unwrap_or_else(|_| Err(stopped()))
    }
}
