//! MCP servers whose tools agents may use (`[[mcp.servers]]`), and the checks on them.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{invalid, ConfigError};

#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct McpConfig {
    pub servers: Vec<McpServerConfig>,
}

/// One MCP server over streamable HTTP. Its tools are offered to the agents that name it in `mcp_servers`,
/// as `<name>__<tool>`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct McpServerConfig {
    /// 1-32 of `A-Z a-z 0-9 -`, unique: the prefix of its tools' names.
    pub name: String,
    /// `http(s)://host:port/mcp`.
    pub url: String,
    /// Request headers, each naming the environment variable that holds its value (`Authorization =
    /// "CRM_MCP_TOKEN"`): secrets stay out of the file. An unset variable fails the boot.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// The values of `headers`, read from the environment at load (secret; never serialized).
    #[serde(skip)]
    pub header_values: BTreeMap<String, String>,
    /// One tool call (and the connection) may take this long; past it the call is a tool error.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    /// Globs of the server's tool names offered (empty = all), then `deny` globs taken out.
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

fn default_timeout_ms() -> u64 {
    30_000
}

impl McpConfig {
    /// Names unique and well formed, URLs http(s), timeouts sensible.
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        let mut seen = std::collections::HashSet::new();
        for (i, s) in self.servers.iter().enumerate() {
            let key = |f: &str| format!("mcp.servers[{i}].{f}");
            let ok = !s.name.is_empty()
                && s.name.len() <= 32
                && s.name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                && seen.insert(s.name.as_str());
            if !ok {
                return Err(invalid(&key("name"), "must be unique, 1-32 of A-Z a-z 0-9 -"));
            }
            super::validate::http_url(&key("url"), &s.url)?;
            if !(100..=600_000).contains(&s.timeout_ms) {
                return Err(invalid(&key("timeout_ms"), "must be 100..=600000"));
            }
        }
        Ok(())
    }

    pub fn server(&self, name: &str) -> Option<&McpServerConfig> {
        self.servers.iter().find(|s| s.name == name)
    }
}
