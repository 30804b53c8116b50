//! What Redis must do for our state to survive it: keep every key (`maxmemory-policy noeviction`, checked at
//! boot). Writes that must reach replicas (`redis_wait_replicas`) are `super::replicated`'s; a write made on the
//! command connection is made as safe by a fence after it ([`Shared::fence_key`]).

use fred::interfaces::ConfigInterface;
use fred::prelude::Client;
use fred::types::Value;
use tracing::{info, warn};

use super::conn::{int, Shared};
use super::replicated::{Replicated, Settled, Ticketing};
use crate::backend::{BResult, BackendError};

impl Shared {
    /// With `redis_wait_replicas`: returns once replicas hold every write to `key`'s master made before this call,
    /// on any connection (`lua/fence.lua` on the replicated connection, then its `WAIT`: a replica applies the
    /// master's writes in order). `key` must have an expiry (the fence rewrites it). Two uses:
    /// - after a write made on the command connection that a client is then told of (a new session: a failover
    ///   that took it back would leave the client a session that is not found);
    /// - after a read of a session's log on the replicated connection (`read_at`: where that connection stood
    ///   before the read), so no event a resume shows can be taken back by a failover (an event written on a
    ///   master being replaced, by a pod that has not followed the switch yet, is on no replica; the turn's
    ///   takeover would go on without a token the client has).
    ///
    /// Unconfirmed (the caller asks again, as when Redis is unreachable) when replicas do not confirm within
    /// `redis_wait_timeout_ms`, when the connection changed since the read or meanwhile, or when the master the
    /// fence reached does not hold `key` (the write went to a master being replaced).
    pub(super) async fn fence_key(&self, key: &str, read_at: Option<&Ticketing>) -> BResult<()> {
        let Some(replicated) = &self.replicated else { return Ok(()) };
        let (reply, at) = self.eval_ticketed(replicated, &self.scripts.fence, vec![key.to_string()], vec![]).await?;
        if read_at.is_some_and(|first| !Replicated::same_conn(first, &at)) {
            return Err(BackendError::Unconfirmed("the log was read across a change of connection"));
        }
        if int(&reply) == Some(-2) {
            return Err(BackendError::Unconfirmed("it was lost by a change of master"));
        }
        match replicated.settle(&at, replicated.timeout).await {
            Settled::Confirmed => Ok(()),
            Settled::Moved => Err(BackendError::Unconfirmed("its connection changed before replicas had it")),
            Settled::Short => Err(BackendError::Unconfirmed("replicas did not confirm it in time")),
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
