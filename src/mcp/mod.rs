//! MCP tools: the tools of the MCP servers an agent names (`agents[].mcp_servers`), offered to its model as
//! `<server>__<tool>` with the server's input schema. A call goes through the same gates as a webhook tool
//! (`confirm_tools` globs park it for approval, resumable from any pod), then to the server ([`server`]); its
//! result (text, structured JSON, images as data) becomes the tool message, and `isError` a tool error.

mod server;

use std::collections::HashMap;
use std::sync::Arc;

use rmcp::model::{CallToolResult, ContentBlock};
use serde_json::Value;

use self::server::McpServer;
use crate::config::{AgentConfig, McpConfig};
use crate::llm::ToolSpec;
use crate::metrics::Metrics;
use crate::tools::ToolOutcome;

/// Between a server's name and its tool's in the name the model sees.
pub(crate) const SEPARATOR: &str = "__";

/// The pod's MCP servers.
pub(crate) struct McpTools {
    servers: HashMap<String, Arc<McpServer>>,
    metrics: Arc<Metrics>,
}

impl McpTools {
    /// Starts a client for every configured server (each connects in the background: none fails the boot).
    pub(crate) fn start(config: &McpConfig, metrics: Arc<Metrics>) -> McpTools {
        let servers = config
            .servers
            .iter()
            .map(|c| {
                // Down until its tools are listed.
                metrics.mcp_server_up(&c.name, false);
                let m = metrics.clone();
                let on_change: server::OnChange = Arc::new(move |name, up| m.mcp_server_up(name, up));
                (c.name.clone(), McpServer::start(c.clone(), on_change))
            })
            .collect();
        McpTools { servers, metrics }
    }

    /// The MCP tools `agent` is offered: every listed tool of its servers that `allow` / `deny` let through.
    pub(crate) fn specs(&self, agent: &AgentConfig) -> Vec<ToolSpec> {
        let mut out = Vec::new();
        for name in &agent.mcp_servers {
            let Some(server) = self.servers.get(name) else { continue };
            for tool in server.tools() {
                if !offered(&server.config, &tool.name) {
                    continue;
                }
                out.push(ToolSpec {
                    name: format!("{name}{SEPARATOR}{}", tool.name),
                    description: tool.description.as_deref().unwrap_or_default().to_string(),
                    parameters: Value::Object((*tool.input_schema).clone()),
                });
            }
        }
        out
    }

    /// The server and tool of `name` when it is one of `agent`'s MCP tools.
    fn resolve<'a>(&'a self, agent: &AgentConfig, name: &'a str) -> Option<(&'a Arc<McpServer>, &'a str)> {
        let (server, tool) = name.split_once(SEPARATOR)?;
        if !agent.mcp_servers.iter().any(|s| s == server) {
            return None;
        }
        let s = self.servers.get(server)?;
        offered(&s.config, tool).then_some((s, tool))
    }

    /// Whether `name` is one of `agent`'s MCP tools (offered or not: a call to a tool the server dropped is
    /// still the server's to refuse).
    pub(crate) fn owns(&self, agent: &AgentConfig, name: &str) -> bool {
        self.resolve(agent, name).is_some()
    }

    /// Runs MCP tool `name` with the model's `arguments` (a JSON object as text).
    pub(crate) async fn call(&self, agent: &AgentConfig, name: &str, arguments: &str) -> ToolOutcome {
        let Some((server, tool)) = self.resolve(agent, name) else {
            return ToolOutcome { is_error: true, result: format!("unknown tool '{name}'") };
        };
        let args = match serde_json::from_str::<Value>(if arguments.trim().is_empty() { "{}" } else { arguments }) {
            Ok(Value::Object(map)) => map,
            _ => return ToolOutcome { is_error: true, result: "the arguments must be a JSON object".into() },
        };
        let outcome = match server.call(tool, args).await {
            Ok(result) => outcome_of(&result),
            Err(e) => ToolOutcome { is_error: true, result: format!("tool '{name}' failed: {e}") },
        };
        self.metrics.mcp_call(&server.config.name, tool, !outcome.is_error);
        outcome
    }
}

/// Whether the server's `allow` / `deny` globs let `tool` through.
fn offered(config: &crate::config::McpServerConfig, tool: &str) -> bool {
    let allowed = config.allow.is_empty() || config.allow.iter().any(|g| crate::agents::glob_match(g, tool));
    allowed && !config.deny.iter().any(|g| crate::agents::glob_match(g, tool))
}

/// A call's result as the tool message: its structured JSON when it has one, else its text, images as data
/// URLs. `isError` is a tool error.
fn outcome_of(result: &CallToolResult) -> ToolOutcome {
    let mut parts: Vec<String> = Vec::new();
    for block in &result.content {
        match block {
            ContentBlock::Text(t) => parts.push(t.text.clone()),
            ContentBlock::Image(i) => parts.push(format!("data:{};base64,{}", i.mime_type, i.data)),
            ContentBlock::Audio(a) => parts.push(format!("data:{};base64,{}", a.mime_type, a.data)),
            ContentBlock::ResourceLink(l) => parts.push(l.uri.clone()),
            other => parts.push(serde_json::to_string(other).unwrap_or_default()),
        }
    }
    let result_text = match &result.structured_content {
        // Structured content wins where there is one (the spec has servers repeat it as text, so the text
        // would only say it twice).
        Some(v) => v.to_string(),
        None => parts.join("\n"),
    };
    ToolOutcome { is_error: result.is_error.unwrap_or(false), result: result_text }
}
