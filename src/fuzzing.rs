//! What the fuzz targets (`fuzz/fuzz_targets/`) drive: each function takes arbitrary bytes, must never panic,
//! and checks an invariant of its own where one exists.

use crate::llm::sse::SseDecoder;
use crate::llm::ModelEvent;

/// The client-frame parser: any text gives a request or a clear error, and an error that could read the
/// request id echoes it.
pub fn client_frame(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = crate::protocol::inbound::parse(text) {
        assert!(!e.error.message.is_empty(), "an error says what is wrong");
    }
}

/// The SSE decoder: the same body gives the same events whether it arrives whole or cut at any point (the first
/// byte of the input picks the cut).
pub fn sse(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else { return };
    let whole = decode(&[body]);
    let at = usize::from(cut) * body.len() / 255;
    let (a, b) = body.split_at(at.min(body.len()));
    assert_eq!(whole, decode(&[a, b]), "the events do not depend on how the bytes were cut");
}

fn decode(chunks: &[&[u8]]) -> Vec<String> {
    let mut d = SseDecoder::new();
    let mut out = Vec::new();
    for chunk in chunks {
        d.feed(chunk);
        while let Some(ev) = d.next_event() {
            out.push(describe(ev));
        }
    }
    d.end_of_body();
    while let Some(ev) = d.next_event() {
        out.push(describe(ev));
    }
    // Tool-call ids a server left out are made up per stream: compare without them.
    out
}

fn describe(ev: Result<ModelEvent, crate::llm::LlmError>) -> String {
    match ev {
        Ok(ModelEvent::ToolCalls(calls)) => {
            let calls: Vec<String> = calls
                .into_iter()
                .map(|c| {
                    let id = if c.id.starts_with("call_") && c.id.len() == 37 { "<made up>".into() } else { c.id };
                    format!("{id}/{}/{}", c.function.name, c.function.arguments)
                })
                .collect();
            format!("calls {calls:?}")
        }
        Ok(other) => format!("{other:?}"),
        Err(e) => format!("error {e}"),
    }
}

/// The config loader: any file text (with no environment) loads or fails with an error naming what is wrong.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    match crate::config::Config::load_text(Some(("fuzz.toml", text)), Vec::new()) {
        Ok(c) => {
            // Whatever loads also validates again and renders.
            assert!(c.validate().is_ok());
            let _ = toml::to_string(&c.redacted());
        }
        Err(e) => assert!(!e.to_string().is_empty()),
    }
}
