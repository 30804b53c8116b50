//! Opaque paging cursors (conversation lists, message history), the same on the socket and the admin API.

const CURSOR_ENGINE: base64::engine::GeneralPurpose = base64::engine::general_purpose::URL_SAFE_NO_PAD;

/// An opaque paging cursor: a position `n` in a listing of `kind`.
pub(crate) fn encode_cursor(kind: &str, n: u64) -> String {
    use base64::Engine;
    CURSOR_ENGINE.encode(format!("{kind}:{n}"))
}

/// The position in a cursor made by [`encode_cursor`] for the same `kind`; `None` for anything else.
pub(crate) fn decode_cursor(kind: &str, cursor: &str) -> Option<u64> {
    use base64::Engine;
    let text = String::from_utf8(CURSOR_ENGINE.decode(cursor).ok()?).ok()?;
    text.strip_prefix(kind)?.strip_prefix(':')?.parse().ok()
}
