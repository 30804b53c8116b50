//! Following a session's log from an HTTP request: the REST and SSE handlers run a turn and read its events
//! as a socket would, with the log as the truth and the bus as the wake-up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::backend::Channel;
use crate::error::{ClientError, ErrorCode};
use crate::hub::{ConnHandle, Handle, Outbound};
use crate::protocol::position::rebase;
use crate::queue::OutQueue;

/// Wake-ups a watcher may have pending (drained at each read). A watcher whose reader stalls simply misses
/// wake-ups (the hub drops them silently for watchers), which costs nothing: the events are in the log.
const WAKE_QUEUE: usize = 64;
/// A read of the log even without a wake-up (pub/sub is at-most-once).
const POLL: Duration = Duration::from_secs(1);
/// Events read from the log at a time.
const READ_BATCH: usize = 256;

/// A session's events after a position, in order, each once. Subscribed to the session's channel on this pod
/// while it lives (dropping it detaches).
pub(crate) struct SessionWatch {
    app: Arc<App>,
    session_id: String,
    /// The hub's handle on this watcher; its queue only carries wake-ups, the events are read from the log.
    handle: ConnHandle,
    /// The last seq returned, in `epoch`.
    cursor: u64,
    /// The log's epoch as last seen on a wake-up (`None` until one came): a new one restarts the cursor.
    epoch: Option<String>,
    /// Empty polls in a row while the followed turn did not hold the session (see [`SessionWatch::next_while_held`]).
    unheld: u32,
}

impl SessionWatch {
    /// Watches from after `after`, or from the log's end now.
    pub(crate) async fn open(app: &Arc<App>, session_id: &str, after: Option<u64>) -> Result<Self, ClientError> {
        let handle = ConnHandle::new(Handle {
            id: crate::conn::next_socket_id(),
            connection_id: Arc::from(crate::util::new_id()),
            queue: Arc::new(OutQueue::new(WAKE_QUEUE)),
            slow: CancellationToken::new(),
            watcher: true,
        });
        app.hub.attach(&Channel::Session(session_id.to_string()), &handle).await?;
        // Read after subscribing: whatever is appended from here on is either in this bound or announced.
        let cursor = match after {
            Some(a) => a,
            None => app.backends.log.bounds(session_id).await?.1,
        };
        Ok(SessionWatch {
            app: app.clone(),
            session_id: session_id.to_string(),
            handle,
            cursor,
            epoch: None,
            unheld: 0,
        })
    }

    /// The last seq this watch has read past (where it began, before any read).
    pub(crate) fn position(&self) -> u64 {
        self.cursor
    }

    /// The next events (seq, JSON): what the log holds after the cursor, else what arrives within one wake-up or
    /// poll interval. Empty when nothing came in that time (the caller then checks whether a turn still runs).
    async fn next(&mut self) -> Result<Vec<(u64, Value)>, ClientError> {
        let batch = self.read().await?;
        if !batch.is_empty() {
            return Ok(batch);
        }
        tokio::select! {
            woke = self.handle.queue.pop() => {
                // The bus message carries the events: take them from it when they follow on, so an event is
                // seen even if the log is trimmed or deleted before it is read. Anything else: read the log.
                let mut out = Vec::new();
                let mut gap = false;
                let mut next = woke;
                while let Some(item) = next.take() {
                    if let Outbound::Session(ev) = item {
                        if self.epoch.as_deref() != Some(ev.epoch()) {
                            // The log started again in a new epoch: read it from its start.
                            let rebased = rebase(self.epoch.as_deref(), self.cursor, ev.epoch());
                            gap |= rebased != self.cursor;
                            self.cursor = rebased;
                            self.epoch = Some(ev.epoch().to_string());
                        }
                        if ev.seq == self.cursor + 1 && !gap {
                            self.cursor = ev.seq;
                            if let Ok(v) = serde_json::from_str(ev.json()) {
                                out.push((ev.seq, v));
                            }
                        } else if ev.seq > self.cursor + 1 {
                            gap = true;
                        }
                    }
                    next = self.handle.queue.try_pop();
                }
                if !out.is_empty() && !gap {
                    return Ok(out);
                }
                if !out.is_empty() {
                    let mut rest = self.read().await?;
                    out.append(&mut rest);
                    return Ok(out);
                }
            }
            _ = tokio::time::sleep(POLL) => {}
            _ = self.app.lifecycle.stopped() => {
                return Err(ClientError::new(ErrorCode::TurnInterrupted, "the server is stopping; retry"));
            }
        }
        self.read().await
    }

    async fn read(&mut self) -> Result<Vec<(u64, Value)>, ClientError> {
        let batch = self.app.backends.log.read_after(&self.session_id, self.cursor, READ_BATCH).await?;
        if let Some((last, _)) = batch.last() {
            self.cursor = *last;
        }
        Ok(batch.into_iter().filter_map(|(seq, e)| Some((seq, serde_json::from_str(&e).ok()?))).collect())
    }

    /// The next events while a turn is there to follow: `request_id`, or any turn when `None` (running, or
    /// parked awaiting a decision). `None` once that turn has let go of the session for two empty polls in a
    /// row without a final event in the log (its last append failed, or it was long over); two, because a
    /// finishing turn gives its lease back just before it logs its last event.
    pub(crate) async fn next_while_held(
        &mut self,
        request_id: Option<&str>,
    ) -> Result<Option<Vec<(u64, Value)>>, ClientError> {
        loop {
            let batch = self.next().await?;
            if !batch.is_empty() {
                self.unheld = 0;
                return Ok(Some(batch));
            }
            let holder = self.app.turns.holder(&self.session_id).await?;
            let held = match request_id {
                Some(rid) => holder.is_some_and(|t| t.request_id == rid),
                None => holder.is_some(),
            };
            self.unheld = if held { 0 } else { self.unheld + 1 };
            if self.unheld >= 2 {
                return Ok(None);
            }
        }
    }
}

impl Drop for SessionWatch {
    fn drop(&mut self) {
        self.handle.queue.close();
        let hub = self.app.hub.clone();
        let (id, connection_id) = (self.handle.id, self.handle.connection_id.clone());
        let channel = Channel::Session(std::mem::take(&mut self.session_id));
        tokio::spawn(async move { hub.detach_all(id, &connection_id, &[channel]).await });
    }
}
