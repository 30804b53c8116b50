//! Per-org settings (`P:settings:<org>`, a JSON string without TTL: an org's configuration, not its traffic).

use async_trait::async_trait;
use fred::interfaces::KeysInterface;

use fred::types::SetOptions;

use super::conn::{corrupt, parse_json, to_json, RedisStore};
use crate::backend::{BResult, OrgSettings, SettingsStore};

#[async_trait]
impl SettingsStore for RedisStore {
    async fn get_settings(&self, org_id: &str) -> BResult<Option<OrgSettings>> {
        let s = self.s();
        let raw: Option<String> = s.client.get(s.keys.settings(org_id)).await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("org settings", &r)).transpose()
    }

    async fn deployment_key(&self, name: &str, candidate: &[u8]) -> BResult<Vec<u8>> {
        let s = self.s();
        let key = s.keys.deployment_key(name);
        // SET NX then GET: pods booting together race, the first write wins and all read it.
        s.client
            .set::<(), _, _>(&key, crate::util::hex(candidate), None, Some(SetOptions::NX), false)
            .await
            .map_err(|e| s.err(e))?;
        let stored: Option<String> = s.client.get(&key).await.map_err(|e| s.err(e))?;
        let stored = stored.ok_or_else(|| corrupt("deployment key", "missing after SET NX"))?;
        (0..stored.len())
            .step_by(2)
            .map(|i| stored.get(i..i + 2).and_then(|b| u8::from_str_radix(b, 16).ok()))
            .collect::<Option<Vec<u8>>>()
            .ok_or_else(|| corrupt("deployment key", "not hex"))
    }

    async fn put_settings(&self, org_id: &str, settings: &OrgSettings) -> BResult<()> {
        let s = self.s();
        s.client
            .set::<(), _, _>(s.keys.settings(org_id), to_json(settings)?, None, None, false)
            .await
            .map_err(|e| s.err(e))
    }
}
