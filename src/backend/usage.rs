//! Usage: the tokens and cost of model calls, counted in the backend per org, user, model and UTC day (for
//! `GET /admin/usage`), and an org's spend per UTC month (for `limits.org_monthly_usd`). Costs are whole
//! millionths of a dollar, so counters add exactly.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BResult;

/// One model call's (or, read back, one day's) usage by a user of an org on a model.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct UsageEntry {
    pub user_id: String,
    pub model: String,
    pub input_tokens: u64,
    pub output_tokens: u64,
    /// Millionths of a dollar (0 for a model without a price).
    pub cost_micro_usd: u64,
}

#[async_trait]
pub trait UsageStore: Send + Sync {
    /// Adds `entry` to `org_id`'s counters of `day` (`YYYY-MM-DD`, UTC) and its cost to the org's spend of
    /// `day`'s month.
    async fn record_usage(&self, org_id: &str, day: &str, entry: &UsageEntry) -> BResult<()>;
    /// `org_id`'s counters of each of `days`, one entry per (day, user, model) with usage.
    async fn usage(&self, org_id: &str, days: &[String]) -> BResult<Vec<(String, UsageEntry)>>;
    /// What `org_id` spent in `month` (`YYYY-MM`), in millionths of a dollar.
    async fn month_spend(&self, org_id: &str, month: &str) -> BResult<u64>;
}
