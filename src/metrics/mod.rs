//! Prometheus metrics of one pod, on `prometheus-client`: typed handles in a per-pod registry (several pods
//! in one test process keep their own numbers; nothing global), label families where they help, the
//! cluster-wide pending-confirmations gauge as a collector read at scrape time, and the standard process
//! metrics ([`process`]). Call sites use methods (`metrics.turn_started()`), never the handles.

mod process;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::atomic::AtomicU64;

use crate::error::ErrorCode;
use crate::llm::Usage;

/// Latency buckets of both histograms, in seconds.
const LATENCY_BUCKETS_S: [f64; 10] = [0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CodeLabel {
    code: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: &'static str,
}

/// How a turn segment (a start or a resume, up to its end or its park) ended, for `switchboard_turns_total`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TurnOutcome {
    Completed,
    Parked,
    Failed,
    Cancelled,
    /// The pod stopped under it (killed): another pod's sweeper ends it.
    Abandoned,
}

impl TurnOutcome {
    fn label(self) -> &'static str {
        match self {
            TurnOutcome::Completed => "completed",
            TurnOutcome::Parked => "parked",
            TurnOutcome::Failed => "failed",
            TurnOutcome::Cancelled => "cancelled",
            TurnOutcome::Abandoned => "abandoned",
        }
    }
}

/// The pod's metrics. The handles are cheap shared atomics; the registry holds clones of them for encoding.
pub(crate) struct Metrics {
    registry: Registry,
    connections: Gauge,
    sessions_attached: Gauge,
    turns_started: Counter,
    takeovers: Counter,
    turns_running: Gauge,
    turns: Family<OutcomeLabel, Counter>,
    events_published: Counter,
    events_delivered: Counter,
    gap_repairs: Counter,
    slow_consumers: Counter,
    bus_lag: Gauge<f64, AtomicU64>,
    tokens_prompt: Counter,
    tokens_completion: Counter,
    /// Dollars spent on priced models, by model (`llm.prices`).
    cost_usd: Family<ModelLabel, Counter<f64, AtomicU64>>,
    /// MCP tool calls by server, tool and outcome (`ok`, `error`).
    mcp_calls: Family<McpCallLabel, Counter>,
    /// 1 while an MCP server answers (its tools listed), 0 while it is down.
    mcp_up: Family<ServerLabel, Gauge>,
    errors: Family<CodeLabel, Counter>,
    llm_ttft: Histogram,
    turn_duration: Histogram,
    connections_refused: Family<ReasonLabel, Counter>,
    /// Refusals since the last summary log line, by [`Refusal`] (swapped out by the listener's summary).
    refusals_since: [AtomicU64; Refusal::ALL.len()],
}

/// Why a connection or an upgrade was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    /// `limits.connections_per_pod` connections were open.
    Cap,
    /// The request head did not arrive within `http.header_read_timeout_ms`.
    HeaderTimeout,
    /// A WebSocket upgrade from an origin `http.allowed_origins` does not allow.
    Origin,
    /// A WebSocket upgrade without valid credentials.
    Unauthorized,
    /// A WebSocket upgrade past `limits.sockets_per_user`.
    SocketsPerUser,
    /// A WebSocket upgrade while the pod drains.
    Draining,
}

impl Refusal {
    pub(crate) const ALL: [Refusal; 6] = [
        Refusal::Cap,
        Refusal::HeaderTimeout,
        Refusal::Origin,
        Refusal::Unauthorized,
        Refusal::SocketsPerUser,
        Refusal::Draining,
    ];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Refusal::Cap => "connections_per_pod",
            Refusal::HeaderTimeout => "header_timeout",
            Refusal::Origin => "origin",
            Refusal::Unauthorized => "unauthorized",
            Refusal::SocketsPerUser => "sockets_per_user",
            Refusal::Draining => "draining",
        }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct McpCallLabel {
    server: String,
    tool: String,
    outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ServerLabel {
    server: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ModelLabel {
    model: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: &'static str,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

impl Metrics {
    pub(crate) fn new() -> Metrics {
        let mut registry = Registry::default();
        let histogram = || Histogram::new(LATENCY_BUCKETS_S);
        let m = Metrics {
            connections: Gauge::default(),
            sessions_attached: Gauge::default(),
            turns_started: Counter::default(),
            takeovers: Counter::default(),
            turns_running: Gauge::default(),
            turns: Family::default(),
            events_published: Counter::default(),
            events_delivered: Counter::default(),
            gap_repairs: Counter::default(),
            slow_consumers: Counter::default(),
            bus_lag: Gauge::default(),
            tokens_prompt: Counter::default(),
            tokens_completion: Counter::default(),
            cost_usd: Family::default(),
            mcp_calls: Family::default(),
            mcp_up: Family::default(),
            errors: Family::default(),
            llm_ttft: histogram(),
            turn_duration: histogram(),
            connections_refused: Family::default(),
            refusals_since: Default::default(),
            registry: Registry::default(),
        };
        // Counters are registered without `_total`: the encoder appends it (OpenMetrics), so the names on the
        // wire are the ones the dashboard and README use.
        let r = &mut registry;
        r.register("switchboard_connections", "Open WebSocket connections on this pod", m.connections.clone());
        r.register(
            "switchboard_sessions_attached",
            "Socket-session attachments on this pod",
            m.sessions_attached.clone(),
        );
        r.register("switchboard_turns_started", "Agent turns started or resumed on this pod", m.turns_started.clone());
        r.register(
            "switchboard_turn_takeovers",
            "Turns this pod took over from a pod that stopped renewing their lease",
            m.takeovers.clone(),
        );
        r.register("switchboard_turns_running", "Agent turns running on this pod", m.turns_running.clone());
        r.register("switchboard_turns", "Turn segments ended on this pod, by outcome", m.turns.clone());
        r.register("switchboard_events_published", "Session events appended and published", m.events_published.clone());
        r.register(
            "switchboard_events_delivered",
            "Frames delivered to sockets from the bus or log",
            m.events_delivered.clone(),
        );
        r.register("switchboard_gap_repairs", "Events read back from the log to fill a gap", m.gap_repairs.clone());
        r.register("switchboard_slow_consumers", "Sockets closed with 4000 for not reading", m.slow_consumers.clone());
        r.register("switchboard_bus_lag_seconds", "Round trip of this pod's canary through the bus", m.bus_lag.clone());
        r.register("switchboard_tokens_prompt", "Prompt tokens reported by the model", m.tokens_prompt.clone());
        r.register(
            "switchboard_tokens_completion",
            "Completion tokens reported by the model",
            m.tokens_completion.clone(),
        );
        r.register("switchboard_cost_usd", "Dollars spent on priced models (llm.prices), by model", m.cost_usd.clone());
        r.register("switchboard_mcp_calls", "MCP tool calls, by server, tool and outcome", m.mcp_calls.clone());
        r.register("switchboard_mcp_server_up", "1 while an MCP server answers, 0 while it is down", m.mcp_up.clone());
        r.register("switchboard_errors", "Errors sent to clients, by code", m.errors.clone());
        r.register(
            "switchboard_llm_time_to_first_token_seconds",
            "Model latency to the first streamed event",
            m.llm_ttft.clone(),
        );
        r.register(
            "switchboard_turn_duration_seconds",
            "Wall time of a turn segment (start or resume to end or park)",
            m.turn_duration.clone(),
        );
        r.register(
            "switchboard_connections_refused",
            "Connections and WebSocket upgrades refused, by reason",
            m.connections_refused.clone(),
        );
        r.register_collector(Box::new(process::ProcessCollector));
        // Every code and outcome is shown from the start (a rate over a series that appears late misses its
        // first increments).
        for code in ErrorCode::ALL {
            let _ = m.errors.get_or_create(&CodeLabel { code: code.as_str() });
        }
        for r in Refusal::ALL {
            let _ = m.connections_refused.get_or_create(&ReasonLabel { reason: r.label() });
        }
        for o in [
            TurnOutcome::Completed,
            TurnOutcome::Parked,
            TurnOutcome::Failed,
            TurnOutcome::Cancelled,
            TurnOutcome::Abandoned,
        ] {
            let _ = m.turns.get_or_create(&OutcomeLabel { outcome: o.label() });
        }
        Metrics { registry, ..m }
    }

    pub(crate) fn connection_opened(&self) {
        self.connections.inc();
    }
    pub(crate) fn connection_closed(&self, sessions_attached: usize) {
        self.connections.dec();
        self.sessions_attached.dec_by(i64::try_from(sessions_attached).unwrap_or(i64::MAX));
    }
    pub(crate) fn session_attached(&self) {
        self.sessions_attached.inc();
    }
    pub(crate) fn turn_started(&self) {
        self.turns_started.inc();
        self.turns_running.inc();
    }
    pub(crate) fn turn_taken_over(&self) {
        self.takeovers.inc();
    }
    pub(crate) fn turn_ended(&self, outcome: TurnOutcome, elapsed: std::time::Duration) {
        self.turns_running.dec();
        self.turns.get_or_create(&OutcomeLabel { outcome: outcome.label() }).inc();
        self.turn_duration.observe(elapsed.as_secs_f64());
    }
    pub(crate) fn events_published(&self, n: u64) {
        self.events_published.inc_by(n);
    }
    pub(crate) fn events_delivered(&self, n: u64) {
        self.events_delivered.inc_by(n);
    }
    pub(crate) fn gap_repaired(&self, missing: u64) {
        self.gap_repairs.inc_by(missing);
    }
    pub(crate) fn slow_consumer(&self) {
        self.slow_consumers.inc();
    }
    pub(crate) fn bus_lag(&self, ms: i64) {
        self.bus_lag.set(ms.max(0) as f64 / 1000.0);
    }
    pub(crate) fn tokens(&self, usage: Usage) {
        self.tokens_prompt.inc_by(usage.prompt_tokens);
        self.tokens_completion.inc_by(usage.completion_tokens);
    }
    /// Counts one MCP tool call.
    pub(crate) fn mcp_call(&self, server: &str, tool: &str, ok: bool) {
        let label = McpCallLabel { server: server.into(), tool: tool.into(), outcome: if ok { "ok" } else { "error" } };
        self.mcp_calls.get_or_create(&label).inc();
    }
    /// Whether an MCP server answers now.
    pub(crate) fn mcp_server_up(&self, server: &str, up: bool) {
        self.mcp_up.get_or_create(&ServerLabel { server: server.into() }).set(i64::from(up));
    }
    /// Counts the cost of one model call on a priced model.
    pub(crate) fn cost(&self, model: &str, micro_usd: u64) {
        self.cost_usd.get_or_create(&ModelLabel { model: model.to_string() }).inc_by(micro_usd as f64 / 1e6);
    }
    /// Counts a refused connection or upgrade; the log line is the listener's periodic summary, never one each.
    pub(crate) fn connection_refused(&self, reason: Refusal) {
        self.connections_refused.get_or_create(&ReasonLabel { reason: reason.label() }).inc();
        // `ALL` lists the reasons in declaration order, so a reason's discriminant is its slot.
        self.refusals_since[reason as usize].fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Refusals since the last call, by reason.
    pub(crate) fn take_refusals(&self) -> Vec<(Refusal, u64)> {
        Refusal::ALL
            .iter()
            .zip(&self.refusals_since)
            .map(|(r, n)| (*r, n.swap(0, std::sync::atomic::Ordering::Relaxed)))
            .collect()
    }

    pub(crate) fn error(&self, code: ErrorCode) {
        self.errors.get_or_create(&CodeLabel { code: code.as_str() }).inc();
    }
    pub(crate) fn time_to_first_token(&self, elapsed: std::time::Duration) {
        self.llm_ttft.observe(elapsed.as_secs_f64());
    }

    /// The exposition (OpenMetrics text): this pod's metrics, then the cluster-wide ones read for this scrape.
    pub(crate) fn render(&self, cluster: &ClusterGauges) -> String {
        let mut out = String::new();
        let written = prometheus_client::encoding::text::encode_registry(&mut out, &self.registry).and_then(|()| {
            let mut scrape = Registry::default();
            scrape.register_collector(Box::new(cluster.clone()));
            prometheus_client::encoding::text::encode_registry(&mut out, &scrape)?;
            prometheus_client::encoding::text::encode_eof(&mut out)
        });
        if let Err(e) = written {
            // Writing into a String does not fail; a broken label encoder would.
            tracing::error!(error = %e, "metrics encoding failed");
        }
        out
    }
}

/// Gauges that are the same on every pod, read from the backend once per scrape. A value that could not be
/// read is left out of that scrape (a gap in the graph, not a stale number).
#[derive(Debug, Clone, Default)]
pub(crate) struct ClusterGauges {
    /// Parked turns waiting for a human decision, across all pods.
    pub pending_confirmations: Option<u64>,
}

impl Collector for ClusterGauges {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        if let Some(n) = self.pending_confirmations {
            let gauge = ConstGauge::new(i64::try_from(n).unwrap_or(i64::MAX));
            let metric = encoder.encode_descriptor(
                "switchboard_pending_confirmations",
                "Parked turns waiting for a human decision, across all pods (the same on every pod)",
                None,
                gauge.metric_type(),
            )?;
            gauge.encode(metric)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_keep_their_names_and_every_code_is_shown() {
        let m = Metrics::new();
        m.error(ErrorCode::RateLimited);
        m.turn_started();
        m.turn_ended(TurnOutcome::Completed, std::time::Duration::from_millis(120));
        let text = m.render(&ClusterGauges { pending_confirmations: Some(3) });
        for line in [
            "switchboard_errors_total{code=\"RATE_LIMITED\"} 1",
            "switchboard_errors_total{code=\"SESSION_NOT_FOUND\"} 0",
            "switchboard_turns_total{outcome=\"completed\"} 1",
            "switchboard_turns_started_total 1",
            "switchboard_turns_running 0",
            "switchboard_pending_confirmations 3",
            "switchboard_turn_duration_seconds_bucket{le=\"0.25\"} 1",
        ] {
            assert!(text.lines().any(|l| l == line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
        assert!(!m.render(&ClusterGauges::default()).contains("switchboard_pending_confirmations"));
    }
}
