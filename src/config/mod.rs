//! Typed configuration: defaults → TOML file → `SWITCHBOARD_*` environment, validated at boot.
//!
//! Every key lives here with its default and a doc comment; [`load`] layers the sources, [`validate`] checks
//! the cross-field rules. Errors name the key (or the environment variable) so a
//! bad deploy fails loudly at start instead of misbehaving later.

use serde::{Deserialize, Serialize};

/// Errors raised while loading or validating configuration. Each names the offending key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("config file {path} is not valid TOML: {message}")]
    Syntax { path: String, message: String },
    #[error("config key `{key}`: {message}")]
    Invalid { key: String, message: String },
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
}

pub(crate) fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.to_string(), message: message.into() }
}

/// The whole configuration of one Switchboard process.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Listen address for HTTP and WebSocket (`0.0.0.0:8787` in the container).
    pub bind: String,
    /// Empty = in-memory backends (a single pod). `redis://`, `rediss://`, `redis-cluster://`,
    /// `redis-sentinel://host:port/master_name` select the scaled service.
    pub redis_url: String,
    /// Prefix of every Redis key and channel, so several deployments (or tests) can share one Redis.
    pub redis_key_prefix: String,
    /// CA certificates (PEM) that a `rediss` server's certificate must chain to. Empty = the Mozilla roots
    /// built into the binary (managed cloud Redis).
    pub redis_tls_ca_file: String,
    /// Replicas that must acknowledge each park, decision and log append (`WAIT`) before it counts as done;
    /// 0 = do not wait (Redis replicates asynchronously, so a failover may lose the last writes).
    pub redis_wait_replicas: u32,
    /// How long one `WAIT` may block; past it the write goes on unconfirmed and a warning is logged.
    pub redis_wait_timeout_ms: u64,
    /// Seconds of outbound silence after which a `keepalive` frame is sent.
    pub keepalive_s: u64,
    /// `json` (production), `pretty` (local), or `auto` (pretty on a terminal, JSON otherwise).
    pub log_format: LogFormat,
    pub llm: LlmConfig,
    pub auth: AuthConfig,
    pub turn: TurnConfig,
    pub confirm: ConfirmConfig,
    pub tools: ToolsConfig,
    pub limits: LimitsConfig,
    pub session: SessionConfig,
    pub drain: DrainConfig,
    pub http: HttpConfig,
    pub interaction: InteractionConfig,
    pub otp: OtpConfig,
    pub knowledge: KnowledgeConfig,
    pub widget: WidgetConfig,
    /// MCP servers whose tools agents may use.
    pub mcp: McpConfig,
    /// Agents served by this deployment. Empty = the built-in demo agent answers every `agentId`.
    pub agents: Vec<AgentConfig>,
}

/// The model endpoint: any OpenAI-compatible `/v1/chat/completions`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LlmConfig {
    /// Base URL up to and including `/v1`. Empty = the offline demo model.
    pub base_url: String,
    /// Bearer key for the endpoint (secret).
    pub api_key: String,
    /// Default model name.
    pub model: String,
    /// Per-call timeout in seconds (whole streamed call).
    pub timeout_s: u64,
    /// Retries on connect errors, 429 and 5xx, only before the first token.
    pub max_retries: u32,
    /// While a response streams, read the model's connection once per window of this many ms on a pod-wide
    /// grid (docs/benchmarks.md). Unset = `turn.coalesce_ms`; 0 = read every chunk as it arrives (the plain
    /// connector), which turns the windows off without turning off coalescing.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub read_window_ms: Option<u64>,
    /// The endpoint continues a final assistant message (`continue_final_message`, e.g. vLLM): a response cut
    /// by its pod's death is continued that way by the pod that takes the turn over. Off: the partial reply is
    /// given back with an instruction to continue it exactly.
    pub continue_final_message: bool,
    /// Per-org model keys (`[llm.org_keys] acme = "ACME_OPENAI_KEY"`): an org's turns use the key held by that
    /// environment variable (e.g. from a Kubernetes Secret), so each tenant's usage is billed to its own key.
    /// Orgs not listed use `llm.api_key`. A named variable that is unset or empty fails the boot.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub org_keys: std::collections::BTreeMap<String, String>,
    /// The keys themselves, read from the environment at load (secret; never serialized).
    #[serde(skip)]
    pub org_key_values: std::collections::BTreeMap<String, String>,
    /// Prices per model (`[llm.prices."gpt-4o-mini"] input_usd_per_mtok, output_usd_per_mtok`): a turn's
    /// `usage.costUsd` and the usage counters. A model without a price has no cost (left out, never 0).
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub prices: std::collections::BTreeMap<String, ModelPrice>,
}

/// What a model costs, in US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelPrice {
    pub input_usd_per_mtok: f64,
    pub output_usd_per_mtok: f64,
}

impl ModelPrice {
    /// The cost of `input` and `output` tokens, in millionths of a dollar (rounded up: never under-counted).
    pub fn micro_usd(&self, input: u64, output: u64) -> u64 {
        // USD per million tokens is micro-USD per token.
        (input as f64 * self.input_usd_per_mtok + output as f64 * self.output_usd_per_mtok).ceil() as u64
    }
}

impl LlmConfig {
    /// The model key of `org`'s turns, when it has its own.
    pub fn org_key(&self, org: &str) -> Option<&str> {
        self.org_key_values.get(org).map(String::as_str)
    }
}

/// Who a connection is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (everyone is one anonymous user in org `default`; local use only) or `jwt`.
    pub mode: AuthMode,
    /// `mode = "none"` on an address other than loopback: refused at boot unless this is set, because anyone
    /// who reaches the port could list, open and approve every conversation.
    pub allow_anonymous: bool,
    /// HS256 secret for `jwt` mode (secret).
    pub jwt_hs256_secret: String,
    /// RS256 public key (PEM) for `jwt` mode.
    pub jwt_rs256_public_key: String,
    /// JWKS endpoint (`https://idp/.well-known/jwks.json`) for `jwt` mode: keys by `kid`, cached, fetched again
    /// when a token names an unknown `kid` (at most once a second).
    pub jwks_url: String,
    /// Required `iss` of every token, when set.
    pub jwt_issuer: String,
    /// Required `aud` of every token, when set.
    pub jwt_audience: String,
    /// The org of a token without an `org` claim. Empty: such a token is refused.
    pub default_org: String,
    /// Bearer keys accepted by `POST /admin/publish` and `/admin/*` (secret). Empty = those endpoints answer 401.
    pub publish_keys: Vec<String>,
    /// API keys for server-side callers of the REST API and `/ws` (`[[auth.api_keys]] name, org`). The key
    /// itself is never in the file: it comes from `SWITCHBOARD_AUTH__API_KEYS__<NAME>` (upper case, `-` as `_`),
    /// e.g. from a Kubernetes Secret. A caller with a key is the user `api-key:<name>` in `org`.
    pub api_keys: Vec<ApiKeyConfig>,
    /// (secret, ≥ 32 bytes) Signs the `resumeToken` a socket without a JWT uses to reopen its session after
    /// a reconnect or a reload. Set it from `SWITCHBOARD_AUTH__RESUME_SECRET`, the same on every pod (and
    /// change it to revoke every token). Unset: a random key the pods agree on through the backend (kept in
    /// Redis, so it survives restarts; in memory, for the process's life).
    pub resume_secret: String,
}

/// One server-side caller's API key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiKeyConfig {
    /// `[A-Za-z0-9_-]`, 1–64 characters; names the environment variable that holds the key.
    pub name: String,
    /// The org the caller acts in.
    pub org: String,
    /// The key (secret), read from the environment at load; never serialized.
    #[serde(skip)]
    pub key: String,
}

impl ApiKeyConfig {
    /// The environment variable that holds this key.
    pub fn env_var(&self) -> String {
        format!("SWITCHBOARD_AUTH__API_KEYS__{}", self.name.to_ascii_uppercase().replace('-', "_"))
    }
}

/// The REST surface (`/api/*`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Origins allowed to call `/api/*` from a browser (CORS; exact origins or `*`). Empty = no CORS headers.
    pub cors_origins: Vec<String>,
    /// Largest request body on `/api/*` (413 `too_large` above).
    pub max_body_bytes: usize,
    /// Page origins allowed to open a WebSocket (`*`, exact, or `https://*.example.com`): an upgrade with another
    /// `Origin` gets 403. Empty = any (clients without an `Origin`, i.e. not browsers, always pass).
    pub allowed_origins: Vec<String>,
    /// A connection must send its first byte, and then its whole request head, within this many milliseconds
    /// (slow or silent clients are closed).
    pub header_read_timeout_ms: u64,
    /// An HTTP keep-alive connection with no new request for this many milliseconds is closed (WebSockets
    /// keep themselves alive and are not affected).
    pub idle_timeout_ms: u64,
    /// Proxies (addresses or networks, `10.0.0.0/8`) whose `X-Forwarded-For` is believed when they are the
    /// peer: the client address that budgets anonymous callers is then the first hop they did not add.
    pub trusted_proxies: Vec<String>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            cors_origins: Vec::new(),
            max_body_bytes: 1024 * 1024,
            allowed_origins: Vec::new(),
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 60_000,
            trusted_proxies: Vec::new(),
        }
    }
}

/// Bounds of one agent turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Model calls per turn before the turn ends with `AGENT_ERROR`.
    pub max_iterations: u32,
    /// Conversation messages replayed to the model.
    pub history_messages: usize,
    /// Tokens of history replayed to the model, at most (estimated: a token per 4 bytes of text, plus 4 per
    /// message): the oldest messages past it are left out, the newest always kept. 0 = no bound but
    /// `history_messages`.
    pub history_tokens: usize,
    /// Summarise the messages `history_tokens` leaves out (once, by the model; stored in the conversation and
    /// reused) instead of leaving them out silently.
    pub summarize: bool,
    /// Turn lease in milliseconds: renewed while a turn runs; a dead pod's turn is ended after it lapses.
    pub lease_ms: u64,
    /// Milliseconds a turn's streamed events may wait to be logged and published together (0: each as soon
    /// as the previous append returns). Every event stays its own frame with its own `seq`; only the Redis
    /// append and the pub/sub message are shared. The first event of a turn and its terminal event never
    /// wait. A model streaming a token every few ms costs one Redis call per window instead of per token.
    pub coalesce_ms: u64,
    /// Tool calls one model response may ask for; more end the turn with `AGENT_ERROR` (none of them runs).
    pub max_tool_calls: usize,
    /// Seconds one running stretch of a turn may take (model calls and tools; time parked for an approval
    /// does not count); past it the turn ends with `AGENT_ERROR`.
    pub deadline_s: u64,
    /// Turns running at once on one pod; one more `send_message` gets `RATE_LIMITED`.
    pub max_per_pod: usize,
    /// A turn whose pod dies is taken over by another pod from its last durable step (docs/architecture.md,
    /// "A turn survives its pod"); off: it ends with `TURN_INTERRUPTED`, and no step is written.
    pub takeover: bool,
    /// Takeovers of one turn at most; past them the turn ends with `TURN_INTERRUPTED`.
    pub max_takeovers: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ConfirmConfig {
    /// Seconds an approval may stay unanswered before it is denied.
    pub timeout_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ToolsConfig {
    /// Webhook call timeout in milliseconds.
    pub timeout_ms: u64,
    /// Largest webhook response body accepted; larger is an error result for the model.
    pub max_output_bytes: usize,
    /// When set (secret, ≥ 32 bytes), every webhook call carries `X-Switchboard-Signature: t=<unix>,v1=<hex
    /// HMAC-SHA256 of "<t>.<body>">`, so the host can check that the call comes from Switchboard.
    pub signing_secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Largest client frame; larger closes the socket with 1009.
    pub max_frame_bytes: usize,
    /// Frames queued for one socket before it is treated as a slow consumer (close 4000).
    pub outbound_queue: usize,
    /// Events kept per session for resume.
    pub log_len: usize,
    /// `send_message` frames per connection per minute; more get `RATE_LIMITED`.
    pub messages_per_minute: u32,
    /// Sessions one connection may follow (create, resume, attach); one more gets `RATE_LIMITED`. Each costs
    /// the pod a subscription and the socket a cursor, so a client opening sessions in a loop is bounded.
    pub sessions_per_connection: usize,
    /// `send_message` per user per minute across all their sockets and every pod (counted in the backend);
    /// more get `RATE_LIMITED`.
    pub messages_per_user_per_minute: u64,
    /// WebSockets one user may hold open across every pod; one more upgrade is refused with 429.
    pub sockets_per_user: usize,
    /// Connections (HTTP and WebSocket) one pod holds open at once; one more is closed on accept.
    pub connections_per_pod: usize,
    /// Turns one user may have running at once across every pod (parked turns do not count); one more
    /// `send_message` gets `RATE_LIMITED`.
    pub turns_per_user: u64,
    /// Bytes of missed events one `resume_session` replays at most: past it the newest that fit are replayed
    /// and the ack says `recovered: false`.
    pub resume_replay_bytes: u64,
    /// Bytes one user may have replayed per minute across every socket and pod; a resume past it gets
    /// `RATE_LIMITED`.
    pub replay_bytes_per_user_per_minute: u64,
    /// Sessions (and gateway namespaces) one caller may create per minute on every door and pod; an anonymous
    /// caller counts per client address. More get `RATE_LIMITED`.
    pub sessions_per_user_per_minute: u64,
    /// Frames one WebSocket may send per second, on average (a token bucket); past it a frame is answered
    /// `RATE_LIMITED` with `retryAfterMs` and not handled, and the socket stays open.
    pub frames_per_connection_per_s: u32,
    /// Frames a socket may send at once before [`LimitsConfig::frames_per_connection_per_s`] paces it.
    pub frames_burst: u32,
    /// History reads (`list_conversations`, `get_messages`, their REST forms) one caller may make per minute
    /// on every door and pod; each costs a page of backend reads.
    pub reads_per_user_per_minute: u64,
    /// What an org may spend on priced models per calendar month (UTC), in US dollars; once spent, new turns
    /// are refused with `QUOTA_EXCEEDED` (a running turn finishes). 0 = no limit.
    pub org_monthly_usd: f64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Sessions, logs and confirmations expire after this idle time in seconds.
    pub idle_ttl_s: u64,
    /// Conversations (record, messages, their place in the owner's list) are deleted after this many seconds
    /// without a new message; each message renews it.
    pub conversation_ttl_s: u64,
    /// Messages kept per conversation: past it the oldest go (history and paging keep counting from the first
    /// message ever), so a long-lived conversation costs a bounded amount of memory.
    pub conversation_max_messages: usize,
    /// A conversation that never gets a message is deleted after this many seconds (an abandoned page's
    /// session costs the backend an hour, not `conversation_ttl_s`).
    pub empty_conversation_ttl_s: u64,
    /// Conversations kept per user: past it the least recently used is deleted, so one caller creating
    /// sessions cannot grow the backend without bound.
    pub conversations_per_user: usize,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Seconds running turns may continue after SIGTERM before they end with `TURN_INTERRUPTED`.
    pub timeout_s: u64,
    /// Seconds between failing readiness and closing sockets (lets the load balancer notice).
    pub pre_stop_s: u64,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8787".into(),
            redis_url: String::new(),
            redis_key_prefix: "sb".into(),
            redis_tls_ca_file: String::new(),
            redis_wait_replicas: 0,
            redis_wait_timeout_ms: 1_000,
            keepalive_s: 30,
            log_format: LogFormat::Auto,
            llm: LlmConfig::default(),
            auth: AuthConfig::default(),
            turn: TurnConfig::default(),
            confirm: ConfirmConfig::default(),
            tools: ToolsConfig::default(),
            limits: LimitsConfig::default(),
            session: SessionConfig::default(),
            drain: DrainConfig::default(),
            http: HttpConfig::default(),
            interaction: InteractionConfig::default(),
            otp: OtpConfig::default(),
            knowledge: KnowledgeConfig::default(),
            widget: WidgetConfig::default(),
            mcp: McpConfig::default(),
            agents: Vec::new(),
        }
    }
}
impl Default for LlmConfig {
    fn default() -> Self {
        Self {
            base_url: String::new(),
            api_key: String::new(),
            model: "gpt-4o-mini".into(),
            timeout_s: 60,
            max_retries: 2,
            read_window_ms: None,
            continue_final_message: false,
            org_keys: Default::default(),
            org_key_values: Default::default(),
            prices: Default::default(),
        }
    }
}
impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: AuthMode::None,
            jwt_hs256_secret: String::new(),
            jwt_rs256_public_key: String::new(),
            publish_keys: Vec::new(),
            allow_anonymous: false,
            api_keys: Vec::new(),
            jwks_url: String::new(),
            jwt_issuer: String::new(),
            jwt_audience: String::new(),
            default_org: String::new(),
            resume_secret: String::new(),
        }
    }
}
impl Default for TurnConfig {
    fn default() -> Self {
        Self {
            max_iterations: 8,
            history_messages: 50,
            history_tokens: 16_000,
            summarize: false,
            lease_ms: 10_000,
            coalesce_ms: 50,
            max_tool_calls: 16,
            deadline_s: 300,
            max_per_pod: 1_000,
            takeover: true,
            max_takeovers: 2,
        }
    }
}
impl Default for ConfirmConfig {
    fn default() -> Self {
        Self { timeout_s: 300 }
    }
}
impl Default for ToolsConfig {
    fn default() -> Self {
        Self { timeout_ms: 10_000, max_output_bytes: 65_536, signing_secret: String::new() }
    }
}
impl Default for LimitsConfig {
    fn default() -> Self {
        Self {
            max_frame_bytes: 65_536,
            outbound_queue: 256,
            log_len: 1000,
            messages_per_minute: 60,
            sessions_per_connection: 100,
            messages_per_user_per_minute: 120,
            sockets_per_user: 50,
            connections_per_pod: 20_000,
            turns_per_user: 5,
            resume_replay_bytes: 1 << 20,
            replay_bytes_per_user_per_minute: 32 << 20,
            sessions_per_user_per_minute: 30,
            frames_per_connection_per_s: 20,
            frames_burst: 40,
            reads_per_user_per_minute: 120,
            org_monthly_usd: 0.0,
        }
    }
}
impl Default for SessionConfig {
    fn default() -> Self {
        Self {
            idle_ttl_s: 86_400,
            conversation_ttl_s: 30 * 86_400,
            conversation_max_messages: 1_000,
            empty_conversation_ttl_s: 3_600,
            conversations_per_user: 1_000,
        }
    }
}
impl Default for DrainConfig {
    fn default() -> Self {
        Self { timeout_s: 25, pre_stop_s: 5 }
    }
}

mod agent;
mod features;
mod load;
mod mcp;
mod modes;
mod redact;
mod validate;

pub use agent::{AgentConfig, ToolConfig};
pub use features::{InteractionConfig, KnowledgeConfig, KnowledgeDocument, OtpConfig, OtpDelivery, WidgetConfig};
pub use mcp::{McpConfig, McpServerConfig};
pub use modes::{AuthLevel, AuthMode, InteractionKind, LogFormat, OtpDeliveryMode, Visibility};

impl Config {
    /// The model connection's read window ([`LlmConfig::read_window_ms`], else `turn.coalesce_ms`).
    pub fn read_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.llm.read_window_ms.unwrap_or(self.turn.coalesce_ms))
    }
}
