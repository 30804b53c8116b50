//! `GET /admin/usage?from&to&groupBy` (curators and admins): the org's tokens and cost over UTC days, grouped
//! by `day` (default), `user` or `model`, from the backend's usage counters.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::response::IntoResponse;
use axum::Json;
use chrono::{Duration, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;

use super::{AdminCaller, AdminError, AdminResult};
use crate::app::App;
use crate::auth::Role;

/// The longest range one request reads (a day's counters are one backend read).
const MAX_DAYS: i64 = 366;

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
pub(super) struct UsageQuery {
    from: Option<String>,
    to: Option<String>,
    group_by: Option<String>,
}

/// Input tokens, output tokens, micro-USD.
type Sums = (u64, u64, u64);

fn day(key: &str, given: Option<&str>, default: NaiveDate) -> Result<NaiveDate, AdminError> {
    match given {
        None => Ok(default),
        Some(d) => NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| AdminError::invalid(format!("`{key}` must be a date, YYYY-MM-DD"))),
    }
}

pub(super) async fn usage(
    State(app): State<Arc<App>>,
    caller: AdminCaller,
    Query(q): Query<UsageQuery>,
) -> AdminResult {
    let who = caller.need(Role::Curator)?;
    let today = Utc::now().date_naive();
    let to = day("to", q.to.as_deref(), today)?;
    let from = day("from", q.from.as_deref(), to - Duration::days(29))?;
    let span = (to - from).num_days() + 1;
    if !(1..=MAX_DAYS).contains(&span) {
        return Err(AdminError::invalid(format!("`from` must be on or before `to`, at most {MAX_DAYS} days apart")));
    }
    let group = q.group_by.as_deref().unwrap_or("day");
    if !matches!(group, "day" | "user" | "model") {
        return Err(AdminError::invalid("`groupBy` must be day, user or model"));
    }
    let days: Vec<String> = (0..span).map(|i| (from + Duration::days(i)).format("%Y-%m-%d").to_string()).collect();
    let entries = app.backends.usage.usage(&who.org_id, &days).await?;
    let mut groups: BTreeMap<String, Sums> = BTreeMap::new();
    let mut total: Sums = (0, 0, 0);
    for (d, e) in entries {
        let key = match group {
            "user" => e.user_id,
            "model" => e.model,
            _ => d,
        };
        let g = groups.entry(key).or_default();
        *g = (g.0 + e.input_tokens, g.1 + e.output_tokens, g.2 + e.cost_micro_usd);
        total = (total.0 + e.input_tokens, total.1 + e.output_tokens, total.2 + e.cost_micro_usd);
    }
    let row = |s: Sums| json!({"inputTokens": s.0, "outputTokens": s.1, "costUsd": s.2 as f64 / 1e6});
    let rows: Vec<_> = groups
        .into_iter()
        .map(|(k, s)| {
            let mut r = row(s);
            r[group] = json!(k);
            r
        })
        .collect();
    let body = json!({"orgId": who.org_id, "from": from.to_string(), "to": to.to_string(), "groupBy": group,
                      "rows": rows, "total": row(total)});
    Ok(Json(body).into_response())
}
