//! Prometheus metrics, hand-rolled on atomics (a handful of counters, gauges and one histogram do not
//! justify a registry crate on the hot path).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

use crate::error::ErrorCode;

const LATENCY_BUCKETS_MS: [u64; 10] = [50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000];

#[derive(Default)]
pub struct Metrics {
    pub connections: AtomicI64,
    pub sessions_attached: AtomicI64,
    pub turns_started: AtomicU64,
    pub turns_running: AtomicI64,
    pub events_published: AtomicU64,
    pub events_delivered: AtomicU64,
    pub gap_repairs: AtomicU64,
    pub slow_consumers: AtomicU64,
    pub pending_confirmations: AtomicI64,
    /// Last canary round trip through the bus (publish → own subscription), in ms.
    pub bus_lag_ms: AtomicI64,
    pub tokens_prompt: AtomicU64,
    pub tokens_completion: AtomicU64,
    errors: [AtomicU64; ErrorCode::ALL.len()],
    llm_ttft: Histogram,
    turn_duration: Histogram,
}

#[derive(Default)]
struct Histogram {
    buckets: [AtomicU64; LATENCY_BUCKETS_MS.len()],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Histogram {
    fn observe(&self, ms: u64) {
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            if ms <= *b {
                self.buckets[i].fetch_add(1, Ordering::Relaxed);
            }
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_ms.fetch_add(ms, Ordering::Relaxed);
    }

    fn render(&self, name: &str, help: &str, out: &mut String) {
        out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} histogram\n"));
        for (i, b) in LATENCY_BUCKETS_MS.iter().enumerate() {
            let le = *b as f64 / 1000.0;
            out.push_str(&format!("{name}_bucket{{le=\"{le}\"}} {}\n", self.buckets[i].load(Ordering::Relaxed)));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{name}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!("{name}_sum {}\n", self.sum_ms.load(Ordering::Relaxed) as f64 / 1000.0));
        out.push_str(&format!("{name}_count {count}\n"));
    }
}

impl Metrics {
    pub fn error(&self, code: ErrorCode) {
        if let Some(i) = ErrorCode::ALL.iter().position(|c| *c == code) {
            self.errors[i].fetch_add(1, Ordering::Relaxed);
        }
    }
    pub fn observe_ttft(&self, ms: u64) {
        self.llm_ttft.observe(ms);
    }
    pub fn observe_turn(&self, ms: u64) {
        self.turn_duration.observe(ms);
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        let g = |a: &AtomicI64| a.load(Ordering::Relaxed).to_string();
        let c = |a: &AtomicU64| a.load(Ordering::Relaxed).to_string();
        // (name, type, help, value): one table, one renderer.
        let plain = [
            ("switchboard_connections", "gauge", "Open WebSocket connections on this pod.", g(&self.connections)),
            (
                "switchboard_sessions_attached",
                "gauge",
                "Socket-session attachments on this pod.",
                g(&self.sessions_attached),
            ),
            (
                "switchboard_turns_started_total",
                "counter",
                "Agent turns started or resumed on this pod.",
                c(&self.turns_started),
            ),
            ("switchboard_turns_running", "gauge", "Agent turns running on this pod.", g(&self.turns_running)),
            (
                "switchboard_events_published_total",
                "counter",
                "Session events appended and published.",
                c(&self.events_published),
            ),
            (
                "switchboard_events_delivered_total",
                "counter",
                "Frames delivered to sockets from the bus or log.",
                c(&self.events_delivered),
            ),
            (
                "switchboard_gap_repairs_total",
                "counter",
                "Events read back from the log to fill a gap.",
                c(&self.gap_repairs),
            ),
            (
                "switchboard_slow_consumers_total",
                "counter",
                "Sockets closed with 4000 for not reading.",
                c(&self.slow_consumers),
            ),
            (
                "switchboard_pending_confirmations",
                "gauge",
                "Parked turns waiting for a human decision, across all pods (the same on every pod).",
                g(&self.pending_confirmations),
            ),
            (
                "switchboard_bus_lag_seconds",
                "gauge",
                "Round trip of this pod's canary through the bus.",
                format!("{}", self.bus_lag_ms.load(Ordering::Relaxed) as f64 / 1000.0),
            ),
            (
                "switchboard_tokens_prompt_total",
                "counter",
                "Prompt tokens reported by the model.",
                c(&self.tokens_prompt),
            ),
            (
                "switchboard_tokens_completion_total",
                "counter",
                "Completion tokens reported by the model.",
                c(&self.tokens_completion),
            ),
        ];
        for (name, kind, help, value) in plain {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"));
        }
        out.push_str("# HELP switchboard_errors_total Errors sent to clients, by code.\n# TYPE switchboard_errors_total counter\n");
        for (i, code) in ErrorCode::ALL.iter().enumerate() {
            out.push_str(&format!(
                "switchboard_errors_total{{code=\"{}\"}} {}\n",
                code.as_str(),
                self.errors[i].load(Ordering::Relaxed)
            ));
        }
        self.llm_ttft.render(
            "switchboard_llm_time_to_first_token_seconds",
            "Model latency to the first streamed event.",
            &mut out,
        );
        self.turn_duration.render(
            "switchboard_turn_duration_seconds",
            "Wall time of a turn segment (start or resume to end or park).",
            &mut out,
        );
        out
    }
}
