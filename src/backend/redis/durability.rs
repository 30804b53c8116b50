//! What Redis must do for our state to survive it: keep every key (`maxmemory-policy noeviction`, checked at
//! boot) and, when `redis_wait_replicas` asks for it, hold parks, decisions and log appends until that many
//! replicas have them (`WAIT`), so a failover right after an acknowledged write does not lose it.
//!
//! `WAIT` blocks the connection it is sent on, and only covers the writes made on that same connection. So the
//! replicated writes and their `WAIT` get a connection of their own ([`Replicated::client`]): a slow or absent
//! replica then delays those writes, never the lease renewals, reads and registry heartbeats on the pod's
//! command connection (a lease renewal stuck behind a `WAIT` would lose the turn).

use std::sync::atomic::{AtomicI64, Ordering};

use fred::interfaces::{ClientLike, ConfigInterface, ServerInterface};
use fred::prelude::Client;
use fred::types::config::Options;
use fred::types::{ClusterHash, Value};
use tracing::{info, warn};

use crate::util::now_ms;

/// The connection for writes that must reach replicas, and how many must acknowledge them.
pub(super) struct Replicated {
    /// A second command client of the pod, used only for replicated writes and their `WAIT`. Owned by
    /// [`super::conn::Shared`]; its connection task is in the pod's tasks; Sentinel switches reconnect it.
    pub(super) client: Client,
    /// `redis_wait_replicas`: replicas that must acknowledge (≥ 1 when this exists).
    pub(super) replicas: i64,
    /// `redis_wait_timeout_ms`: how long one `WAIT` may block before the write goes on unconfirmed.
    pub(super) timeout_ms: i64,
    /// Unix ms of the last shortfall warning; one warning per 10 s, not one per append.
    last_warning: AtomicI64,
}

impl Replicated {
    pub(super) fn new(client: Client, replicas: u32, timeout_ms: u64) -> Replicated {
        Replicated {
            client,
            replicas: i64::from(replicas.max(1)),
            timeout_ms: i64::try_from(timeout_ms).unwrap_or(i64::MAX),
            last_warning: AtomicI64::new(0),
        }
    }

    /// `WAIT` on the node that holds `key` (in a cluster, the node of the key's slot: `WAIT` covers only the
    /// writes that node received on this connection). The write already happened on the master and is not
    /// undone by a shortfall, so a shortfall is reported, not returned as an error.
    pub(super) async fn wait(&self, key: &str) {
        let slot = fred::util::redis_keyslot(key.as_bytes());
        let options = Options { cluster_hash: Some(ClusterHash::Custom(slot)), ..Options::default() };
        let acked = self.client.with_options(&options).wait::<i64>(self.replicas, self.timeout_ms).await;
        let problem = match acked {
            Ok(n) if n >= self.replicas => return,
            Ok(n) => format!("{n} of {} replicas acknowledged within {} ms", self.replicas, self.timeout_ms),
            Err(e) => format!("WAIT failed: {e}"),
        };
        let now = now_ms();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now - last >= 10_000
            && self.last_warning.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_ok()
        {
            warn!(problem, "a durable write went on without the replicas redis_wait_replicas asks for");
        }
    }
}

/// Reads `maxmemory-policy` and warns unless it is `noeviction`: under memory pressure any other policy lets
/// Redis delete sessions, logs, parks or leases, which shows as lost conversations and turns that end twice.
/// Managed services that refuse `CONFIG` only get an informational line. Returns the policy when read.
pub(super) async fn check_eviction_policy(client: &Client) -> Option<String> {
    let reply: Result<Value, _> = client.config_get("maxmemory-policy").await;
    let policy = match reply {
        Ok(v) => policy_of(v),
        Err(e) => {
            info!(error = %e, "could not read maxmemory-policy (CONFIG may be disabled); it must be noeviction");
            return None;
        }
    };
    match policy.as_deref() {
        Some("noeviction") => {}
        Some(other) => warn!(
            maxmemory_policy = other,
            "redis maxmemory-policy is not noeviction: under memory pressure Redis will delete sessions, event \
             logs and parked approvals; set `maxmemory-policy noeviction`"
        ),
        None => info!("redis did not report maxmemory-policy; it must be noeviction"),
    }
    policy
}

/// `CONFIG GET` answers `[name, value]` (RESP2) or `{name: value}` (RESP3).
fn policy_of(v: Value) -> Option<String> {
    match v {
        Value::Array(items) => items.get(1).and_then(|v| v.as_string()),
        Value::Map(map) => map.inner().into_iter().next().and_then(|(_, v)| v.as_string()),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_config_get_reply_forms_are_read() {
        let resp2 = Value::Array(vec!["maxmemory-policy".into(), "allkeys-lru".into()]);
        assert_eq!(policy_of(resp2).as_deref(), Some("allkeys-lru"));
        assert_eq!(policy_of(Value::Array(vec![])), None);
        assert_eq!(policy_of(Value::Null), None);
    }
}
