//! Following a session's log from an HTTP request: the REST and SSE handlers run a turn and read its events
//! as a socket would, with the log as the truth and the bus as the wake-up.

use std::sync::Arc;
use std::time::Duration;

use serde_json::Value;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::backend::Channel;
use crate::error::{ClientError, ErrorCode};
use crate::hub::ConnHandle;
use crate::queue::OutQueue;

/// Wake-ups a watcher may have pending; they are drained at each read, so this bounds nothing that grows.
const WAKE_QUEUE: usize = 1024;
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
    /// The last seq returned.
    cursor: u64,
}

impl SessionWatch {
    /// Watches from after `after`, or from the log's end now.
    pub(crate) async fn open(app: &Arc<App>, session_id: &str, after: Option<u64>) -> Result<Self, ClientError> {
        let handle = ConnHandle {
            id: crate::conn::next_socket_id(),
            connection_id: Arc::from(crate::util::new_id()),
            queue: Arc::new(OutQueue::new(WAKE_QUEUE)),
            slow: CancellationToken::new(),
        };
        app.hub.attach(&Channel::Session(session_id.to_string()), &handle).await?;
        // Read after subscribing: whatever is appended from here on is either in this bound or announced.
        let cursor = match after {
            Some(a) => a,
            None => app.backends.log.bounds(session_id).await?.1,
        };
        Ok(SessionWatch { app: app.clone(), session_id: session_id.to_string(), handle, cursor })
    }

    /// The next events (seq, JSON), waiting until there are some.
    pub(crate) async fn next(&mut self) -> Result<Vec<(u64, Value)>, ClientError> {
        loop {
            let batch = self.app.backends.log.read_after(&self.session_id, self.cursor, READ_BATCH).await?;
            if let Some((last, _)) = batch.last() {
                self.cursor = *last;
                return Ok(batch
                    .into_iter()
                    .filter_map(|(seq, e)| Some((seq, serde_json::from_str(&e).ok()?)))
                    .collect());
            }
            tokio::select! {
                woke = self.handle.queue.pop() => {
                    if woke.is_some() {
                        while self.handle.queue.try_pop().is_some() {}
                    }
                }
                _ = tokio::time::sleep(POLL) => {}
                _ = self.app.lifecycle.stopped() => {
                    return Err(ClientError::new(ErrorCode::TurnInterrupted, "the server is stopping; retry"));
                }
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
