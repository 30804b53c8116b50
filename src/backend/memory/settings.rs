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

#[async_trait]
impl UsageStore for MemoryStore {
    async fn record_usage(&self, org_id: &str, day: &str, entry: &UsageEntry) -> BResult<()> {
        let mut st = self.shared.state.lock();
        let key = (org_id.to_string(), day.to_string(), entry.user_id.clone(), entry.model.clone());
        let counted = st.usage.entry(key).or_default();
        counted.0 += entry.input_tokens;
        counted.1 += entry.output_tokens;
        counted.2 += entry.cost_micro_usd;
        let month = day.get(..7).unwrap_or(day).to_string();
        *st.spend.entry((org_id.to_string(), month)).or_default() += entry.cost_micro_usd;
        Ok(())
    }

    async fn usage(&self, org_id: &str, days: &[String]) -> BResult<Vec<(String, UsageEntry)>> {
        let st = self.shared.state.lock();
        let mut out: Vec<(String, UsageEntry)> = st
            .usage
            .iter()
            .filter(|((org, day, _, _), _)| org == org_id && days.contains(day))
            .map(|((_, day, user, model), (i, o, c))| {
                let entry = UsageEntry {
                    user_id: user.clone(),
                    model: model.clone(),
                    input_tokens: *i,
                    output_tokens: *o,
                    cost_micro_usd: *c,
                };
                (day.clone(), entry)
            })
            .collect();
        out.sort_by(|a, b| (&a.0, &a.1.user_id, &a.1.model).cmp(&(&b.0, &b.1.user_id, &b.1.model)));
        Ok(out)
    }

    async fn month_spend(&self, org_id: &str, month: &str) -> BResult<u64> {
        Ok(self.shared.state.lock().spend.get(&(org_id.to_string(), month.to_string())).copied().unwrap_or(0))
    }
}
