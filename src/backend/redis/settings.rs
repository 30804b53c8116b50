//! Per-org settings (`P:settings:<org>`, a JSON string without TTL: an org's configuration, not its traffic).

use async_trait::async_trait;
use fred::interfaces::KeysInterface;

use super::conn::{parse_json, to_json, RedisStore};
use crate::backend::{BResult, OrgSettings, SettingsStore};

#[async_trait]
impl SettingsStore for RedisStore {
    async fn get_settings(&self, org_id: &str) -> BResult<Option<OrgSettings>> {
        let s = self.s();
        let raw: Option<String> = s.client.get(s.keys.settings(org_id)).await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("org settings", &r)).transpose()
    }

    async fn put_settings(&self, org_id: &str, settings: &OrgSettings) -> BResult<()> {
        let s = self.s();
        s.client
            .set::<(), _, _>(s.keys.settings(org_id), to_json(settings)?, None, None, false)
            .await
            .map_err(|e| s.err(e))
    }
}
