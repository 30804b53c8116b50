//! A WebSocket test client for the Switchboard protocol.
//!
//! Tests read server events in order and must never hang: every receive has a deadline and panics with
//! what it did see, so a missing event fails fast with a useful message instead of timing out the suite.
//! The server's idle `keepalive` events can arrive at any moment, so the JSON-level receives skip them;
//! [`Client::recv_raw`] does not, for the tests that are about keepalives or close codes.

use std::fmt;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use serde_json::Value;
use tokio::net::TcpStream;
use tokio::time::{timeout_at, Instant};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::{self, Message};
use tokio_tungstenite::{connect_async, MaybeTlsStream, WebSocketStream};

/// Deadline for one [`Client::recv`] / [`Client::recv_raw`].
pub const RECV_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline for a whole [`Client::recv_until`], which may span a model turn.
pub const UNTIL_TIMEOUT: Duration = Duration::from_secs(10);
/// Deadline for the TCP connect plus upgrade handshake.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// The extension subprotocol a client asks for to get `seq`, `resume_session` and the other extensions.
pub const SWITCHBOARD_PROTOCOL: &str = "switchboard";

/// Whether a server event is the unsolicited `keepalive`, which carries no information for most tests.
pub fn is_keepalive(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("keepalive")
}

/// One thing read from the socket, with ping/pong already handled.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    /// A text frame holding JSON.
    Text(Value),
    /// A text frame that is not JSON (a protocol bug in the server, so kept distinct from [`Frame::Text`]).
    NotJson(String),
    Binary(Vec<u8>),
    /// The server's close frame and its code, if it gave one.
    Close(Option<u16>),
    /// The connection ended (after a close, or dropped without one).
    Closed,
}

/// A failed connect; `status` is set when the server refused the upgrade with an HTTP response.
#[derive(Debug)]
pub struct ConnectError {
    pub status: Option<u16>,
    pub body: Option<String>,
    pub message: String,
}

impl fmt::Display for ConnectError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.status {
            Some(s) => write!(f, "upgrade refused with HTTP {s}: {}", self.body.as_deref().unwrap_or("")),
            None => write!(f, "{}", self.message),
        }
    }
}

impl std::error::Error for ConnectError {}

impl ConnectError {
    fn other(message: impl fmt::Display) -> ConnectError {
        ConnectError { status: None, body: None, message: message.to_string() }
    }
}

/// A connected WebSocket client.
pub struct Client {
    ws: WebSocketStream<MaybeTlsStream<TcpStream>>,
    protocol: Option<String>,
    last_error: Option<String>,
}

impl Client {
    /// Connects as a plain v1 client (no subprotocol, no token), panicking on failure.
    pub async fn connect(url: &str) -> Client {
        Self::connect_with(url, None, None).await.unwrap_or_else(|e| panic!("websocket connect to {url} failed: {e}"))
    }

    /// Connects with an optional `Sec-WebSocket-Protocol` (a single name or a comma-separated list) and an
    /// optional `Authorization: Bearer` token.
    ///
    /// As RFC 6455 requires (and browsers do), the connect fails if a subprotocol was asked for and the
    /// server selected none, so a server that ignores the request cannot pass for one that honours it.
    pub async fn connect_with(
        url: &str,
        subprotocol: Option<&str>,
        bearer: Option<&str>,
    ) -> Result<Client, ConnectError> {
        let bearer = bearer.map(|t| format!("Bearer {t}"));
        let mut headers = Vec::new();
        if let Some(p) = subprotocol {
            headers.push(("Sec-WebSocket-Protocol", p));
        }
        if let Some(b) = &bearer {
            headers.push(("Authorization", b.as_str()));
        }
        Self::connect_with_headers(url, &headers).await
    }

    /// Connects with arbitrary extra request headers (e.g. `Origin`).
    pub async fn connect_with_headers(url: &str, headers: &[(&str, &str)]) -> Result<Client, ConnectError> {
        let mut request = url.into_client_request().map_err(ConnectError::other)?;
        for (name, value) in headers {
            let name = HeaderName::from_bytes(name.as_bytes()).map_err(ConnectError::other)?;
            let value = HeaderValue::from_str(value).map_err(ConnectError::other)?;
            request.headers_mut().append(name, value);
        }
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, connect_async(request))
            .await
            .map_err(|_| ConnectError::other(format!("connect to {url} timed out")))?;
        match connected {
            Ok((ws, response)) => {
                let protocol =
                    response.headers().get("sec-websocket-protocol").and_then(|v| v.to_str().ok()).map(str::to_string);
                Ok(Client { ws, protocol, last_error: None })
            }
            Err(tungstenite::Error::Http(response)) => Err(ConnectError {
                status: Some(response.status().as_u16()),
                body: response.body().as_ref().map(|b| String::from_utf8_lossy(b).into_owned()),
                message: format!("upgrade refused with HTTP {}", response.status()),
            }),
            Err(e) => Err(ConnectError::other(e)),
        }
    }

    /// The HTTP status with which the server refused the upgrade, or `None` if it accepted (the socket is
    /// then closed again). Panics if no HTTP answer came at all, since that is a broken test setup, not a
    /// refusal.
    pub async fn connect_err_status(url: &str, bearer: Option<&str>) -> Option<u16> {
        match Self::connect_with(url, None, bearer).await {
            Ok(mut client) => {
                client.close().await;
                None
            }
            Err(ConnectError { status: Some(s), .. }) => Some(s),
            Err(e) => panic!("websocket connect to {url} failed without an HTTP answer: {e}"),
        }
    }

    /// The subprotocol the server selected in the handshake.
    pub fn selected_protocol(&self) -> Option<String> {
        self.protocol.clone()
    }

    /// Sends a JSON value as a text frame.
    pub async fn send(&mut self, value: &Value) {
        self.send_text(&value.to_string()).await;
    }

    /// Sends a text frame verbatim, for malformed-input tests.
    pub async fn send_text(&mut self, text: &str) {
        self.ws.send(Message::text(text)).await.unwrap_or_else(|e| panic!("websocket send failed: {e}"));
    }

    /// Sends one text frame of `n` bytes (`x`s), for frame-size limit tests. Send errors are ignored: a server
    /// enforcing the limit may close the connection while the frame is still being written.
    pub async fn send_raw_bytes(&mut self, n: usize) {
        if let Err(e) = self.ws.send(Message::text("x".repeat(n))).await {
            self.last_error = Some(e.to_string());
        }
    }

    /// Reads the next frame, or `None` if nothing arrives before `deadline`.
    async fn read_frame(&mut self, deadline: Instant) -> Option<Frame> {
        loop {
            let next = match timeout_at(deadline, self.ws.next()).await {
                Err(_) => return None,
                Ok(next) => next,
            };
            let msg = match next {
                None => return Some(Frame::Closed),
                Some(Err(e)) => {
                    // Closed, reset or protocol error: all mean no more frames; keep the cause for messages.
                    self.last_error = Some(e.to_string());
                    return Some(Frame::Closed);
                }
                Some(Ok(msg)) => msg,
            };
            return Some(match msg {
                Message::Text(text) => match serde_json::from_str(text.as_str()) {
                    Ok(v) => Frame::Text(v),
                    Err(_) => Frame::NotJson(text.as_str().to_string()),
                },
                Message::Binary(bytes) => Frame::Binary(bytes.to_vec()),
                Message::Close(frame) => Frame::Close(frame.map(|f| u16::from(f.code))),
                // tungstenite answers pings itself; control frames are not part of the protocol under test.
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => continue,
            });
        }
    }

    fn describe_end(&self) -> String {
        match &self.last_error {
            Some(e) => format!(" (last error: {e})"),
            None => String::new(),
        }
    }

    /// The next JSON event, skipping `keepalive`s. Panics after [`RECV_TIMEOUT`], on close, or on a frame
    /// that is not JSON text.
    pub async fn recv(&mut self) -> Value {
        let deadline = Instant::now() + RECV_TIMEOUT;
        loop {
            match self.read_frame(deadline).await {
                None => panic!("no websocket event within {RECV_TIMEOUT:?}"),
                Some(Frame::Text(v)) if is_keepalive(&v) => continue,
                Some(Frame::Text(v)) => return v,
                Some(other) => panic!("expected a JSON event, got {other:?}{}", self.describe_end()),
            }
        }
    }

    /// The next frame of any kind, keepalives included. Panics after [`RECV_TIMEOUT`].
    pub async fn recv_raw(&mut self) -> Frame {
        match self.recv_raw_timeout(RECV_TIMEOUT).await {
            Some(frame) => frame,
            None => panic!("no websocket frame within {RECV_TIMEOUT:?}"),
        }
    }

    /// The next frame of any kind, or `None` if none arrives within `timeout`.
    pub async fn recv_raw_timeout(&mut self, timeout: Duration) -> Option<Frame> {
        self.read_frame(Instant::now() + timeout).await
    }

    /// Collects events (keepalives skipped) up to and including the first one matching `pred`, e.g. the
    /// terminal event of a turn. Panics after [`UNTIL_TIMEOUT`] or on close, listing what it did receive.
    pub async fn recv_until(&mut self, pred: impl Fn(&Value) -> bool) -> Vec<Value> {
        let deadline = Instant::now() + UNTIL_TIMEOUT;
        let mut seen = Vec::new();
        loop {
            match self.read_frame(deadline).await {
                Some(Frame::Text(v)) if is_keepalive(&v) => continue,
                Some(Frame::Text(v)) => {
                    let done = pred(&v);
                    seen.push(v);
                    if done {
                        return seen;
                    }
                }
                None => panic!("no matching websocket event within {UNTIL_TIMEOUT:?}; received:\n{}", pretty(&seen)),
                Some(other) => {
                    panic!("got {other:?}{} before a matching event; received:\n{}", self.describe_end(), pretty(&seen))
                }
            }
        }
    }

    /// Asserts that nothing but keepalives arrives for `duration` (a close counts as something), e.g. that
    /// `cancel` with nothing running emits nothing.
    pub async fn expect_silence(&mut self, duration: Duration) {
        let deadline = Instant::now() + duration;
        loop {
            match self.read_frame(deadline).await {
                None => return,
                Some(Frame::Text(v)) if is_keepalive(&v) => continue,
                Some(other) => panic!("expected silence for {duration:?}, got {other:?}{}", self.describe_end()),
            }
        }
    }

    /// Sends a normal close and waits (briefly) for the server's reply, so the server sees a clean close
    /// rather than a reset.
    pub async fn close(&mut self) {
        let frame = CloseFrame { code: CloseCode::Normal, reason: "".into() };
        if self.ws.send(Message::Close(Some(frame))).await.is_err() {
            return;
        }
        let deadline = Instant::now() + Duration::from_secs(2);
        while let Some(frame) = self.read_frame(deadline).await {
            if frame == Frame::Closed {
                return;
            }
        }
    }
}

fn pretty(values: &[Value]) -> String {
    values.iter().map(|v| format!("  {v}\n")).collect()
}
