//! What a turn's model calls cost: each call is priced (`llm.prices`), added to the turn's `usage`, counted in
//! the backend per org, user, model and UTC day (`GET /admin/usage`) and to the org's monthly spend, which
//! `limits.org_monthly_usd` bounds for new turns (a running turn finishes).

use super::{TurnState, Turns};
use crate::backend::UsageEntry;
use crate::error::{ClientError, ErrorCode};

impl Turns {
    /// `QUOTA_EXCEEDED` once `org_id` has spent `limits.org_monthly_usd` this UTC month.
    pub(super) async fn check_spend(&self, org_id: &str) -> Result<(), ClientError> {
        let limit = self.config.limits.org_monthly_usd;
        if limit <= 0.0 {
            return Ok(());
        }
        let month = chrono::Utc::now().format("%Y-%m").to_string();
        let spent = self.backends.usage.month_spend(org_id, &month).await? as f64 / 1e6;
        if spent >= limit {
            return Err(ClientError::new(
                ErrorCode::QuotaExceeded,
                format!("this organisation has used its ${limit:.2} for {month} (limits.org_monthly_usd)"),
            ));
        }
        Ok(())
    }

    /// Counts one model call of `input` and `output` tokens: its cost (when the model has a price) goes to the
    /// turn's usage and the metrics, and both to the backend's counters. A counter that cannot be written is
    /// logged: the turn goes on.
    pub(super) async fn count_call(&self, state: &mut TurnState, input: u64, output: u64) {
        let price = self.config.llm.prices.get(&state.model);
        let cost = price.map(|p| p.micro_usd(input, output));
        if let Some(micro) = cost {
            state.usage.cost_micro_usd = Some(state.usage.cost_micro_usd.unwrap_or(0) + micro);
            self.metrics.cost(&state.model, micro);
        }
        let entry = UsageEntry {
            user_id: state.user_id.clone(),
            model: state.model.clone(),
            input_tokens: input,
            output_tokens: output,
            cost_micro_usd: cost.unwrap_or(0),
        };
        let day = chrono::Utc::now().format("%Y-%m-%d").to_string();
        if let Err(e) = self.backends.usage.record_usage(&state.org_id, &day, &entry).await {
            tracing::warn!(error = %e, session_id = %state.session_id, "could not count a model call's usage");
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::config::ModelPrice;

    #[test]
    fn a_call_costs_its_tokens_at_the_models_price() {
        let p = ModelPrice { input_usd_per_mtok: 0.15, output_usd_per_mtok: 0.60 };
        assert_eq!(p.micro_usd(1_000_000, 0), 150_000);
        assert_eq!(p.micro_usd(1_000, 500), 450, "0.00015 + 0.0003 dollars");
        assert_eq!(p.micro_usd(1, 0), 1, "a fraction of a micro-dollar is never dropped");
        assert_eq!(p.micro_usd(0, 0), 0);
    }
}
