//! HTTP webhook tools. `POST url` with `{"tool", "arguments", "sessionId", "toolCallId", "agentId", "files"?}`
//! and an `Idempotency-Key: <toolCallId>` header (a resumed turn may repeat a call whose pod died mid-call).
//! `200 {"result": <string|json>}` is a result; `{"error": "..."}`, non-2xx, timeout, bad JSON or a body over
//! `tools.max_output_bytes` become an error result for the model. A tool never fails the turn.

use std::time::Duration;

use serde_json::{json, Value};

use crate::config::{ToolConfig, ToolsConfig};
use crate::webhook::{http_failure, read_capped, BodyError};

/// URL of the demo agent's in-process tool (used only with the offline demo model).
pub(crate) const DEMO_TOOL_URL: &str = "builtin:demo";

/// What the model is told a tool returned.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct ToolOutcome {
    pub is_error: bool,
    pub result: String,
}

impl ToolOutcome {
    fn error(msg: impl Into<String>) -> Self {
        Self { is_error: true, result: msg.into() }
    }
}

pub(crate) struct ToolContext<'a> {
    pub session_id: &'a str,
    pub tool_call_id: &'a str,
    pub agent_id: &'a str,
    /// Whose turn it is, so the host can authorise the call.
    pub user_id: &'a str,
    pub org_id: &'a str,
    pub files: &'a [Value],
    /// For an `end_user` tool: the contact the session's person proved by OTP (`{email|phone, verified: true}`),
    /// which the host keys data on, never on model-chosen arguments. None: nothing verified.
    pub contact: Option<Value>,
}

pub(crate) struct ToolRunner {
    http: reqwest::Client,
    timeout: Duration,
    max_output: usize,
    /// HMAC key from `tools.signing_secret`; None = unsigned calls.
    signing_key: Option<ring::hmac::Key>,
}

impl ToolRunner {
    pub(crate) fn new(config: &ToolsConfig) -> Self {
        Self {
            http: reqwest::Client::builder().pool_idle_timeout(Duration::from_secs(60)).build().unwrap_or_default(),
            timeout: Duration::from_millis(config.timeout_ms),
            max_output: config.max_output_bytes,
            signing_key: (!config.signing_secret.is_empty())
                .then(|| ring::hmac::Key::new(ring::hmac::HMAC_SHA256, config.signing_secret.as_bytes())),
        }
    }

    pub(crate) async fn call(&self, tool: &ToolConfig, arguments: &str, ctx: ToolContext<'_>) -> ToolOutcome {
        if tool.url == DEMO_TOOL_URL && tool.name == crate::llm::demo::DEMO_GATED_TOOL_NAME {
            return ToolOutcome { is_error: false, result: "balance: $42.00 (demo account)".into() };
        }
        if tool.url == DEMO_TOOL_URL {
            let id = serde_json::from_str::<Value>(arguments)
                .ok()
                .and_then(|v| v.get("id").map(|i| i.as_str().map(str::to_string).unwrap_or_else(|| i.to_string())))
                .unwrap_or_else(|| "?".into());
            return ToolOutcome {
                is_error: false,
                result: format!("record {id} deleted (demo tool, nothing was really deleted)"),
            };
        }
        let args: Value = serde_json::from_str(arguments).unwrap_or_else(|_| Value::String(arguments.to_string()));
        let mut body = json!({
            "tool": tool.name,
            "arguments": args,
            "sessionId": ctx.session_id,
            "toolCallId": ctx.tool_call_id,
            "agentId": ctx.agent_id,
            "userId": ctx.user_id,
            "orgId": ctx.org_id,
        });
        if !ctx.files.is_empty() {
            body["files"] = Value::Array(ctx.files.to_vec());
        }
        if let Some(contact) = ctx.contact {
            body["contact"] = contact;
        }
        let fut = async {
            let bytes = serde_json::to_vec(&body).map_err(|e| format!("tool '{}' request: {e}", tool.name))?;
            let mut req = self
                .http
                .post(&tool.url)
                .header("Idempotency-Key", ctx.tool_call_id)
                .header(reqwest::header::CONTENT_TYPE, "application/json");
            if let Some(key) = &self.signing_key {
                req = req.header("X-Switchboard-Signature", signature(key, chrono::Utc::now().timestamp(), &bytes));
            }
            let resp = req
                .body(bytes)
                .send()
                .await
                .map_err(|e| format!("tool '{}' unreachable: {}", tool.name, http_failure(e)))?;
            let status = resp.status();
            if !status.is_success() {
                return Err(format!("tool '{}' failed with HTTP {}", tool.name, status.as_u16()));
            }
            let bytes = read_capped(resp, self.max_output).await.map_err(|e| match e {
                BodyError::Broken(why) => format!("tool '{}' response broken: {why}", tool.name),
                BodyError::TooLarge => format!("tool '{}' output exceeds {} bytes", tool.name, self.max_output),
            })?;
            let v: Value =
                serde_json::from_slice(&bytes).map_err(|_| format!("tool '{}' returned invalid JSON", tool.name))?;
            if let Some(err) = v.get("error").filter(|e| !e.is_null()) {
                let msg = err.as_str().map(str::to_string).unwrap_or_else(|| err.to_string());
                return Ok(ToolOutcome::error(msg));
            }
            match v.get("result") {
                Some(Value::String(s)) => Ok(ToolOutcome { is_error: false, result: s.clone() }),
                Some(other) => Ok(ToolOutcome { is_error: false, result: other.to_string() }),
                None => Err(format!("tool '{}' answered without 'result' or 'error'", tool.name)),
            }
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(Ok(outcome)) => outcome,
            Ok(Err(msg)) => {
                tracing::warn!(tool = %tool.name, %msg, "tool call failed");
                ToolOutcome::error(msg)
            }
            Err(_) => {
                tracing::warn!(tool = %tool.name, "tool call timed out");
                ToolOutcome::error(format!("tool '{}' timed out after {} ms", tool.name, self.timeout.as_millis()))
            }
        }
    }
}

/// `t=<unix>,v1=<hex HMAC-SHA256 of "<t>.<body>">`: the timestamp is signed with the body, so a host can refuse
/// a replay older than it accepts.
fn signature(key: &ring::hmac::Key, t: i64, body: &[u8]) -> String {
    let mut ctx = ring::hmac::Context::with_key(key);
    ctx.update(t.to_string().as_bytes());
    ctx.update(b".");
    ctx.update(body);
    format!("t={t},v1={}", crate::util::hex(ctx.sign().as_ref()))
}
