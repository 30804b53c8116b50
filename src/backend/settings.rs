//! Per-org settings: overrides an org's admins set through `PUT /admin/settings`, read by every pod
//! when a turn starts, so a change applies to the org's next turn wherever it runs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BResult;

/// An org's overrides; `None` keeps the deployment's (the agent's prompt, `llm.model`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct OrgSettings {
    pub model: Option<String>,
    pub system_prompt: Option<String>,
    pub updated_at_ms: i64,
}

#[async_trait]
pub trait SettingsStore: Send + Sync {
    async fn get_settings(&self, org_id: &str) -> BResult<Option<OrgSettings>>;
    /// Replaces the org's settings.
    async fn put_settings(&self, org_id: &str, settings: &OrgSettings) -> BResult<()>;
    /// The deployment-wide secret `name` (e.g. the resume-token key when `auth.resume_secret` is unset): the
    /// first `candidate` stored wins, so every pod, and every pod after a restart, gets the same bytes.
    async fn deployment_key(&self, name: &str, candidate: &[u8]) -> BResult<Vec<u8>>;
}
