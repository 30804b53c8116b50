//! The wire protocol (smooth-operator v1, plus Switchboard's opt-in extensions).
//!
//! - [`inbound`]: client frames → typed [`inbound::Request`]s, with lenient parsing and precise errors.
//! - [`outbound`]: builders for every server frame in its exact v1 shape.
//! - [`shapes`]: the v1 shapes stated as data, so tests can check that v1 clients never see an unknown field.

pub(crate) mod cursor;
mod fields;
pub(crate) mod inbound;
pub(crate) mod outbound;
pub(crate) mod position;
pub mod shapes;

/// The WebSocket subprotocol that opts a connection into the extensions.
pub const EXTENSION_SUBPROTOCOL: &str = "switchboard";

/// Longest accepted `send_message.message`, in characters.
pub const MAX_MESSAGE_CHARS: usize = 10_000;
