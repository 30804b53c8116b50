//! Configuration of the seed-protocol features (README, "Interactions, the OTP gate and knowledge"): rich
//! interactions, the OTP gate and knowledge. Their cross-field rules are checked in
//! [`Config::validate_features`].

use serde::{Deserialize, Serialize};

use super::validate::{http_url, positive};
use super::{invalid, AuthMode, Config, ConfigError, OtpDeliveryMode};

/// The browser widget.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WidgetConfig {
    /// Serve the demo page at `GET /` (`/widget.js` is always served). Unset = on in the in-memory default
    /// (no `redis_url`), off in the scaled service.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

impl Config {
    /// Whether `/` serves the demo page. Unset: only the embedded demo (no `redis_url`) with anonymous auth; with
    /// `auth.mode = "jwt"` a page whose widget has no token could never connect.
    pub fn widget_page(&self) -> bool {
        self.widget.enabled.unwrap_or(self.redis_url.is_empty() && self.auth.mode == AuthMode::None)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct InteractionConfig {
    /// Seconds a raised interaction card may stay unanswered; then the raise tool answers "no response" and the
    /// turn goes on.
    pub timeout_s: u64,
}

impl Default for InteractionConfig {
    fn default() -> Self {
        Self { timeout_s: 300 }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OtpConfig {
    /// How codes reach the person: `webhook` (POST to `otp.delivery_url`), `log` (the code is written to the
    /// server log: local demos only, refused with `auth.mode = "jwt"`), or `auto` (webhook when a URL is set,
    /// else log with anonymous auth, else none: gated tools are refused with `OTP_SEND_FAILED`).
    pub delivery: OtpDeliveryMode,
    /// The host's delivery endpoint: `POST {sessionId, channel, destination, code, expiresAt}` with an
    /// `Idempotency-Key` header; any 2xx is delivered.
    pub delivery_url: String,
    /// Digits per code.
    pub code_length: usize,
    /// Seconds a code is valid (and the gated call waits).
    pub ttl_s: u64,
    /// Wrong codes before the code is locked and the gated call refused.
    pub max_attempts: u32,
    /// `verify_otp` frames per session per minute, across pods; more get `RATE_LIMITED`.
    pub verify_per_minute: u64,
    /// Delivery webhook timeout in milliseconds.
    pub timeout_ms: u64,
}

impl Default for OtpConfig {
    fn default() -> Self {
        Self {
            delivery: OtpDeliveryMode::Auto,
            delivery_url: String::new(),
            code_length: 6,
            ttl_s: 300,
            max_attempts: 3,
            verify_per_minute: 10,
            timeout_ms: 5_000,
        }
    }
}

/// How OTP codes are delivered, resolved from `otp.delivery` and the auth mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OtpDelivery {
    Webhook(String),
    Log,
    /// Nowhere to send a code: a gated tool is refused.
    Disabled,
}

impl Config {
    /// Whether `bind` is a loopback address (only this machine can connect).
    pub(crate) fn bind_is_loopback(&self) -> bool {
        self.bind.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback())
    }

    pub fn otp_delivery(&self) -> OtpDelivery {
        match self.otp.delivery {
            OtpDeliveryMode::Webhook => OtpDelivery::Webhook(self.otp.delivery_url.clone()),
            OtpDeliveryMode::Log => OtpDelivery::Log,
            OtpDeliveryMode::Auto if !self.otp.delivery_url.is_empty() => {
                OtpDelivery::Webhook(self.otp.delivery_url.clone())
            }
            OtpDeliveryMode::Auto if self.auth.mode == AuthMode::None && self.bind_is_loopback() => OtpDelivery::Log,
            OtpDeliveryMode::Auto => OtpDelivery::Disabled,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct KnowledgeConfig {
    /// Documents given in the file (`[[knowledge.documents]] id, title, url?, content, sets?`).
    pub documents: Vec<KnowledgeDocument>,
    /// A directory whose files are indexed at boot (id and title = the path under it); e.g. a ConfigMap mount.
    pub dir: String,
    /// The knowledge set of the files under `knowledge.dir` (an agent's `knowledge_sets` selects sets).
    pub dir_set: String,
    /// A host's search endpoint instead of the built-in index: `POST {query, k, orgId, agentId}` →
    /// `{results: [{id, title, url?, snippet, score}]}`.
    pub search_url: String,
    /// Passages given to the model as context before each turn (and returned by `knowledge_search`).
    pub top_k: usize,
    /// Retrieval webhook timeout in milliseconds; a slow or failing webhook means no context, not a failed turn.
    pub timeout_ms: u64,
    /// Largest document (file or `content`) indexed; a larger one fails the boot, naming it.
    pub max_document_bytes: u64,
    /// Built-in index: a passage scoring below this (BM25) is not a match. BM25 grows with the corpus (a
    /// good hit scores ~1.5 in the two-document demo, more in a large one), so it is off (0) by default: set it
    /// after looking at your corpus's scores. A passage that matches only numbers of the message never counts.
    pub min_score: f64,
    /// Built-in index: a passage scoring below this fraction of the best hit's score is left out (only the
    /// passages that answer about as well as the best one are given to the model and cited). 0 = keep all.
    pub min_relative_score: f64,
}

impl Default for KnowledgeConfig {
    fn default() -> Self {
        Self {
            documents: Vec::new(),
            dir: String::new(),
            dir_set: "default".into(),
            search_url: String::new(),
            top_k: 3,
            timeout_ms: 2_000,
            max_document_bytes: 2 * 1024 * 1024,
            min_score: 0.0,
            min_relative_score: 0.4,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KnowledgeDocument {
    pub id: String,
    pub title: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    pub content: String,
    /// The sets this document belongs to (agents pick sets with `knowledge_sets`); empty = `default`.
    #[serde(default)]
    pub sets: Vec<String>,
}

impl Config {
    /// The rules of interactions, the OTP gate and knowledge. Each error names the key.
    pub(super) fn validate_features(&self) -> Result<(), ConfigError> {
        positive("interaction.timeout_s", self.interaction.timeout_s)?;
        let otp = &self.otp;
        if otp.delivery == OtpDeliveryMode::Log && (self.auth.mode == AuthMode::Jwt || !self.bind_is_loopback()) {
            return Err(invalid(
                "otp.delivery",
                "`log` writes codes to the server log: for local demos only (a loopback bind), never with \
                 auth.mode = \"jwt\"",
            ));
        }
        if otp.delivery == OtpDeliveryMode::Webhook && otp.delivery_url.is_empty() {
            return Err(invalid("otp.delivery_url", "is required with otp.delivery = \"webhook\""));
        }
        if !otp.delivery_url.is_empty() {
            http_url("otp.delivery_url", &otp.delivery_url)?;
        }
        if !(4..=10).contains(&otp.code_length) {
            return Err(invalid("otp.code_length", "must be 4..=10 digits"));
        }
        positive("otp.ttl_s", otp.ttl_s)?;
        positive("otp.max_attempts", u64::from(otp.max_attempts))?;
        positive("otp.verify_per_minute", otp.verify_per_minute)?;
        positive("otp.timeout_ms", otp.timeout_ms)?;
        let k = &self.knowledge;
        if !k.search_url.is_empty() {
            http_url("knowledge.search_url", &k.search_url)?;
            if !k.documents.is_empty() || !k.dir.is_empty() {
                return Err(invalid(
                    "knowledge.search_url",
                    "a retrieval webhook replaces the built-in index: drop knowledge.documents and knowledge.dir",
                ));
            }
        }
        if !(1..=20).contains(&k.top_k) {
            return Err(invalid("knowledge.top_k", "must be 1..=20"));
        }
        positive("knowledge.timeout_ms", k.timeout_ms)?;
        positive("knowledge.max_document_bytes", k.max_document_bytes)?;
        if !(k.min_score >= 0.0 && k.min_score.is_finite()) {
            return Err(invalid("knowledge.min_score", "must be a number >= 0"));
        }
        if !(0.0..=1.0).contains(&k.min_relative_score) {
            return Err(invalid("knowledge.min_relative_score", "must be between 0 and 1"));
        }
        if k.dir_set.trim().is_empty() {
            return Err(invalid("knowledge.dir_set", "must not be empty"));
        }
        if let Some(bad) = self.http.allowed_origins.iter().find(|o| !crate::origin::origin_pattern_ok(o)) {
            return Err(invalid(
                "http.allowed_origins",
                format!("`{bad}`: expected `*`, an origin (`https://shop.example`) or `https://*.example.com`"),
            ));
        }
        let mut ids = std::collections::HashSet::new();
        for (i, d) in k.documents.iter().enumerate() {
            let key = |f: &str| format!("knowledge.documents[{i}].{f}");
            if d.id.is_empty() || !ids.insert(d.id.as_str()) {
                return Err(invalid(&key("id"), "must be non-empty and unique"));
            }
            if d.content.len() as u64 > k.max_document_bytes {
                return Err(invalid(&key("content"), "is larger than knowledge.max_document_bytes"));
            }
        }
        if !k.dir.is_empty() && !std::path::Path::new(&k.dir).is_dir() {
            return Err(invalid("knowledge.dir", format!("{}: not a directory", k.dir)));
        }
        for (i, agent) in self.agents.iter().enumerate() {
            if !agent.widget_secret.is_empty() && agent.widget_secret.len() < 32 {
                return Err(invalid(&format!("agents[{i}].widget_secret"), "must be at least 32 bytes"));
            }
            if let Some(bad) = agent.allowed_origins.iter().find(|o| !crate::origin::origin_pattern_ok(o)) {
                return Err(invalid(
                    &format!("agents[{i}].allowed_origins"),
                    format!("`{bad}`: expected `*`, an origin (`https://shop.example`) or `https://*.example.com`"),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refused(c: &Config) -> String {
        c.validate().expect_err("refused").to_string()
    }

    #[test]
    fn logged_codes_only_on_loopback() {
        let mut c = Config { bind: "0.0.0.0:8787".into(), ..Config::default() };
        c.auth.allow_anonymous = true;
        assert_eq!(c.otp_delivery(), OtpDelivery::Disabled, "auto never logs codes off loopback");
        c.otp.delivery = OtpDeliveryMode::Log;
        assert!(refused(&c).contains("otp.delivery"), "{}", refused(&c));
        c.bind = "127.0.0.1:8787".into();
        c.validate().expect("a local demo may log codes");
        assert_eq!(c.otp_delivery(), OtpDelivery::Log);
    }

    #[test]
    fn otp_and_knowledge_keys_are_checked_at_boot() {
        let mut c = Config::default();
        c.validate().expect("defaults are valid");
        assert!(c.widget_page(), "the embedded demo serves its page");
        assert_eq!(c.otp_delivery(), OtpDelivery::Log, "auto with anonymous auth logs codes (local demo)");
        c.auth.mode = AuthMode::Jwt;
        assert!(!c.widget_page(), "no demo page a visitor without a token could never use");
        c.widget.enabled = Some(true);
        assert!(c.widget_page(), "unless asked for");
        c.widget.enabled = None;
        c.auth.jwt_hs256_secret = "x".repeat(32);
        assert_eq!(c.otp_delivery(), OtpDelivery::Disabled, "auto never logs codes with real users");
        c.otp.delivery = OtpDeliveryMode::Log;
        assert!(refused(&c).contains("otp.delivery"), "{}", refused(&c));
        c.otp.delivery = OtpDeliveryMode::Webhook;
        assert!(refused(&c).contains("otp.delivery_url"));
        c.otp.delivery_url = "ftp://x".into();
        assert!(refused(&c).contains("otp.delivery_url"));
        c.otp.delivery_url = "https://hooks.example/otp".into();
        c.validate().expect("webhook delivery");
        assert_eq!(c.otp_delivery(), OtpDelivery::Webhook("https://hooks.example/otp".into()));
        c.otp.code_length = 3;
        assert!(refused(&c).contains("otp.code_length"));
        c.otp.code_length = 6;

        c.knowledge.documents = vec![KnowledgeDocument {
            id: "big".into(),
            title: "Big".into(),
            url: None,
            content: "x".repeat(10 * 1024 * 1024),
            sets: vec![],
        }];
        assert!(refused(&c).contains("knowledge.documents[0].content"), "{}", refused(&c));
        c.knowledge.documents.clear();
        c.knowledge.dir = "/nonexistent/knowledge".into();
        assert!(refused(&c).contains("knowledge.dir"));
        c.knowledge.dir.clear();
        c.knowledge.search_url = "http://search.internal/q".into();
        c.validate().expect("a retrieval webhook");
        c.knowledge.top_k = 0;
        assert!(refused(&c).contains("knowledge.top_k"));
    }
}
