//! The protocol suite again, with the model connection's read windows off (`llm.read_window_ms = 0`, the
//! plain connector; coalescing stays on). The harness sees this binary's name and sets the key.
#[path = "harness/mod.rs"]
mod harness;
#[path = "support/mod.rs"]
mod support;

#[path = "protocol/mod.rs"]
mod suite;
