//! Per-org settings (`P:settings:<org>`, a JSON string without TTL: an org's configuration, not its traffic),
//! the deployment's shared keys, and usage counters (`P:usage:<org>:<day>` hashes, `P:spend:<org>:<month>`).

use async_trait::async_trait;
use std::collections::{BTreeMap, HashMap};

use fred::interfaces::{HashesInterface, KeysInterface};
use futures_util::future::join_all;

use fred::types::SetOptions;

use super::conn::{corrupt, parse_json, to_json, RedisStore};
use crate::backend::{BResult, OrgSettings, SettingsStore, UsageEntry, UsageStore};

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
        crate::util::unhex(&stored).ok_or_else(|| corrupt("deployment key", "not hex"))
    }

    async fn put_settings(&self, org_id: &str, settings: &OrgSettings) -> BResult<()> {
        let s = self.s();
        s.client
            .set::<(), _, _>(s.keys.settings(org_id), to_json(settings)?, None, None, false)
            .await
            .map_err(|e| s.err(e))
    }
}

/// How long a day's usage counters are kept (a little over a year, for year-on-year reports).
const USAGE_KEEP_S: i64 = 400 * 86_400;
/// How long a month's spend counter is kept (past the month's end).
const SPEND_KEEP_S: i64 = 40 * 86_400;

/// The hash field of one counter (`i` input, `o` output, `c` cost) of (user, model): unambiguous whatever
/// the ids hold.
fn usage_field(kind: char, user: &str, model: &str) -> String {
    format!("{kind}:{}", serde_json::json!([user, model]))
}

#[async_trait]
impl UsageStore for RedisStore {
    async fn record_usage(&self, org_id: &str, day: &str, e: &UsageEntry) -> BResult<()> {
        let s = self.s();
        let key = s.keys.usage(org_id, day);
        let spend = s.keys.spend(org_id, day.get(..7).unwrap_or(day));
        let add = |kind: char, n: i64| {
            let field = usage_field(kind, &e.user_id, &e.model);
            let key = key.clone();
            async move { s.client.hincrby::<i64, _, _>(key, field, n).await }
        };
        // One round trip for the counters (fred pipelines concurrent commands); counters that do not move are
        // not sent. The expiry is set when a counter was just created (its value is the increment), not on
        // every call: a day's key gets it with its first counters.
        let counts = [('i', e.input_tokens), ('o', e.output_tokens), ('c', e.cost_micro_usd)];
        let moved: Vec<(char, i64)> = counts
            .into_iter()
            .filter(|(_, n)| *n > 0)
            .map(|(k, n)| (k, i64::try_from(n).unwrap_or(i64::MAX)))
            .collect();
        let mut created = false;
        for (r, (_, n)) in join_all(moved.iter().map(|(k, n)| add(*k, *n))).await.into_iter().zip(&moved) {
            created |= r.map_err(|err| s.err(err))? == *n;
        }
        if created {
            s.client.expire::<(), _>(&key, USAGE_KEEP_S, None).await.map_err(|err| s.err(err))?;
        }
        if e.cost_micro_usd > 0 {
            let cost = i64::try_from(e.cost_micro_usd).unwrap_or(i64::MAX);
            if s.client.incr_by::<i64, _>(&spend, cost).await.map_err(|err| s.err(err))? == cost {
                s.client.expire::<(), _>(&spend, SPEND_KEEP_S, None).await.map_err(|err| s.err(err))?;
            }
        }
        Ok(())
    }

    async fn usage(&self, org_id: &str, days: &[String]) -> BResult<Vec<(String, UsageEntry)>> {
        let s = self.s();
        let reads =
            join_all(days.iter().map(|day| s.client.hgetall::<HashMap<String, i64>, _>(s.keys.usage(org_id, day))));
        let mut out = Vec::new();
        for (day, read) in days.iter().zip(reads.await) {
            let mut by: BTreeMap<(String, String), UsageEntry> = BTreeMap::new();
            for (field, n) in read.map_err(|e| s.err(e))? {
                let Some((kind, ids)) = field.split_once(':') else { continue };
                let Ok([user, model]) = serde_json::from_str::<[String; 2]>(ids) else { continue };
                let e = by.entry((user.clone(), model.clone())).or_insert_with(|| UsageEntry {
                    user_id: user,
                    model,
                    ..Default::default()
                });
                let n = u64::try_from(n).unwrap_or(0);
                match kind {
                    "i" => e.input_tokens = n,
                    "o" => e.output_tokens = n,
                    "c" => e.cost_micro_usd = n,
                    _ => {}
                }
            }
            out.extend(by.into_values().map(|e| (day.clone(), e)));
        }
        Ok(out)
    }

    async fn month_spend(&self, org_id: &str, month: &str) -> BResult<u64> {
        let s = self.s();
        let spent: Option<i64> = s.client.get(s.keys.spend(org_id, month)).await.map_err(|e| s.err(e))?;
        Ok(spent.and_then(|n| u64::try_from(n).ok()).unwrap_or(0))
    }
}
