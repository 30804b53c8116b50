//! What a socket shows of its sessions: its position (seq and epoch) in each session's log, live events in
//! order without duplicates, gaps repaired from the log (never skipped), and the rendering per client kind.

use std::sync::Arc;

use axum::extract::ws::{Message, Utf8Bytes, WebSocket};
use futures_util::SinkExt;

use crate::app::App;
use crate::conn::{Conn, Dialect};
use crate::hub::Outbound;
use crate::protocol::outbound as out;
use crate::protocol::position::rebase;
use crate::queue::OutQueue;

/// Per session: the last seq this socket received and the epoch that seq counts in (`None` while the log had
/// no event: the first event sets it). A socket follows few sessions, so a small vector.
#[derive(Default)]
pub(super) struct Cursors(Vec<Cursor>);

struct Cursor {
    session_id: Arc<str>,
    pos: u64,
    epoch: Option<Box<str>>,
}

impl Cursors {
    fn find(&self, session_id: &str) -> Option<&Cursor> {
        self.0.iter().find(|c| &*c.session_id == session_id)
    }

    fn get(&self, session_id: &str) -> Option<u64> {
        self.find(session_id).map(|c| c.pos)
    }

    fn epoch(&self, session_id: &str) -> Option<&str> {
        self.find(session_id).and_then(|c| c.epoch.as_deref())
    }

    /// Sets the position; the epoch is kept, or set when given.
    fn set(&mut self, session_id: &Arc<str>, pos: u64, epoch: Option<&str>) {
        match self.0.iter_mut().find(|c| c.session_id == *session_id) {
            Some(c) => {
                c.pos = pos;
                if let Some(e) = epoch {
                    c.epoch = Some(e.into());
                }
            }
            None => self.push(Cursor { session_id: session_id.clone(), pos, epoch: epoch.map(Into::into) }),
        }
    }

    fn push(&mut self, cursor: Cursor) {
        crate::util::push_sparing(&mut self.0, cursor);
    }

    /// A new position (attach or resume), in `epoch` (`None`: the log had no event yet).
    fn reset(&mut self, session_id: Arc<str>, pos: u64, epoch: Option<&str>) {
        self.0.retain(|c| c.session_id != session_id);
        self.push(Cursor { session_id, pos, epoch: epoch.map(Into::into) });
    }
}

/// Queues a frame without flushing; the batch is flushed once.
async fn feed_text(sink: &mut WebSocket, text: &str) -> bool {
    sink.feed(Message::Text(Utf8Bytes::from(text))).await.is_ok()
}

/// Items handled per flush: a burst of tokens becomes one socket write instead of one per frame.
const WRITE_BATCH: usize = 64;

/// Why a socket's writer stops.
#[derive(Debug, PartialEq)]
pub(super) enum Stop {
    /// A write failed (the client is gone) or the socket must stop.
    Write,
    /// A gap in a session's events could not be filled from the log (`reconnect` + 4000).
    Resync,
}

pub(super) type Flow = Result<(), Stop>;

fn written(ok: bool) -> Flow {
    if ok {
        Ok(())
    } else {
        Err(Stop::Write)
    }
}

/// Writes `first` and whatever else is ready (up to a batch), then flushes once.
pub(super) async fn write_batch(
    app: &App,
    sink: &mut WebSocket,
    cursors: &mut Cursors,
    first: Outbound,
    queue: &OutQueue<Outbound>,
    render: Render,
) -> Flow {
    process(app, sink, cursors, first, render).await?;
    for _ in 1..WRITE_BATCH {
        let Some(item) = queue.try_pop() else { break };
        process(app, sink, cursors, item, render).await?;
    }
    written(sink.flush().await.is_ok())
}

/// Handles one queued item (frames are fed, not flushed).
async fn process(app: &App, sink: &mut WebSocket, cursors: &mut Cursors, item: Outbound, render: Render) -> Flow {
    match item {
        Outbound::Frame(text) => {
            app.metrics.events_delivered(1);
            written(feed_text(sink, &text).await)
        }
        Outbound::SetCursor(c) => {
            let crate::hub::SetCursor { session_id, after, epoch } = *c;
            cursors.reset(session_id, after, epoch.as_deref());
            Ok(())
        }
        Outbound::CatchUp(c) => Box::pin(catch_up(app, sink, cursors, &c.session_id, render, c.until)).await,
        Outbound::Session(item) => {
            let (session_id, seq, json, epoch) = (&item.session_id, item.seq, item.json(), item.epoch());
            let Some(mut pos) = cursors.get(session_id) else {
                return Ok(());
            };
            let known = cursors.epoch(session_id);
            if known != Some(epoch) {
                let rebased = rebase(known, pos, epoch);
                if rebased != pos {
                    tracing::info!(%session_id, "the session's log has a new epoch: following it from its start");
                }
                pos = rebased;
                cursors.set(session_id, pos, Some(epoch));
            }
            if seq <= pos {
                return Ok(()); // duplicate (already replayed from the log)
            }
            if seq > pos + 1 {
                app.metrics.gap_repaired(seq - pos - 1);
                Box::pin(catch_up(app, sink, cursors, session_id, render, Some(seq - 1))).await?;
                // What the log could not fill is never skipped.
                if cursors.get(session_id).is_some_and(|p| p < seq - 1) {
                    tracing::warn!(%session_id, seq, "a gap the log cannot fill: the client must resume");
                    return Err(Stop::Resync);
                }
            }
            if cursors.get(session_id).is_some_and(|p| p >= seq) {
                return Ok(());
            }
            cursors.set(session_id, seq, None);
            app.metrics.events_delivered(1);
            written(send_session(app, sink, session_id, seq, epoch, json, render).await)
        }
    }
}

/// How session events are written to a socket.
#[derive(Debug, Clone, Copy)]
pub(super) enum Render {
    /// Exactly the v1 shape.
    V1,
    /// v1 plus `sessionId`, `seq` and `epoch` (the `switchboard` subprotocol).
    Extended,
    /// Translated to orra frames.
    Orra,
}

impl Render {
    pub(super) fn of(conn: &Conn) -> Render {
        match (conn.dialect, conn.extended) {
            (Dialect::Orra, _) => Render::Orra,
            (_, true) => Render::Extended,
            (_, false) => Render::V1,
        }
    }
}

async fn send_session(
    app: &App,
    sink: &mut WebSocket,
    session_id: &str,
    seq: u64,
    epoch: &str,
    json: &str,
    render: Render,
) -> bool {
    match render {
        Render::Extended => feed_text(sink, &out::extend_session_event(json, session_id, seq, epoch)).await,
        // An extension event a v1 client was never told of.
        Render::V1 if is_extension(json) => true,
        Render::V1 => feed_text(sink, json).await,
        Render::Orra => match crate::gateway::orra::render(app, session_id, json).await {
            Some(frame) => feed_text(sink, &frame).await,
            None => true,
        },
    }
}

/// Whether a logged event is one only extended clients get (`turn_resumed`, written with its type first).
fn is_extension(json: &str) -> bool {
    json.strip_prefix(r#"{"type":""#)
        .and_then(|rest| rest.strip_prefix(out::TURN_RESUMED))
        .is_some_and(|rest| rest.starts_with('"'))
}

/// Delivers logged events after the socket's position (up to `until` when set). A read that fails, or a log
/// whose next event is not the one after the position (trimmed past it), ends in [`Stop::Resync`]: a hole is
/// never jumped over.
async fn catch_up(
    app: &App,
    sink: &mut WebSocket,
    cursors: &mut Cursors,
    session_id: &Arc<str>,
    render: Render,
    until: Option<u64>,
) -> Flow {
    let Some(mut pos) = cursors.get(session_id) else {
        return Ok(());
    };
    // The log's epoch now: a socket that knew another one follows the new log from its start.
    let epoch = match app.backends.log.epoch(session_id).await {
        Ok(e) => e.unwrap_or_default(),
        Err(e) => {
            tracing::warn!(error = %e, %session_id, "log read failed during catch-up: the client must resume");
            return Err(Stop::Resync);
        }
    };
    if !epoch.is_empty() {
        pos = rebase(cursors.epoch(session_id), pos, &epoch);
        cursors.set(session_id, pos, Some(&epoch));
    }
    loop {
        let batch = match app.backends.log.read_after(session_id, pos, 256).await {
            Ok(b) => b,
            Err(e) => {
                tracing::warn!(error = %e, %session_id, "log read failed during catch-up: the client must resume");
                return Err(Stop::Resync);
            }
        };
        let Some(&(first, _)) = batch.first() else { break };
        if first > pos + 1 {
            tracing::warn!(%session_id, pos, first, "the log no longer holds this socket's next event: the client must resume");
            return Err(Stop::Resync);
        }
        for (seq, json) in batch {
            if until.is_some_and(|u| seq > u) {
                cursors.set(session_id, pos, None);
                return Ok(());
            }
            written(send_session(app, sink, session_id, seq, &epoch, &json, render).await)?;
            app.metrics.events_delivered(1);
            pos = seq;
        }
    }
    cursors.set(session_id, pos, None);
    Ok(())
}
