//! One WebSocket connection: the upgrade (auth, subprotocol, limits) and the socket's one task, which parses
//! client frames and dispatches them (see [`crate::handlers`]), and writes its outbound queue: it renders
//! session events for v1 or extended clients, keeps per-session positions (dropping duplicates, repairing gaps
//! from the log) and sends keepalives.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket, WebSocketUpgrade};
use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures_util::SinkExt;
use tokio_util::sync::CancellationToken;

use crate::app::App;
use crate::auth::{bearer, Identity};
use crate::conn::{Conn, Dialect, REGISTRY_TTL_MS};
use crate::error::ClientError;
use crate::metrics::Refusal;
use crate::protocol::{inbound, outbound as out, EXTENSION_SUBPROTOCOL};

mod clock;
mod delivery;

use self::clock::Clock;
use self::delivery::{write_batch, Cursors, Render, Stop};

pub(crate) const CLOSE_PROTOCOL_ERROR: u16 = 1002;
pub(crate) const CLOSE_INVALID_DATA: u16 = 1007;
pub(crate) const CLOSE_TOO_LARGE: u16 = 1009;
pub(crate) const CLOSE_DRAINING: u16 = 1012;
pub(crate) const CLOSE_SLOW_CONSUMER: u16 = 4000;
pub(crate) const CLOSE_TOKEN_EXPIRED: u16 = 4401;

/// How the connection task closes the socket.
#[derive(Debug, Clone)]
pub(crate) struct CloseSpec {
    pub code: u16,
    pub reason: &'static str,
    /// Send the `reconnect` extension frame first (extended clients only).
    pub reconnect: bool,
}

#[derive(serde::Deserialize)]
pub(crate) struct WsQuery {
    token: Option<String>,
}

pub(crate) async fn upgrade(
    State(app): State<Arc<App>>,
    Query(q): Query<WsQuery>,
    headers: HeaderMap,
    slot: Option<axum::Extension<crate::listen::ConnectionSlot>>,
    peer: Option<axum::Extension<axum::extract::ConnectInfo<std::net::SocketAddr>>>,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    // A refusal is a JSON body a page can read: a browser's WebSocket never sees the status, so the widget asks
    // again with a plain GET (no upgrade), which gets the same checks and the same answer.
    let refuse = |status: StatusCode, code: &str, message: &str| {
        let body = axum::Json(serde_json::json!({"error": {"code": code, "message": message}}));
        // Readable by the widget on any page (it says nothing secret, and no cookie is involved).
        (status, [(axum::http::header::ACCESS_CONTROL_ALLOW_ORIGIN, "*")], body).into_response()
    };
    if app.lifecycle.is_draining() {
        app.metrics.connection_refused(Refusal::Draining);
        return refuse(StatusCode::SERVICE_UNAVAILABLE, "DRAINING", "this server is restarting; connect again");
    }
    // A browser page from an origin this deployment does not serve (`http.allowed_origins`): refused before
    // anything else, so a foreign site cannot ride on a visitor's cookies or network position.
    let origin = headers.get(axum::http::header::ORIGIN).and_then(|o| o.to_str().ok()).map(str::to_string);
    let allowed = &app.config.http.allowed_origins;
    if let Some(o) = crate::origin::origin_refused(allowed, origin.as_deref()) {
        tracing::debug!(origin = %o, "websocket upgrade refused: origin not allowed");
        app.metrics.connection_refused(Refusal::Origin);
        return refuse(StatusCode::FORBIDDEN, "ORIGIN_NOT_ALLOWED", "origin not allowed (http.allowed_origins)");
    }
    let identity = match app.auth.authenticate(q.token.as_deref().or(bearer(&headers))).await {
        Ok(id) => id,
        Err(e) => {
            tracing::debug!(error = %e, "websocket upgrade refused");
            app.metrics.connection_refused(Refusal::Unauthorized);
            return refuse(StatusCode::UNAUTHORIZED, "UNAUTHORIZED", "a valid token is required to chat here");
        }
    };
    let address = crate::client_addr::client_address(peer.map(|p| p.0 .0), &headers, &app.trusted_proxies);
    let identity = identity.seen_from(address);
    // Sockets per caller (a user, or an anonymous caller's address), across pods: a client opening sockets in a
    // loop is refused before it costs a task, a queue and two subscriptions each.
    let connection_id: Arc<str> = Arc::from(crate::util::new_id());
    match app.turns.hold_socket(&identity, &connection_id, REGISTRY_TTL_MS).await {
        Ok(false) => {
            tracing::debug!(user = %identity.user_id, "websocket upgrade refused: sockets per user");
            app.metrics.connection_refused(Refusal::SocketsPerUser);
            return refuse(
                StatusCode::TOO_MANY_REQUESTS,
                "RATE_LIMITED",
                "too many open connections for this user (limits.sockets_per_user)",
            );
        }
        Ok(true) => {}
        // Best effort: an unreachable Redis fails readiness, it does not refuse sockets here.
        Err(e) => tracing::warn!(error = %e, "could not count the user's sockets"),
    }
    let Ok(ws) = ws else {
        // Every check passed: the caller would be let in (the place held for the check goes back).
        app.turns.release_socket(&identity, &connection_id).await;
        return refuse(StatusCode::UPGRADE_REQUIRED, "UPGRADE_REQUIRED", "open a WebSocket here");
    };
    let max = app.config.limits.max_frame_bytes;
    let ws = ws
        .protocols([EXTENSION_SUBPROTOCOL])
        // Frames up to twice the limit are read so we can answer them with a proper 1009 close.
        .max_message_size(max * 2 + 1024)
        .max_frame_size(max * 2 + 1024)
        // Small buffers keep an idle socket cheap: this is only how much one read takes from the kernel (a frame
        // gets a buffer of its own length), so a longer frame costs a few more reads, never a limit.
        .read_buffer_size(256)
        // Frames are fed and flushed per batch; the buffer only grows while a batch is written.
        .write_buffer_size(16 * 1024);
    let extended = ws.selected_protocol().is_some();
    let tasks = app.tasks.clone();
    ws.on_upgrade(move |socket| {
        let opening = Opening { app, identity, connection_id, extended, origin, _slot: slot };
        // A task of the socket's own, and axum's upgrade task ends here: run inside that one, the socket would
        // keep its whole state (the upgrade's, beside ours) for as long as it lives, ~0.5 KiB per idle socket.
        tasks.spawn(run_connection(Box::new(socket), Box::new(opening)));
        std::future::ready(())
    })
}

/// What a socket's task starts from. It and the socket are handed over boxed: a task keeps its arguments in
/// its future for as long as it runs, so each would otherwise cost every idle socket its whole size.
struct Opening {
    app: Arc<App>,
    identity: Identity,
    connection_id: Arc<str>,
    extended: bool,
    origin: Option<String>,
    /// The connection's place among the pod's open connections, held while the socket lives.
    _slot: Option<axum::Extension<crate::listen::ConnectionSlot>>,
}

/// One task per socket: it reads and dispatches client frames and writes what the socket's queue holds (an
/// idle socket is one task, not a reader and a writer; 10k idle sockets per pod is the design point).
async fn run_connection(mut socket: Box<WebSocket>, opening: Box<Opening>) {
    let Opening { app, identity, connection_id, extended, origin, _slot } = *opening;
    // Boxed, as every await here that is not the idle wait (and the connection itself): a socket's task keeps
    // inline the largest future it may await, and 10k idle sockets pay for that size each.
    let mut conn = Box::new(Box::pin(Conn::open(app.clone(), identity, connection_id, extended, origin)).await);
    // The loop's own state (timers, cursors, the branches it waits on) on the heap too: inline, the task's
    // future laid it out beside what it holds before and after (measured: 1,952 bytes inline, 96 + 944 boxed).
    let close = Box::pin(serve(&app, &mut socket, &mut conn)).await;
    // Nothing more is queued for this socket: its memory goes back now, not after the close handshake.
    conn.handle.queue.close();
    if let Some(spec) = close {
        if spec.code == CLOSE_SLOW_CONSUMER {
            tracing::info!(connection_id = %conn.handle.connection_id, "slow consumer: closing with 4000");
        }
        Box::pin(close_within_grace(&app, &mut socket, &spec, extended)).await;
    }
    Box::pin(conn.close()).await;
}

/// The socket's loop: client frames in, queued items out, keepalives, registry heartbeats; until the client
/// goes, the token expires, the queue overflows or the pod drains. Returns how to close (None: just drop).
async fn serve(app: &Arc<App>, socket: &mut WebSocket, conn: &mut Conn) -> Option<CloseSpec> {
    let queue = conn.handle.queue.clone();
    let max = app.config.limits.max_frame_bytes;
    let expires_in = conn
        .identity
        .expires_at
        .map(|exp| Duration::from_secs((exp - chrono::Utc::now().timestamp()).max(0) as u64))
        .unwrap_or(Duration::from_secs(u64::MAX / 4));
    let keepalive = Duration::from_secs(app.config.keepalive_s);
    let mut clock = Clock::new(expires_in, Duration::from_millis(REGISTRY_TTL_MS / 3), keepalive);
    // One timer for the three deadlines (each a tokio timer would cost every idle socket ~100 bytes more); it
    // fires at the earliest, and a deadline moved later (a write puts the keepalive off) only makes it fire
    // early once, to be set again.
    let timer = tokio::time::sleep_until(clock.next());
    tokio::pin!(timer);
    // Per session: the last seq this socket received.
    let mut cursors = Cursors::default();
    let close = loop {
        tokio::select! {
            item = queue.pop() => {
                let Some(item) = item else { break None };
                // A client that stops reading blocks the write; the queue then overflows (slow consumer), or
                // the pod drains or stops: any of those ends the write instead of waiting on the client.
                // Read per batch: the first frame decides an orra socket's rendering.
                let render = Render::of(conn);
                let written = tokio::select! {
                    biased;
                    flow = Box::pin(write_batch(app, socket, &mut cursors, item, &queue, render)) => flow,
                    // The socket's own stop token: its queue overflowed, or (a child of the pod's,
                    // `Lifecycle::socket_token`) the pod closes its sockets or stops.
                    _ = conn.handle.slow.cancelled() => Err(Stop::Write),
                };
                match written {
                    Ok(()) => {}
                    // Stopped, or the write failed (the client is gone: no close to send).
                    Err(Stop::Write) => break stop_close(app, &conn.handle.slow),
                    Err(Stop::Resync) => break Some(RESYNC),
                }
                clock.written();
            }
            msg = socket.recv() => match msg {
                Some(Ok(Message::Text(text))) => {
                    if text.len() > max {
                        break Some(TOO_LARGE);
                    }
                    if let Err(e) = conn.take_frame() {
                        refuse_frame(conn, text.as_str(), &e);
                        continue;
                    }
                    // Boxed: the handler's large state lives on the heap only while a frame is handled, so an
                    // idle connection's future stays small.
                    match conn.dialect_for(text.as_str()) {
                        Dialect::Orra => Box::pin(crate::gateway::orra::handle(conn, text.as_str())).await,
                        _ => Box::pin(crate::handlers::handle(conn, inbound::parse(text.as_str()))).await,
                    }
                }
                Some(Ok(Message::Binary(b))) => {
                    if b.len() > max {
                        break Some(TOO_LARGE);
                    }
                    conn.reply_error(None, &ClientError::validation("binary frames are not supported; send JSON text frames"));
                }
                Some(Ok(Message::Close(_))) => {
                    // tungstenite queued the reply (1002 for a close code a client may not send); send it.
                    let _ = socket.flush().await;
                    break None;
                }
                None => break None,
                Some(Ok(_)) => {}
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "websocket read error");
                    break read_error_close(e);
                }
            },
            _ = conn.handle.slow.cancelled() => break stop_close(app, &conn.handle.slow),
            _ = &mut timer => {
                let due = clock.due(tokio::time::Instant::now());
                if due.expired {
                    break Some(CloseSpec { code: CLOSE_TOKEN_EXPIRED, reason: "token expired", reconnect: false });
                }
                if due.heartbeat {
                    Box::pin(conn.heartbeat()).await;
                }
                if due.keepalive {
                    // An orra socket has no keepalive frame: it gets a WebSocket ping, which every client answers.
                    let sent = match conn.dialect {
                        Dialect::Orra => Box::pin(socket.send(Message::Ping(Default::default()))).await.is_ok(),
                        _ => Box::pin(send_text(socket, &out::keepalive().to_string())).await,
                    };
                    if !sent {
                        break None;
                    }
                    clock.written();
                }
                timer.as_mut().reset(clock.next());
            }
        }
    };
    close
}

/// A frame over the connection's budget: answered in its dialect, not handled; the socket stays open.
fn refuse_frame(conn: &mut Conn, text: &str, e: &ClientError) {
    match conn.dialect_for(text) {
        Dialect::Orra => crate::gateway::orra::refuse(conn, e),
        _ => conn.reply_error(inbound::request_id_of(text).as_deref(), e),
    }
}

/// How a read error closes the socket (RFC 6455 section 7.4.1): a frame over the size limit 1009, text that is not
/// UTF-8 1007, a frame the protocol forbids (unknown opcode, oversized or fragmented control frame, reserved
/// bits, unmasked) 1002. A broken connection has no one to send a close to.
fn read_error_close(e: axum::Error) -> Option<CloseSpec> {
    use tungstenite::error::ProtocolError as P;
    match e.into_inner().downcast_ref::<tungstenite::Error>()? {
        tungstenite::Error::Capacity(_) => Some(TOO_LARGE),
        tungstenite::Error::Utf8(_) => {
            Some(CloseSpec { code: CLOSE_INVALID_DATA, reason: "text frame is not UTF-8", reconnect: false })
        }
        tungstenite::Error::Protocol(
            P::UnknownControlFrameType(_)
            | P::UnknownDataFrameType(_)
            | P::InvalidOpcode(_)
            | P::ControlFrameTooBig
            | P::FragmentedControlFrame
            | P::NonZeroReservedBits
            | P::UnmaskedFrameFromClient
            | P::UnexpectedContinueFrame
            | P::ExpectedFragment(_)
            | P::InvalidCloseSequence,
        ) => Some(CloseSpec { code: CLOSE_PROTOCOL_ERROR, reason: "protocol error", reconnect: false }),
        _ => None,
    }
}

/// How to close once stopped: a stopping pod closes nothing; otherwise drain, then slow consumer (the socket's
/// token is cancelled by either).
fn stop_close(app: &App, slow: &CancellationToken) -> Option<CloseSpec> {
    if app.lifecycle.is_stopped() {
        None
    } else if app.lifecycle.are_sockets_closing() {
        Some(DRAINING)
    } else if slow.is_cancelled() {
        Some(SLOW)
    } else {
        None
    }
}

/// Events this socket must show cannot be read (the log read failed, or they were trimmed or never logged):
/// skipping them would show a conversation with a hole, so the client is told to resume, which replays from
/// its last `seq` (or reports `recovered: false`).
const RESYNC: CloseSpec =
    CloseSpec { code: CLOSE_SLOW_CONSUMER, reason: "events missed: resume to continue", reconnect: true };
const TOO_LARGE: CloseSpec = CloseSpec { code: CLOSE_TOO_LARGE, reason: "frame too large", reconnect: false };
const DRAINING: CloseSpec = CloseSpec { code: CLOSE_DRAINING, reason: "server draining: reconnect", reconnect: true };
const SLOW: CloseSpec =
    CloseSpec { code: CLOSE_SLOW_CONSUMER, reason: "slow consumer: resume to continue", reconnect: true };

/// How long a socket that is being closed may take to read up to the close frame. The `reconnect` frame and
/// the close queue behind whatever the socket buffers already hold (several MiB on loopback), so a client that
/// stopped reading needs time to get there once it reads again; how long that takes depends on the client and
/// the machine, not on us. The wait costs one parked task and the socket's kernel buffers (the queue is already
/// freed), and it ends early when the drain runs out of time or the pod stops.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(30);

/// Sends the close (see [`send_close`]) unless [`CLOSE_GRACE`] passes, the drain interrupts or the pod stops
/// first; then the TCP connection is simply dropped.
async fn close_within_grace(app: &App, socket: &mut WebSocket, spec: &CloseSpec, extended: bool) {
    tokio::select! {
        _ = tokio::time::timeout(CLOSE_GRACE, send_close(socket, spec, extended)) => {}
        _ = app.lifecycle.turns_interrupted() => {}
        _ = app.lifecycle.stopped() => {}
    }
}

/// The `reconnect` extension frame (extended clients), then the close frame.
async fn send_close(socket: &mut WebSocket, spec: &CloseSpec, extended: bool) {
    if spec.reconnect && extended {
        let _ = send_text(socket, &out::reconnect(spec.reason, 500).to_string()).await;
    }
    let frame = CloseFrame { code: spec.code, reason: Utf8Bytes::from_static(spec.reason) };
    let _ = socket.send(Message::Close(Some(frame))).await;
    let _ = socket.close().await;
}

async fn send_text(sink: &mut WebSocket, text: &str) -> bool {
    sink.send(Message::Text(Utf8Bytes::from(text))).await.is_ok()
}
