//! The integration suite in one test binary (one link step instead of eight: on two cores the links were most
//! of a warm `cargo test`). Each module is what was its own binary: the protocol over real sockets, the orra
//! gateway, several pods on one store, the Redis backends (single, cluster, Sentinel, TLS, durability), the
//! test support's own checks, and the real binary's telemetry and drain. `tests/browser.rs` (Chromium) and
//! `tests/protocol_plain_reads.rs` (the protocol suite again with the model's read windows off, chosen by the
//! binary's name) stay binaries of their own.

#[path = "../harness/mod.rs"]
mod harness;
#[path = "../support/mod.rs"]
mod support;

#[path = "../gateway/mod.rs"]
mod gateway;
mod mcp;
#[path = "../multipod/mod.rs"]
mod multipod;
#[path = "../protocol/mod.rs"]
mod protocol;
mod redis_backends;
mod redis_durability;
mod redis_tls;
mod support_selftest;
mod telemetry;
