//! Typed configuration: defaults → TOML file → `SWITCHBOARD_*` environment, validated at boot.
//!
//! Every key of DESIGN §4 lives here with its default. Errors name the key (or the environment variable) so a
//! bad deploy fails loudly at start instead of misbehaving later.

use std::collections::HashSet;
use std::net::SocketAddr;

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

fn invalid(key: &str, message: impl Into<String>) -> ConfigError {
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
    /// Seconds of outbound silence after which a `keepalive` frame is sent.
    pub keepalive_s: u64,
    /// `json` (production), `pretty` (local), or `auto` (pretty on a terminal, JSON otherwise).
    pub log_format: String,
    pub llm: LlmConfig,
    pub auth: AuthConfig,
    pub turn: TurnConfig,
    pub confirm: ConfirmConfig,
    pub tools: ToolsConfig,
    pub limits: LimitsConfig,
    pub session: SessionConfig,
    pub drain: DrainConfig,
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
}

/// Who a connection is.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuthConfig {
    /// `none` (everyone is one anonymous user in org `default`; local use only) or `jwt`.
    pub mode: String,
    /// HS256 secret for `jwt` mode (secret).
    pub jwt_hs256_secret: String,
    /// RS256 public key (PEM) for `jwt` mode.
    pub jwt_rs256_public_key: String,
    /// Bearer keys accepted by `POST /admin/publish` and `/admin/*` (secret). Empty = those endpoints answer 401.
    pub publish_keys: Vec<String>,
}

/// Bounds of one agent turn.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TurnConfig {
    /// Model calls per turn before the turn ends with `AGENT_ERROR`.
    pub max_iterations: u32,
    /// Conversation messages replayed to the model.
    pub history_messages: usize,
    /// Turn lease in milliseconds: renewed while a turn runs; a dead pod's turn is ended after it lapses.
    pub lease_ms: u64,
    /// Milliseconds a turn's streamed events may wait to be logged and published together (0: each as soon
    /// as the previous append returns). Every event stays its own frame with its own `seq`; only the Redis
    /// append and the pub/sub message are shared. The first event of a turn and its terminal event never
    /// wait. A model streaming a token every few ms costs one Redis call per window instead of per token.
    pub coalesce_ms: u64,
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
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SessionConfig {
    /// Sessions, logs and confirmations expire after this idle time in seconds.
    pub idle_ttl_s: u64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DrainConfig {
    /// Seconds running turns may continue after SIGTERM before they end with `TURN_INTERRUPTED`.
    pub timeout_s: u64,
    /// Seconds between failing readiness and closing sockets (lets the load balancer notice).
    pub pre_stop_s: u64,
}

/// One agent: a system prompt, its tools and which of them need a human's approval.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    pub id: String,
    pub name: String,
    #[serde(default)]
    pub system_prompt: String,
    /// Glob patterns (`*`, `?`); a matching tool call parks the turn for approval.
    #[serde(default)]
    pub confirm_tools: Vec<String>,
    /// Models a client may pick per turn with `send_message.model`.
    #[serde(default)]
    pub models: Vec<String>,
    #[serde(default)]
    pub tools: Vec<ToolConfig>,
}

/// An HTTP webhook tool owned by the host application.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ToolConfig {
    pub name: String,
    #[serde(default)]
    pub description: String,
    /// JSON Schema of the arguments, given to the model as is.
    #[serde(default = "default_parameters")]
    pub parameters: serde_json::Value,
    pub url: String,
}

fn default_parameters() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}

impl Default for Config {
    fn default() -> Self {
        Self {
            bind: "127.0.0.1:8787".into(),
            redis_url: String::new(),
            redis_key_prefix: "sb".into(),
            keepalive_s: 30,
            log_format: "auto".into(),
            llm: LlmConfig::default(),
            auth: AuthConfig::default(),
            turn: TurnConfig::default(),
            confirm: ConfirmConfig::default(),
            tools: ToolsConfig::default(),
            limits: LimitsConfig::default(),
            session: SessionConfig::default(),
            drain: DrainConfig::default(),
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
        }
    }
}
impl Default for AuthConfig {
    fn default() -> Self {
        Self {
            mode: "none".into(),
            jwt_hs256_secret: String::new(),
            jwt_rs256_public_key: String::new(),
            publish_keys: Vec::new(),
        }
    }
}
impl Default for TurnConfig {
    fn default() -> Self {
        Self { max_iterations: 8, history_messages: 50, lease_ms: 10_000, coalesce_ms: 50 }
    }
}
impl Default for ConfirmConfig {
    fn default() -> Self {
        Self { timeout_s: 300 }
    }
}
impl Default for ToolsConfig {
    fn default() -> Self {
        Self { timeout_ms: 10_000, max_output_bytes: 65_536 }
    }
}
impl Default for LimitsConfig {
    fn default() -> Self {
        Self { max_frame_bytes: 65_536, outbound_queue: 256, log_len: 1000, messages_per_minute: 60 }
    }
}
impl Default for SessionConfig {
    fn default() -> Self {
        Self { idle_ttl_s: 86_400 }
    }
}
impl Default for DrainConfig {
    fn default() -> Self {
        Self { timeout_s: 25, pre_stop_s: 5 }
    }
}

const ENV_PREFIX: &str = "SWITCHBOARD_";

impl Config {
    /// The model connection's read window ([`LlmConfig::read_window_ms`], else `turn.coalesce_ms`).
    pub fn read_window(&self) -> std::time::Duration {
        std::time::Duration::from_millis(self.llm.read_window_ms.unwrap_or(self.turn.coalesce_ms))
    }

    /// Loads defaults, then the file (if any), then the given environment variables, and validates.
    /// The environment is passed in (not read here) so tests never need `std::env::set_var`.
    pub fn load<I>(file: Option<&str>, env: I) -> Result<Config, ConfigError>
    where
        I: IntoIterator<Item = (String, String)>,
    {
        let mut tree = toml::Value::try_from(Config::default()).map_err(|e| invalid("(defaults)", e.to_string()))?;
        if let Some(path) = file {
            let text =
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read { path: path.to_string(), source })?;
            let file_tree: toml::Value = text
                .parse::<toml::Table>()
                .map(toml::Value::Table)
                .map_err(|e| ConfigError::Syntax { path: path.to_string(), message: e.to_string() })?;
            merge(&mut tree, file_tree);
        }
        let defaults = toml::Value::try_from(Config::default()).map_err(|e| invalid("(defaults)", e.to_string()))?;
        let mut vars: Vec<(String, String)> =
            env.into_iter().filter(|(k, _)| k.starts_with(ENV_PREFIX) && !is_service_link(k)).collect();
        vars.sort();
        for (var, value) in vars {
            apply_env(&mut tree, &defaults, &var, &value)?;
        }
        let config: Config = serde_path_to_error::deserialize(tree).map_err(|e| {
            let key = e.path().to_string();
            invalid(&key, e.into_inner().to_string())
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Checks every cross-field rule. Each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind.parse::<SocketAddr>().map_err(|e| invalid("bind", format!("not a socket address: {e}")))?;
        if !self.redis_url.is_empty() {
            crate::backend::redis::url::RedisTarget::parse(&self.redis_url).map_err(|m| invalid("redis_url", m))?;
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(['{', '}', ' ']) {
            return Err(invalid("redis_key_prefix", "must be non-empty without braces or spaces"));
        }
        if !self.llm.base_url.is_empty() {
            let u = reqwest::Url::parse(&self.llm.base_url)
                .map_err(|e| invalid("llm.base_url", format!("not a URL: {e}")))?;
            if !matches!(u.scheme(), "http" | "https") {
                return Err(invalid("llm.base_url", "must be http:// or https://"));
            }
        }
        if self.llm.model.is_empty() {
            return Err(invalid("llm.model", "must not be empty"));
        }
        positive("llm.timeout_s", self.llm.timeout_s)?;
        match self.auth.mode.as_str() {
            "none" => {}
            "jwt" => {
                if self.auth.jwt_hs256_secret.is_empty() && self.auth.jwt_rs256_public_key.is_empty() {
                    return Err(invalid("auth.mode", "`jwt` needs auth.jwt_hs256_secret or auth.jwt_rs256_public_key"));
                }
                if !self.auth.jwt_rs256_public_key.is_empty() {
                    jsonwebtoken::DecodingKey::from_rsa_pem(self.auth.jwt_rs256_public_key.as_bytes())
                        .map_err(|e| invalid("auth.jwt_rs256_public_key", format!("not an RSA public key PEM: {e}")))?;
                }
            }
            other => return Err(invalid("auth.mode", format!("`{other}` is not one of: none, jwt"))),
        }
        if self.auth.publish_keys.iter().any(|k| k.len() < 16) {
            return Err(invalid("auth.publish_keys", "every key must be at least 16 characters"));
        }
        positive("turn.max_iterations", self.turn.max_iterations as u64)?;
        positive("turn.history_messages", self.turn.history_messages as u64)?;
        if self.turn.lease_ms < 1000 {
            return Err(invalid("turn.lease_ms", "must be at least 1000"));
        }
        if self.turn.coalesce_ms > 1000 {
            return Err(invalid("turn.coalesce_ms", "must be at most 1000"));
        }
        if self.llm.read_window_ms.is_some_and(|ms| ms > 1000) {
            return Err(invalid("llm.read_window_ms", "must be at most 1000"));
        }
        positive("confirm.timeout_s", self.confirm.timeout_s)?;
        positive("tools.timeout_ms", self.tools.timeout_ms)?;
        positive("tools.max_output_bytes", self.tools.max_output_bytes as u64)?;
        if self.limits.max_frame_bytes < 1024 {
            return Err(invalid("limits.max_frame_bytes", "must be at least 1024"));
        }
        if self.limits.outbound_queue < 8 {
            return Err(invalid("limits.outbound_queue", "must be at least 8"));
        }
        positive("limits.log_len", self.limits.log_len as u64)?;
        positive("limits.messages_per_minute", self.limits.messages_per_minute as u64)?;
        positive("session.idle_ttl_s", self.session.idle_ttl_s)?;
        if self.confirm.timeout_s > self.session.idle_ttl_s {
            return Err(invalid("confirm.timeout_s", "must not exceed session.idle_ttl_s"));
        }
        positive("keepalive_s", self.keepalive_s)?;
        if !matches!(self.log_format.as_str(), "auto" | "json" | "pretty") {
            return Err(invalid("log_format", "must be one of: auto, json, pretty"));
        }
        let mut ids = HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let key = |f: &str| format!("agents[{i}].{f}");
            if agent.id.is_empty() || !ids.insert(agent.id.as_str()) {
                return Err(invalid(&key("id"), "must be non-empty and unique"));
            }
            if agent.name.is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if agent.confirm_tools.iter().any(|p| p.is_empty()) {
                return Err(invalid(&key("confirm_tools"), "patterns must not be empty"));
            }
            let mut names = HashSet::new();
            for (j, tool) in agent.tools.iter().enumerate() {
                let tkey = |f: &str| format!("agents[{i}].tools[{j}].{f}");
                let ok = !tool.name.is_empty()
                    && tool.name.len() <= 64
                    && tool.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
                if !ok || !names.insert(tool.name.as_str()) {
                    return Err(invalid(&tkey("name"), "must be unique, 1-64 chars of [A-Za-z0-9_-]"));
                }
                let u = reqwest::Url::parse(&tool.url).map_err(|e| invalid(&tkey("url"), format!("not a URL: {e}")))?;
                if !matches!(u.scheme(), "http" | "https") {
                    return Err(invalid(&tkey("url"), "must be http:// or https://"));
                }
                if !tool.parameters.is_object() {
                    return Err(invalid(&tkey("parameters"), "must be a JSON Schema object"));
                }
            }
        }
        Ok(())
    }

    /// The effective configuration with secrets replaced, for `check-config` and the startup log.
    pub fn redacted(&self) -> Config {
        let mut c = self.clone();
        let hide = |s: &mut String| {
            if !s.is_empty() {
                *s = "<redacted>".into();
            }
        };
        hide(&mut c.llm.api_key);
        hide(&mut c.auth.jwt_hs256_secret);
        for k in &mut c.auth.publish_keys {
            *k = "<redacted>".into();
        }
        if let Ok(mut u) = reqwest::Url::parse(&c.redis_url) {
            if u.password().is_some() {
                let _ = u.set_password(Some("redacted"));
                c.redis_url = u.to_string();
            }
        }
        c
    }

    pub fn bind_addr(&self) -> SocketAddr {
        // Validated in `validate`, so a parse failure here is a programming error; fall back safely anyway.
        self.bind.parse().unwrap_or_else(|_| SocketAddr::from(([127, 0, 0, 1], 8787)))
    }
}

fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}

/// Kubernetes injects `<SERVICE>_SERVICE_HOST`, `<SERVICE>_PORT_8787_TCP…` for every Service in the
/// namespace; for a Service named `switchboard…` those share our prefix. No config key has these shapes, so
/// they are skipped instead of failing the boot as unknown keys.
fn is_service_link(var: &str) -> bool {
    let rest = &var[ENV_PREFIX.len() - 1..]; // keep the leading '_' so "_PORT" matches at the start too
    rest.ends_with("_PORT")
        || rest.contains("_PORT_")
        || rest.contains("_SERVICE_HOST")
        || rest.contains("_SERVICE_PORT")
}

/// Deep-merges `over` into `base` (tables merge, everything else replaces).
fn merge(base: &mut toml::Value, over: toml::Value) {
    match (base, over) {
        (toml::Value::Table(b), toml::Value::Table(o)) => {
            for (k, v) in o {
                match b.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        b.insert(k, v);
                    }
                }
            }
        }
        (b, o) => *b = o,
    }
}

/// Keys that are unset by default (so the defaults tree does not show their type) and take an integer.
const OPTIONAL_INTEGER_KEYS: &[&str] = &["llm.read_window_ms"];

/// Sets one `SWITCHBOARD_A__B` variable into the tree, typed after the default value at that path.
fn apply_env(tree: &mut toml::Value, defaults: &toml::Value, var: &str, raw: &str) -> Result<(), ConfigError> {
    let env_err = |m: String| ConfigError::Env { var: var.to_string(), message: m };
    let path: Vec<String> = var[ENV_PREFIX.len()..].split("__").map(|s| s.to_ascii_lowercase()).collect();
    if path == ["agents"] {
        let agents: Vec<AgentConfig> =
            serde_json::from_str(raw).map_err(|e| env_err(format!("not a JSON array of agents: {e}")))?;
        let v = toml::Value::try_from(agents).map_err(|e| env_err(e.to_string()))?;
        if let toml::Value::Table(t) = tree {
            t.insert("agents".into(), v);
        }
        return Ok(());
    }
    let mut default = defaults;
    let optional_integer = toml::Value::Integer(0);
    for seg in &path {
        default = match default.get(seg) {
            Some(d) => d,
            // Unset by default, so absent from the defaults tree, but an integer when set.
            None if OPTIONAL_INTEGER_KEYS.contains(&path.join(".").as_str()) => &optional_integer,
            None => return Err(env_err(format!("unknown key `{}`", path.join(".")))),
        };
    }
    let value = match default {
        toml::Value::String(_) => toml::Value::String(raw.to_string()),
        toml::Value::Integer(_) => {
            toml::Value::Integer(raw.trim().parse::<i64>().map_err(|_| env_err(format!("`{raw}` is not an integer")))?)
        }
        toml::Value::Boolean(_) => toml::Value::Boolean(
            raw.trim().parse::<bool>().map_err(|_| env_err(format!("`{raw}` is not true or false")))?,
        ),
        toml::Value::Array(_) => toml::Value::Array(
            raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
        ),
        _ => return Err(env_err(format!("`{}` is a section, set its keys instead", path.join(".")))),
    };
    let mut node = tree;
    for seg in &path[..path.len() - 1] {
        node = node.get_mut(seg).ok_or_else(|| env_err(format!("unknown key `{}`", path.join("."))))?;
    }
    if let toml::Value::Table(t) = node {
        t.insert(path[path.len() - 1].clone(), value);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn defaults_are_valid_and_match_the_design_table() {
        let c = Config::load(None, env(&[])).expect("defaults load");
        assert_eq!(c.bind, "127.0.0.1:8787");
        assert_eq!(c.llm.model, "gpt-4o-mini");
        assert_eq!((c.llm.timeout_s, c.llm.max_retries), (60, 2));
        assert_eq!((c.turn.max_iterations, c.turn.history_messages, c.turn.lease_ms), (8, 50, 10_000));
        assert_eq!(c.turn.coalesce_ms, 50);
        assert_eq!(c.confirm.timeout_s, 300);
        assert_eq!((c.tools.timeout_ms, c.tools.max_output_bytes), (10_000, 65_536));
        assert_eq!(
            (c.limits.max_frame_bytes, c.limits.outbound_queue, c.limits.log_len, c.limits.messages_per_minute),
            (65_536, 256, 1000, 60)
        );
        assert_eq!(c.session.idle_ttl_s, 86_400);
        assert_eq!((c.drain.timeout_s, c.drain.pre_stop_s), (25, 5));
        assert_eq!(c.keepalive_s, 30);
    }

    #[test]
    fn read_window_follows_coalescing_unless_set() {
        let c = Config::load(None, env(&[("SWITCHBOARD_TURN__COALESCE_MS", "20")])).expect("load");
        assert_eq!(c.read_window().as_millis(), 20);
        let c = Config::load(None, env(&[("SWITCHBOARD_LLM__READ_WINDOW_MS", "0")])).expect("load");
        assert_eq!((c.read_window().as_millis(), c.turn.coalesce_ms), (0, 50));
        let e = Config::load(None, env(&[("SWITCHBOARD_LLM__READ_WINDOW_MS", "5000")])).unwrap_err().to_string();
        assert!(e.contains("llm.read_window_ms"), "{e}");
    }

    #[test]
    fn env_overrides_file_overrides_defaults() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[llm]\nmodel = \"from-file\"\ntimeout_s = 5\n[auth]\npublish_keys = [\"aaaaaaaaaaaaaaaa\"]\n",
        )
        .expect("write");
        let c = Config::load(
            path.to_str(),
            env(&[
                ("SWITCHBOARD_LLM__MODEL", "from-env"),
                ("SWITCHBOARD_AUTH__PUBLISH_KEYS", "bbbbbbbbbbbbbbbb, cccccccccccccccc"),
                ("OTHER_VAR", "ignored"),
            ]),
        )
        .expect("load");
        assert_eq!(c.llm.model, "from-env");
        assert_eq!(c.llm.timeout_s, 5);
        assert_eq!(c.auth.publish_keys, vec!["bbbbbbbbbbbbbbbb", "cccccccccccccccc"]);
    }

    #[test]
    fn errors_name_the_key() {
        let e = Config::load(None, env(&[("SWITCHBOARD_TURN__LEASE_MS", "abc")])).unwrap_err().to_string();
        assert!(e.contains("SWITCHBOARD_TURN__LEASE_MS"), "{e}");
        // Kubernetes service links for a Service named `switchboard` are not config keys and are skipped.
        let links = [
            ("SWITCHBOARD_PORT", "tcp://10.0.0.1:8787"),
            ("SWITCHBOARD_PORT_8787_TCP_ADDR", "10.0.0.1"),
            ("SWITCHBOARD_SERVICE_HOST", "10.0.0.1"),
            ("SWITCHBOARD_SERVICE_PORT_HTTP", "8787"),
            ("SWITCHBOARD_REDIS_SERVICE_HOST", "10.0.0.2"),
            ("SWITCHBOARD_REDIS_PORT", "tcp://10.0.0.2:6379"),
        ];
        Config::load(None, env(&links)).expect("service links are ignored");
        let e = Config::load(None, env(&[("SWITCHBOARD_NOPE", "1")])).unwrap_err().to_string();
        assert!(e.contains("nope"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_AUTH__MODE", "jwt")])).unwrap_err().to_string();
        assert!(e.contains("auth.mode"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_REDIS_URL", "http://x")])).unwrap_err().to_string();
        assert!(e.contains("redis_url"), "{e}");
        let e = Config::load(None, env(&[("SWITCHBOARD_TURN__COALESCE_MS", "5000")])).unwrap_err().to_string();
        assert!(e.contains("turn.coalesce_ms"), "{e}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "[llm]\ntimeout_s = \"soon\"\n").expect("write");
        let e = Config::load(path.to_str(), env(&[])).unwrap_err().to_string();
        assert!(e.contains("llm.timeout_s"), "{e}");
        std::fs::write(&path, "[limits]\nmax_frame = 1\n").expect("write");
        let e = Config::load(path.to_str(), env(&[])).unwrap_err().to_string();
        assert!(e.contains("max_frame"), "{e}");
    }

    #[test]
    fn agents_from_json_env_and_tool_validation() {
        let agents = r#"[{"id":"a1","name":"A","tools":[{"name":"t","url":"http://x/t"}]}]"#;
        let c = Config::load(None, env(&[("SWITCHBOARD_AGENTS", agents)])).expect("load");
        assert_eq!(c.agents[0].tools[0].name, "t");
        let bad = r#"[{"id":"a1","name":"A","tools":[{"name":"bad name","url":"http://x/t"}]}]"#;
        let e = Config::load(None, env(&[("SWITCHBOARD_AGENTS", bad)])).unwrap_err().to_string();
        assert!(e.contains("agents[0].tools[0].name"), "{e}");
    }

    #[test]
    fn redaction_hides_secrets() {
        let mut c = Config::default();
        c.llm.api_key = "sk-secret".into();
        c.auth.publish_keys = vec!["pppppppppppppppp".into()];
        c.redis_url = "redis://:hunter2@localhost:6379".into();
        let text = toml::to_string(&c.redacted()).expect("toml");
        assert!(!text.contains("sk-secret") && !text.contains("pppp") && !text.contains("hunter2"), "{text}");
    }
}
