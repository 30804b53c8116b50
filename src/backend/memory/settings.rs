//! Per-org settings of the memory backend.

use async_trait::async_trait;

use super::MemoryStore;
use crate::backend::*;

#[async_trait]
impl SettingsStore for MemoryStore {
    async fn get_settings(&self, org_id: &str) -> BResult<Option<OrgSettings>> {
        Ok(self.shared.state.lock().settings.get(org_id).cloned())
    }

    async fn put_settings(&self, org_id: &str, settings: &OrgSettings) -> BResult<()> {
        self.shared.state.lock().settings.insert(org_id.to_string(), settings.clone());
        Ok(())
    }

    async fn deployment_key(&self, name: &str, candidate: &[u8]) -> BResult<Vec<u8>> {
        Ok(self
            .shared
            .state
            .lock()
            .deployment_keys
            .entry(name.to_string())
            .or_insert_with(|| candidate.to_vec())
            .clone())
    }
}
