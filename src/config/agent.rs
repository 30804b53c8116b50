//! One agent's configuration: its prompt, tools, approvals, visibility, widget secret and the org its widget
//! visitors belong to.

use serde::{Deserialize, Serialize};

use super::{load, AuthLevel, InteractionKind, Visibility};

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
    /// Interaction kinds whose raise tools the model is offered: `identity_intake`, `choices`.
    #[serde(default = "default_interactions")]
    pub interactions: Vec<InteractionKind>,
    /// `public` (default: `end_user` tools need an OTP-verified session, `admin` tools are refused) or
    /// `internal` (every tool level passes).
    #[serde(default)]
    pub visibility: Visibility,
    /// Knowledge sets this agent searches; unset = every set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub knowledge_sets: Option<Vec<String>>,
    /// Page origins that may open sessions with this agent (`*`, exact, or `https://*.example.com`), checked on
    /// create against the socket's `Origin`; empty = any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allowed_origins: Vec<String>,
    /// (secret, ≥ 32 bytes) Verifies a widget's `authContext`. Better from
    /// `SWITCHBOARD_WIDGET_SECRETS__<AGENT_ID>` (upper case, other characters as `_`) than from the file.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub widget_secret: String,
    /// The first words a visitor sees, before they write (sent to extended clients with a new session; not
    /// stored in the conversation, not given to the model).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub greeting: Option<String>,
    /// MCP servers (`mcp.servers[].name`) whose tools this agent is offered, as `<server>__<tool>`; its
    /// `confirm_tools` globs apply to those names.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub mcp_servers: Vec<String>,
    /// The org this agent's widget visitors belong to (a signed `authContext` makes the socket act as
    /// `widget:<agentId>:<userId>` in this org).
    #[serde(default = "default_org")]
    pub org: String,
}

fn default_org() -> String {
    "default".into()
}

impl AgentConfig {
    /// The environment variable that may hold this agent's widget secret.
    pub fn widget_secret_env(&self) -> String {
        let id: String =
            self.id.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_uppercase() } else { '_' }).collect();
        format!("{}{id}", load::WIDGET_SECRET_PREFIX)
    }
}

fn default_interactions() -> Vec<InteractionKind> {
    vec![InteractionKind::IdentityIntake, InteractionKind::Choices]
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
    /// Who may run it on a public agent: `none`, `end_user` (an OTP-verified session), `admin` (never).
    #[serde(default)]
    pub auth_level: AuthLevel,
    /// What a visitor reads while it runs ("Checking your order"); on a public agent a tool without one is
    /// shown as a generic step, never by its internal name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub title: Option<String>,
    /// Running a call twice does no harm (a lookup, or a host that honours `Idempotency-Key`): a call cut by
    /// its pod's death is run again by the pod that takes the turn over. Otherwise the model is told the call
    /// may have run.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub idempotent: bool,
}

fn default_parameters() -> serde_json::Value {
    serde_json::json!({"type": "object", "properties": {}})
}
