//! Agent catalogue: the configured agents, or the built-in demo agent when none are configured.

use std::collections::HashMap;
use std::sync::Arc;

use crate::config::{AgentConfig, AuthLevel, Config, InteractionKind, ToolConfig, Visibility};
use crate::llm::demo::{DEMO_GATED_TOOL_NAME, DEMO_TOOL_NAME};
use crate::llm::ToolSpec;
use crate::tools::DEMO_TOOL_URL;

/// The id the demo agent answers to when a request names none (it answers every id).
const DEMO_AGENT_ID: &str = "11111111-1111-1111-1111-111111111111";

pub(crate) struct Agents {
    by_id: HashMap<String, Arc<AgentConfig>>,
    /// Answers every agentId when no agents are configured.
    demo: Option<Arc<AgentConfig>>,
    /// The agent of a gateway request that names none: the first configured, or the demo's id.
    default_id: String,
}

impl Agents {
    pub(crate) fn new(config: &Config) -> Self {
        let by_id = config.agents.iter().map(|a| (a.id.clone(), Arc::new(a.clone()))).collect();
        let demo = config.agents.is_empty().then(|| {
            let offline = config.llm.base_url.is_empty();
            Arc::new(AgentConfig {
                id: String::new(),
                name: "Switchboard Demo".into(),
                system_prompt: "You are a helpful support agent.".into(),
                confirm_tools: vec!["delete_*".into()],
                models: vec![],
                // The in-process demo tool only makes sense with the offline demo model.
                tools: if offline {
                    vec![ToolConfig {
                        name: DEMO_TOOL_NAME.into(),
                        description: "Delete a record by id (demo: deletes nothing)".into(),
                        parameters: serde_json::json!({"type": "object", "properties": {"id": {"type": "string"}}, "required": ["id"]}),
                        url: DEMO_TOOL_URL.into(),
                        auth_level: AuthLevel::None,
                        title: Some("Deleting the record".into()),
                        idempotent: false,
                    }, ToolConfig {
                        name: DEMO_GATED_TOOL_NAME.into(),
                        description: "The account balance of the person (needs a verified identity)".into(),
                        parameters: serde_json::json!({"type": "object", "properties": {}}),
                        url: DEMO_TOOL_URL.into(),
                        auth_level: AuthLevel::EndUser,
                        title: Some("Checking your balance".into()),
                        idempotent: true,
                    }]
                } else {
                    vec![]
                },
                interactions: vec![InteractionKind::IdentityIntake, InteractionKind::Choices],
                visibility: Visibility::Public,
                knowledge_sets: None,
                allowed_origins: Vec::new(),
                widget_secret: String::new(),
                org: "default".into(),
                mcp_servers: Vec::new(),
                greeting: Some(
                    "Hi! I'm the offline demo assistant. Ask about returns or shipping, or try \"delete record 7\"."
                        .into(),
                ),
            })
        });
        let default_id = config.agents.first().map_or_else(|| DEMO_AGENT_ID.to_string(), |a| a.id.clone());
        Self { by_id, demo, default_id }
    }

    /// The agent a REST or orra request runs when it names none.
    pub(crate) fn default_id(&self) -> &str {
        &self.default_id
    }

    /// The agent for an id: configured, or the demo agent (under the requested id) when none are configured.
    pub(crate) fn get(&self, agent_id: &str) -> Option<Arc<AgentConfig>> {
        if let Some(a) = self.by_id.get(agent_id) {
            return Some(a.clone());
        }
        self.demo.as_ref().map(|d| {
            let mut a = (**d).clone();
            a.id = agent_id.to_string();
            Arc::new(a)
        })
    }
}

pub(crate) fn tool_specs(agent: &AgentConfig) -> Vec<ToolSpec> {
    agent
        .tools
        .iter()
        .map(|t| ToolSpec {
            name: t.name.clone(),
            description: t.description.clone(),
            parameters: t.parameters.clone(),
        })
        .collect()
}

pub(crate) fn needs_confirmation(agent: &AgentConfig, tool: &str) -> bool {
    agent.confirm_tools.iter().any(|p| glob_match(p, tool))
}

/// Glob match with `*` (any run) and `?` (one char), used for `confirm_tools`.
pub(crate) fn glob_match(pattern: &str, name: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    let (mut pi, mut ni) = (0usize, 0usize);
    let (mut star, mut mark) = (None::<usize>, 0usize);
    while ni < n.len() {
        if pi < p.len() && (p[pi] == '?' || p[pi] == n[ni]) {
            pi += 1;
            ni += 1;
        } else if pi < p.len() && p[pi] == '*' {
            star = Some(pi);
            mark = ni;
            pi += 1;
        } else if let Some(s) = star {
            pi = s + 1;
            mark += 1;
            ni = mark;
        } else {
            return false;
        }
    }
    while pi < p.len() && p[pi] == '*' {
        pi += 1;
    }
    pi == p.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("delete_*", "delete_record"));
        assert!(glob_match("*", "anything"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("delete_*", "get_record"));
        assert!(!glob_match("a?c", "abbc"));
        assert!(glob_match("*_record", "delete_record"));
        assert!(glob_match("issue_refund", "issue_refund"));
    }
}
