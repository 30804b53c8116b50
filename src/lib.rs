//! Switchboard: a realtime gateway for LLM-agent conversations over WebSocket, scaled out on Redis.
//!
//! ```text
//!  main ─▶ config (defaults → file → env, validated) ─▶ server (lifecycle, drain)
//!                                                        │
//!  http (router: /ws /health /readyz /metrics /admin/*) ─┤
//!    └─ ws (one task per socket: client frames → handlers; hub → queue → socket)
//!         └─ handlers (one fn per action) ─▶ turn (agent loop: llm + tools, park/resume)
//!                                               │            ├─ llm::{openai, demo}  (openai reads a flowing
//!                                               │            │   stream in windows on a pod-wide grid: llm::window)
//!                                               │            └─ tools (HTTP webhooks)
//!  app (the pod: emit, cancel, sweepers, canary) ┘
//!    ├─ hub (one bus subscription per channel per pod → local sockets)
//!    └─ backend (traits) ─┬─ memory (embedded default, one pod)
//!                         └─ redis (fred: sessions, seq'd log + publish in one script, bus, leases, …)
//!  protocol::{inbound, outbound, shapes}   auth   agents   metrics   telemetry   error (one client-safe error)
//! ```
//!
//! Every session event is appended to the session's log with a gap-free `seq` and published in the same
//! step; sockets are fed by the hub and repair gaps from the log, so any pod can serve any client.

#![warn(unreachable_pub)]

// The library's API: configuration, starting and stopping a pod, the backend seams (and their conformance
// suite with the `conformance` feature), telemetry set-up and the v1 frame shapes. Everything else is internal.
pub mod backend;
pub mod config;
pub mod protocol;
pub mod server;
pub mod telemetry;

mod agents;
mod app;
mod auth;
mod conn;
mod error;
mod handlers;
mod http;
mod hub;
mod lifecycle;
mod llm;
mod metrics;
mod queue;
mod tools;
mod turn;
mod util;
mod ws;
