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

pub mod agents;
pub mod app;
pub mod auth;
pub mod backend;
pub mod config;
pub mod conn;
pub mod error;
pub mod handlers;
pub mod http;
pub mod hub;
pub mod lifecycle;
pub mod llm;
pub mod metrics;
pub mod protocol;
pub mod queue;
pub mod server;
pub mod telemetry;
pub mod tools;
pub mod turn;
pub mod util;
pub mod ws;
