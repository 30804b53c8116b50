//! The cross-field rules, checked after loading. Each error names the key.

use std::collections::HashSet;
use std::net::SocketAddr;

use super::{invalid, AuthMode, Config, ConfigError};

impl Config {
    /// Checks every cross-field rule. Each error names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.bind.parse::<SocketAddr>().map_err(|e| invalid("bind", format!("not a socket address: {e}")))?;
        self.validate_features()?;
        if !self.redis_url.is_empty() {
            let target =
                crate::backend::redis::url::RedisTarget::parse(&self.redis_url).map_err(|m| invalid("redis_url", m))?;
            if !self.redis_tls_ca_file.is_empty() {
                // Read here, not only when connecting, so `check-config` refuses what `serve` refuses.
                let pem = std::fs::read_to_string(&self.redis_tls_ca_file)
                    .map_err(|e| invalid("redis_tls_ca_file", format!("{}: {e}", self.redis_tls_ca_file)))?;
                if !pem.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(invalid("redis_tls_ca_file", "holds no PEM certificate"));
                }
                if !target.is_tls() {
                    return Err(invalid("redis_tls_ca_file", "is only for a rediss:// URL"));
                }
            }
        }
        if self.redis_wait_replicas > 0 {
            if self.redis_url.is_empty() {
                return Err(invalid("redis_wait_replicas", "needs redis_url (the memory backend has no replicas)"));
            }
            // The pod's command timeout is 10 s; a WAIT must end well before fred gives up on it.
            if !(1..=60_000).contains(&self.redis_wait_timeout_ms) {
                return Err(invalid("redis_wait_timeout_ms", "must be 1..=60000 when redis_wait_replicas is set"));
            }
        }
        if self.redis_key_prefix.is_empty() || self.redis_key_prefix.contains(['{', '}', ' ']) {
            return Err(invalid("redis_key_prefix", "must be non-empty without braces or spaces"));
        }
        if !self.llm.base_url.is_empty() {
            http_url("llm.base_url", &self.llm.base_url)?;
        }
        if self.llm.model.is_empty() {
            return Err(invalid("llm.model", "must not be empty"));
        }
        positive("llm.timeout_s", self.llm.timeout_s)?;
        match self.auth.mode {
            AuthMode::None => {
                let loopback = self.bind_is_loopback();
                if !loopback && !self.auth.allow_anonymous {
                    return Err(invalid(
                        "auth.allow_anonymous",
                        format!(
                            "auth.mode = \"none\" on {}: anyone who reaches it is one anonymous user; use \
                             auth.mode = \"jwt\" (or API keys), bind to 127.0.0.1, or set auth.allow_anonymous = true",
                            self.bind
                        ),
                    ));
                }
            }
            AuthMode::Jwt => {
                let a = &self.auth;
                if a.jwt_hs256_secret.is_empty() && a.jwt_rs256_public_key.is_empty() && a.jwks_url.is_empty() {
                    return Err(invalid(
                        "auth.mode",
                        "`jwt` needs auth.jwt_hs256_secret, auth.jwt_rs256_public_key or auth.jwks_url",
                    ));
                }
                if !a.jwt_hs256_secret.is_empty() && a.jwt_hs256_secret.len() < 32 {
                    return Err(invalid("auth.jwt_hs256_secret", "must be at least 32 bytes (RFC 7518 section 3.2)"));
                }
                if !a.jwks_url.is_empty() {
                    let u = reqwest::Url::parse(&a.jwks_url).map_err(|e| invalid("auth.jwks_url", e.to_string()))?;
                    if !matches!(u.scheme(), "http" | "https") {
                        return Err(invalid("auth.jwks_url", "must be http:// or https://"));
                    }
                }
                if !self.auth.jwt_rs256_public_key.is_empty() {
                    jsonwebtoken::DecodingKey::from_rsa_pem(self.auth.jwt_rs256_public_key.as_bytes())
                        .map_err(|e| invalid("auth.jwt_rs256_public_key", format!("not an RSA public key PEM: {e}")))?;
                }
            }
        }
        let mut names = HashSet::new();
        for k in &self.auth.api_keys {
            let ok_name = !k.name.is_empty()
                && k.name.len() <= 64
                && k.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-');
            if !ok_name {
                return Err(invalid("auth.api_keys.name", format!("`{}`: 1-64 of A-Z a-z 0-9 _ -", k.name)));
            }
            if !names.insert(k.env_var()) {
                return Err(invalid("auth.api_keys.name", format!("`{}` is given twice", k.name)));
            }
            if k.org.is_empty() {
                return Err(invalid("auth.api_keys.org", format!("key `{}` needs an org", k.name)));
            }
            if k.key.len() < 16 {
                return Err(invalid("auth.api_keys", format!("{} must hold at least 16 characters", k.env_var())));
            }
        }
        if !self.tools.signing_secret.is_empty() && self.tools.signing_secret.len() < 32 {
            return Err(invalid("tools.signing_secret", "must be at least 32 bytes (or empty: unsigned calls)"));
        }
        if self.http.max_body_bytes < 1024 {
            return Err(invalid("http.max_body_bytes", "must be at least 1024"));
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
        positive("session.conversation_ttl_s", self.session.conversation_ttl_s)?;
        positive("session.conversation_max_messages", self.session.conversation_max_messages as u64)?;
        positive("turn.max_tool_calls", self.turn.max_tool_calls as u64)?;
        positive("limits.turns_per_user", self.limits.turns_per_user)?;
        positive("turn.deadline_s", self.turn.deadline_s)?;
        positive("turn.max_per_pod", self.turn.max_per_pod as u64)?;
        positive("limits.log_len", self.limits.log_len as u64)?;
        positive("limits.messages_per_minute", self.limits.messages_per_minute as u64)?;
        positive("limits.sessions_per_connection", self.limits.sessions_per_connection as u64)?;
        positive("limits.messages_per_user_per_minute", self.limits.messages_per_user_per_minute)?;
        positive("limits.sockets_per_user", self.limits.sockets_per_user as u64)?;
        positive("limits.sessions_per_user_per_minute", self.limits.sessions_per_user_per_minute)?;
        positive("limits.frames_per_connection_per_s", self.limits.frames_per_connection_per_s as u64)?;
        if self.limits.frames_burst < self.limits.frames_per_connection_per_s {
            return Err(invalid("limits.frames_burst", "must be at least limits.frames_per_connection_per_s"));
        }
        positive("limits.reads_per_user_per_minute", self.limits.reads_per_user_per_minute)?;
        if !(self.limits.org_monthly_usd.is_finite() && self.limits.org_monthly_usd >= 0.0) {
            return Err(invalid("limits.org_monthly_usd", "must be a number of dollars, 0 or more"));
        }
        for (model, p) in &self.llm.prices {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            if !ok(p.input_usd_per_mtok) || !ok(p.output_usd_per_mtok) {
                return Err(invalid(
                    &format!("llm.prices.\"{model}\""),
                    "prices must be dollars per million tokens, 0 or more",
                ));
            }
        }
        positive("session.empty_conversation_ttl_s", self.session.empty_conversation_ttl_s)?;
        positive("session.conversations_per_user", self.session.conversations_per_user as u64)?;
        if !self.auth.resume_secret.is_empty() && self.auth.resume_secret.len() < 32 {
            return Err(invalid("auth.resume_secret", "must be at least 32 bytes"));
        }
        for (i, proxy) in self.http.trusted_proxies.iter().enumerate() {
            if crate::client_addr::parse_proxy(proxy).is_none() {
                return Err(invalid(
                    &format!("http.trusted_proxies[{i}]"),
                    "must be an IP address or network (10.0.0.0/8)",
                ));
            }
        }
        if self.limits.resume_replay_bytes < 65_536 {
            return Err(invalid("limits.resume_replay_bytes", "must be at least 65536"));
        }
        if self.limits.replay_bytes_per_user_per_minute < self.limits.resume_replay_bytes {
            // Else a full replay could never be taken, however long the client waits.
            return Err(invalid(
                "limits.replay_bytes_per_user_per_minute",
                "must be at least limits.resume_replay_bytes",
            ));
        }
        positive("session.idle_ttl_s", self.session.idle_ttl_s)?;
        if self.confirm.timeout_s > self.session.idle_ttl_s {
            return Err(invalid("confirm.timeout_s", "must not exceed session.idle_ttl_s"));
        }
        positive("keepalive_s", self.keepalive_s)?;
        positive("limits.connections_per_pod", self.limits.connections_per_pod as u64)?;
        if !(100..=300_000).contains(&self.http.header_read_timeout_ms) {
            return Err(invalid("http.header_read_timeout_ms", "must be 100..=300000"));
        }
        if self.http.idle_timeout_ms < 1_000 {
            return Err(invalid("http.idle_timeout_ms", "must be at least 1000"));
        }
        self.mcp.validate()?;
        let mut ids = HashSet::new();
        for (i, agent) in self.agents.iter().enumerate() {
            let key = |f: &str| format!("agents[{i}].{f}");
            if agent.id.is_empty() || !ids.insert(agent.id.as_str()) {
                return Err(invalid(&key("id"), "must be non-empty and unique"));
            }
            if agent.name.is_empty() {
                return Err(invalid(&key("name"), "must not be empty"));
            }
            if agent.org.is_empty() {
                return Err(invalid(&key("org"), "must not be empty"));
            }
            if let Some(name) = agent.mcp_servers.iter().find(|n| self.mcp.server(n).is_none()) {
                return Err(invalid(&key("mcp_servers"), format!("names `{name}`, which is not in mcp.servers")));
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
                http_url(&tkey("url"), &tool.url)?;
                if !tool.parameters.is_object() {
                    return Err(invalid(&tkey("parameters"), "must be a JSON Schema object"));
                }
            }
        }
        Ok(())
    }
}

/// `url` parses and is http(s); the error names `key`.
pub(super) fn http_url(key: &str, url: &str) -> Result<(), ConfigError> {
    let u = reqwest::Url::parse(url).map_err(|e| invalid(key, format!("not a URL: {e}")))?;
    if !matches!(u.scheme(), "http" | "https") {
        return Err(invalid(key, "must be http:// or https://"));
    }
    Ok(())
}

pub(super) fn positive(key: &str, v: u64) -> Result<(), ConfigError> {
    if v == 0 {
        Err(invalid(key, "must be greater than 0"))
    } else {
        Ok(())
    }
}
