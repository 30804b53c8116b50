//! Switchboard: a realtime gateway for LLM-agent conversations over WebSocket, scaled out on Redis.
//!
//! ```text
//!  main ─▶ config (defaults → file → env, validated) ─▶ server (boot, drain: lifecycle phases)
//!                                                        │
//!  http (/ws /health /readyz /metrics /admin/publish) ───┤   gateway (/api/*: REST + SSE turns on namespaces;
//!  admin/ (/admin/*: roles, conversations, settings)     │            the orra dialect on /ws) ─▶ turn, hub
//!  widget/ (/widget.js, demo page; origin + authContext) ┘
//!    └─ ws/ (mod: one task per socket: open / serve / close, close codes; clock: its timers;
//!            delivery: cursors with epochs, gap repair that never skips, rendering)
//!         ├─ conn (a socket's state: identity and act_as, attached sessions, frame bucket, registry entry)
//!         └─ handlers/ (one fn per action; create; resume: proofs of ownership; answers: confirm,
//!              │         submit_interaction, verify_otp) ─▶ tenancy (owned, agent's, proven records)
//!              └─ turn/ (Turns: the front door; budget: every per-caller budget; TurnState, resume, lease;
//!                   │    drive: tools / model / finish; gates: built-in tools,
//!                   │    OTP, confirm; otp_gate; park; emitter: group commit; durable: steps; takeover;
//!                   │    sweeper: timeouts, dead pods' turns taken over)
//!                   ├─ llm::{openai (retries), sse (decoding), window (pod-wide read grid), demo}  tools
//!                   └─ knowledge/ (builtin: tantivy | webhook; citations)  interactions (specs, validation)  otp
//!  app (the pod: emit, cancel, control and canary loops, readiness) ┘
//!    ├─ hub/ (one bus subscription per channel per pod → local sockets' OutQueue<Outbound>; routes)
//!    └─ backend (traits, one choice point) ─┬─ memory (embedded default, one pod)
//!                                           └─ redis/ (url keys scripts+lua/ conn sessions log confirms leases
//!                                                      registry identity settings bus sentinel durability
//!                                                      replicated memo)
//!  used across: protocol::{inbound, fields, outbound, shapes}  auth (jwt, resume tokens)  client_addr
//!          agents  metrics (prometheus-client)
//!          telemetry  error (one client-safe error)  queue  lifecycle  util
//! ```
//!
//! Every session event is appended to the session's log with a gap-free `seq` (in the log's epoch) and
//! published in the same step, fenced by the turn's lease; sockets are fed by the hub and repair gaps from
//! the log, so any pod can serve any client. Imports
//! point down this map (no module imports one that imports it back). The long form: `docs/architecture.md`.

#![warn(unreachable_pub)]

// The library's API: configuration, starting and stopping a pod, the backend seams (and their conformance
// suite with the `conformance` feature), telemetry set-up and the v1 frame shapes. Everything else is internal.
pub mod backend;
pub mod config;
pub mod protocol;
pub mod server;
pub mod telemetry;

/// Entry points for the coverage-guided fuzz targets under `fuzz/` (feature `fuzzing`; not in the library's API).
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzzing;

mod admin;
mod agents;
mod app;
mod auth;
mod client_addr;
mod conn;
mod error;
mod gateway;
mod handlers;
mod http;
mod hub;
mod ids;
mod interactions;
mod knowledge;
mod lifecycle;
mod listen;
mod llm;
mod mcp;
mod metrics;
mod origin;
mod otp;
mod pod;
mod queue;
mod tenancy;
mod tools;
mod turn;
mod util;
mod webhook;
mod widget;
mod ws;
