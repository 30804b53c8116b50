//! Connection and task plumbing shared by every Redis store of one pod: the fred client configuration and
//! builder (reconnect policy, buffer sizes, timeouts), the pod's background tasks, and [`Shared`], the state
//! each store borrows (client, keys, scripts, limits) with the script-calling helpers.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use fred::interfaces::{ClientLike, LuaInterface, PubsubInterface, SortedSetsInterface};
use fred::prelude::{Builder, Client, Error as FredError, ReconnectPolicy, ServerConfig};

use fred::types::config::{Config as FredConfig, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::Value;
use parking_lot::Mutex;
use serde::Serialize;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, warn};

use super::keys::{ops_keys, Keys};
use super::memo::SessionMemo;
use super::replicated::{Replicated, Settled, Ticketing};
use super::scripts::Scripts;
use super::url::{RedisTarget, UrlParts};
use crate::backend::{BResult, BackendError};
use crate::util::now_ms;

/// The fred client configuration for a target; `rediss` schemes connect over TLS, trusting `ca_file` (PEM)
/// when given, else the Mozilla roots built into the binary.
pub(super) fn fred_config(target: &RedisTarget, ca_file: &str) -> Result<FredConfig, String> {
    let mut config = plain_config(target)?;
    if target.is_tls() {
        config.tls = Some(tls_config(ca_file)?);
    }
    Ok(config)
}

/// TLS for every connection of the pod (commands, subscriber, cluster nodes, Sentinel's master).
fn tls_config(ca_file: &str) -> Result<fred::types::config::TlsConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    if ca_file.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    } else {
        use rustls::pki_types::pem::PemObject;
        let certs = rustls::pki_types::CertificateDer::pem_file_iter(ca_file)
            .map_err(|e| format!("redis_tls_ca_file {ca_file}: {e}"))?;
        for cert in certs {
            let cert = cert.map_err(|e| format!("redis_tls_ca_file {ca_file}: {e}"))?;
            roots.add(cert).map_err(|e| format!("redis_tls_ca_file {ca_file}: {e}"))?;
        }
        if roots.is_empty() {
            return Err(format!("redis_tls_ca_file {ca_file} holds no certificate"));
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let client = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(fred::types::config::TlsConfig::from(client))
}

fn plain_config(target: &RedisTarget) -> Result<FredConfig, String> {
    match target {
        RedisTarget::Single(url) => FredConfig::from_url_centralized(url).map_err(|e| e.details().to_string()),
        RedisTarget::Cluster(url) => {
            let parts = UrlParts::parse(url, None)?;
            Ok(FredConfig {
                server: ServerConfig::new_clustered(parts.hosts),
                username: parts.username,
                password: parts.password,
                ..FredConfig::default()
            })
        }
        RedisTarget::Sentinel(url) => {
            let parts = UrlParts::parse(url, Some(26379))?;
            Ok(FredConfig {
                server: ServerConfig::new_sentinel(parts.hosts, parts.path),
                username: parts.username,
                password: parts.password,
                ..FredConfig::default()
            })
        }
    }
}

/// Capacity of fred's internal broadcasts (pub/sub messages, reconnect events); fred's default is 32.
const FRED_BROADCAST_CAPACITY: usize = 8192;

fn reconnect_policy() -> ReconnectPolicy {
    // Retry forever: a gateway without Redis is useless, and readiness reports the outage meanwhile.
    ReconnectPolicy::new_exponential(0, 100, 2_000, 2)
}

pub(super) fn builder(config: FredConfig) -> Builder {
    let mut b = Builder::from_config(config);
    b.set_policy(reconnect_policy())
        .with_performance_config(|p| {
            p.broadcast_channel_capacity = FRED_BROADCAST_CAPACITY;
            p.default_command_timeout = Duration::from_secs(10);
        })
        .with_connection_config(|c| {
            c.connection_timeout = Duration::from_secs(5);
            c.internal_command_timeout = Duration::from_secs(5);
            c.tcp.nodelay = Some(true);
            // A hung (not dead) server is only noticed by this check; it forces a reconnect.
            c.unresponsive =
                UnresponsiveConfig { max_timeout: Some(Duration::from_secs(10)), interval: Duration::from_secs(1) };
        });
    b
}

/// Background tasks of one pod's Redis connections (fred's connection tasks, the bus pump, Sentinel
/// watchers). Owned jointly by the pod's backend handles; the last one dropped aborts them, which closes the
/// pod's connections. Dropping a `JoinHandle` would only detach a task, hence abort handles.
pub(super) struct PodTasks {
    /// Abort handles of every task the pod started; pushed while connecting, drained on drop.
    pub(super) handles: Mutex<Vec<AbortHandle>>,
}

impl PodTasks {
    pub(super) fn push<T>(&self, handle: &JoinHandle<T>) {
        self.handles.lock().push(handle.abort_handle());
    }
}

impl Drop for PodTasks {
    fn drop(&mut self) {
        for h in self.handles.lock().drain(..) {
            h.abort();
        }
    }
}

pub(super) fn spawn_connection(tasks: &PodTasks, handle: fred::types::ConnectHandle, what: &'static str) {
    tasks.push(&handle);
    tasks.push(&tokio::spawn(async move {
        match handle.await {
            Ok(Ok(())) => debug!(what, "redis connection task ended"),
            Ok(Err(e)) => warn!(what, error = %e, "redis connection task ended with an error"),
            Err(e) if e.is_cancelled() => {}
            Err(e) => warn!(what, error = %e, "redis connection task failed"),
        }
    }));
}

/// State shared by all of one pod's Redis backends.
pub(super) struct Shared {
    /// The pod's command connection(s), multiplexed by fred; shared by every backend of the pod.
    pub(super) client: Client,
    pub(super) keys: Keys,
    pub(super) scripts: Scripts,
    /// Redis Cluster: session channels use sharded pub/sub.
    pub(super) cluster: bool,
    pub(super) idle_ttl_s: i64,
    /// `turn.lease_ms`: a taken park's hold is cut to twice this (`confirms.rs`).
    pub(super) lease_ms: u64,
    /// `session.conversation_ttl_s`: conversations expire this long after their last message.
    pub(super) conv_ttl_s: i64,
    /// `session.conversation_max_messages`: the list is trimmed to this many on each append.
    pub(super) conv_max_messages: usize,
    /// `session.empty_conversation_ttl_s`: a conversation expires this soon until its first message.
    pub(super) empty_conv_ttl_s: i64,
    /// `session.conversations_per_user`: a user's index is trimmed to this many as conversations are created.
    pub(super) convs_per_user: usize,
    pub(super) log_len: usize,
    /// Last time (ms) a READONLY reply forced a reconnect; rate-limits reconnect storms.
    pub(super) last_readonly_reconnect: AtomicI64,
    /// `redis_wait_replicas` > 0: the connection replicated writes go over, followed by `WAIT`.
    pub(super) replicated: Option<Arc<Replicated>>,
    /// When this pod last refreshed a session's expiries (owned by `get_session`, see `sessions.rs`).
    pub(super) touched: SessionMemo<i64>,
    /// The first seq this pod's next append to a session gets, as far as it knows (owned by the log's appends
    /// and the turn's steps, see `log.rs`).
    pub(super) expected: SessionMemo<u64>,
    /// The pod's background tasks: alive while any backend handle exists, aborted when the last one goes.
    pub(super) _tasks: PodTasks,
}

/// The ops key, its previous generation and a fresh token appended to a [`once_lua`] script's keys and
/// arguments.
fn once_args(mut keys: Vec<String>, mut args: Vec<String>) -> BResult<(Vec<String>, Vec<String>)> {
    let first = keys.first().ok_or_else(|| corrupt("script", "no key"))?;
    let (ops, prev) = ops_keys(first);
    keys.extend([ops, prev]);
    args.push(uuid::Uuid::new_v4().simple().to_string());
    Ok((keys, args))
}

pub(super) fn fred_err(e: FredError) -> BackendError {
    BackendError::Redis(e)
}

pub(super) fn corrupt(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Corrupt(format!("{what}: {e}"))
}

/// A reply value as text; fred may hand bulk strings over as bytes.
pub(super) fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => other.as_str_lossy().map(|c| c.into_owned()),
    }
}

pub(super) fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        other => other.as_i64(),
    }
}

pub(super) fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

pub(super) fn parse_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> BResult<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

pub(super) fn to_json<T: Serialize>(v: &T) -> BResult<String> {
    serde_json::to_string(v).map_err(|e| corrupt("serialize", e))
}

impl Shared {
    /// Maps a fred error, and reacts to `READONLY`: the connection points at a demoted master (a failover
    /// happened without the connection dropping), so force a reconnect, which asks Sentinel for the new master.
    pub(super) fn err(&self, e: FredError) -> BackendError {
        if e.details().starts_with("READONLY") {
            let now = now_ms();
            let last = self.last_readonly_reconnect.load(Ordering::Relaxed);
            if now - last > 1_000
                && self
                    .last_readonly_reconnect
                    .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                    .is_ok()
            {
                warn!("redis answered READONLY: reconnecting to find the current master");
                let clients: Vec<Client> = std::iter::once(self.client.clone())
                    .chain(self.replicated.as_ref().map(|r| r.client.clone()))
                    .collect();
                tokio::spawn(async move {
                    for client in clients {
                        if let Err(e) = client.force_reconnection().await {
                            warn!(error = %e, "forced reconnect after READONLY failed");
                        }
                    }
                });
            }
        }
        fred_err(e)
    }

    /// EVALSHA, loading the script on NOSCRIPT (a restarted or failed-over server has an empty script cache).
    pub(super) async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<String>) -> BResult<Value> {
        self.eval_on(&self.client, script, keys, args).await
    }

    async fn eval_on(&self, client: &Client, script: &Script, keys: Vec<String>, args: Vec<String>) -> BResult<Value> {
        // Shared strings: the copy kept for a NOSCRIPT retry costs a reference count per argument, not a copy
        // of every event of an append.
        let keys: Vec<fred::types::Key> = keys.into_iter().map(Into::into).collect();
        let args: Vec<Value> = args.into_iter().map(|a| Value::String(a.into())).collect();
        match client.evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(client).await.map_err(|e| self.err(e))?;
                client.evalsha(script.sha1().clone(), keys, args).await.map_err(|e| self.err(e))
            }
            other => other.map_err(|e| self.err(e)),
        }
    }

    /// [`Shared::eval`] for a write that must survive a failover (a park, a decision, a step): with
    /// `redis_wait_replicas` it goes over the replicated connection and returns once that many replicas have
    /// it, or `redis_wait_timeout_ms` ran out (then it goes on, with a warning: see [`Replicated::settle`]). Log
    /// appends settle their own way (`log.rs`): nobody is shown an event a failover could take back.
    pub(super) async fn eval_replicated(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> BResult<Value> {
        let (reply, settled) = self.eval_settled(script, keys, args).await?;
        if settled != Settled::Confirmed {
            tracing::debug!(?settled, "a durable write went on without the replicas redis_wait_replicas asks for");
        }
        Ok(reply)
    }

    /// [`Shared::eval_replicated`] that says how the write settled (always confirmed without
    /// `redis_wait_replicas`), for a caller that must check a moved write on the master it talks to now.
    pub(super) async fn eval_settled(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> BResult<(Value, Settled)> {
        let Some(replicated) = &self.replicated else {
            return Ok((self.eval(script, keys, args).await?, Settled::Confirmed));
        };
        let (reply, at) = self.eval_ticketed(replicated, script, keys, args).await?;
        Ok((reply, replicated.settle(&at, replicated.timeout).await))
    }

    /// Runs `script` over the replicated connection, noting first where it goes (to settle it with).
    pub(super) async fn eval_ticketed(
        &self,
        replicated: &Replicated,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> BResult<(Value, Ticketing)> {
        let at = replicated.before(keys.first().map_or("", String::as_str));
        Ok((self.eval_on(&replicated.client, script, keys, args).await?, at))
    }

    /// After a write to `key` settled as moved (its connection was replaced before replicas had it): whether the
    /// master the replicated connection talks to now holds it (`lua/held.lua`, `check` its arguments), and if so
    /// how it settles there. `None`: not held, the write is lost.
    pub(super) async fn follow_moved(
        &self,
        replicated: &Arc<Replicated>,
        key: &str,
        check: [&str; 4],
    ) -> BResult<Option<(Settled, Ticketing)>> {
        let check: Vec<String> = check.iter().map(|a| a.to_string()).collect();
        // Only a master answers (`lua/held.lua` is refused by replicas); while the pod's connection still reaches
        // a replica (a demoted master), its READONLY reply makes the connection move (`Shared::err`): ask again.
        let mut backoff = crate::util::Backoff::new(Duration::from_millis(100), Duration::from_secs(1));
        let deadline = tokio::time::Instant::now() + replicated.timeout.max(Duration::from_secs(5));
        loop {
            match self.eval_ticketed(replicated, &self.scripts.held, vec![key.to_string()], check.clone()).await {
                Ok((reply, at)) if int(&reply) == Some(1) => {
                    return Ok(Some((replicated.settle(&at, replicated.timeout).await, at)))
                }
                Ok(_) => return Ok(None),
                Err(e) if tokio::time::Instant::now() >= deadline => return Err(e),
                Err(_) => backoff.wait().await,
            }
        }
    }

    /// PUBLISH, or SPUBLISH for a channel sharded by its slot (a session's, in a cluster).
    pub(super) async fn publish<M>(&self, channel: String, sharded: bool, message: M) -> BResult<()>
    where
        M: TryInto<Value> + Send,
        M::Error: Into<FredError> + Send,
    {
        let published = match sharded {
            true => self.client.spublish::<(), _, _>(channel, message).await,
            false => self.client.publish::<(), _, _>(channel, message).await,
        };
        published.map_err(|e| self.err(e))
    }

    /// [`Shared::eval`] for a script built by [`once_lua`]: adds the ops key (same slot as `keys[0]`) and a fresh
    /// token, so fred's resend of the same command after a dropped connection (or a MOVED redirect) returns
    /// the first run's reply instead of running it again.
    pub(super) async fn eval_once(&self, script: &Script, keys: Vec<String>, args: Vec<String>) -> BResult<Value> {
        let (keys, args) = once_args(keys, args)?;
        self.eval(script, keys, args).await
    }

    /// [`Shared::eval_once`] for a write that must survive a failover ([`Shared::eval_replicated`]).
    pub(super) async fn eval_once_replicated(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> BResult<Value> {
        let (keys, args) = once_args(keys, args)?;
        self.eval_replicated(script, keys, args).await
    }

    /// [`Shared::eval_once`] for a write that must survive a failover, saying how it settled
    /// ([`Shared::eval_settled`]): for a caller that acts on it only once it is kept ([`Shared::kept`]).
    pub(super) async fn eval_once_settled(
        &self,
        script: &Script,
        keys: Vec<String>,
        args: Vec<String>,
    ) -> BResult<(Value, Settled)> {
        let (keys, args) = once_args(keys, args)?;
        self.eval_settled(script, keys, args).await
    }

    /// Records when a session's turn lease lapses, for `claim_lapsed` on any pod. `later_only` (`GT`) for an entry
    /// written on a turn's behalf by another caller: a claim in progress moved it later, and it stays so.
    pub(super) async fn index_turn_deadline(
        &self,
        session_id: &str,
        turn_id: &str,
        deadline_ms: i64,
        later_only: bool,
    ) -> BResult<()> {
        let member = super::keys::deadline_member(session_id, turn_id);
        let order = later_only.then_some(fred::types::sorted_sets::Ordering::GreaterThan);
        self.client
            .zadd::<(), _, _>(self.keys.turns_deadline(), None, order, false, false, (deadline_ms as f64, member))
            .await
            .map_err(|e| self.err(e))
    }

    /// Whether a durable write that settled as `settled` is one a failover cannot take back: confirmed, or moved
    /// and held by the master the pod talks to now (`lua/held.lua` with `check`, on `key`). Not on a replica
    /// within `redis_wait_timeout_ms`, or moved and not held there (lost): `Unconfirmed`, saying which.
    pub(super) async fn kept(&self, settled: Settled, key: &str, check: [&str; 4]) -> BResult<()> {
        let Some(replicated) = &self.replicated else { return Ok(()) };
        match settled {
            Settled::Confirmed => Ok(()),
            Settled::Short => Err(BackendError::Unconfirmed("replicas did not confirm it in time")),
            Settled::Moved => match self.follow_moved(replicated, key, check).await? {
                Some(_) => Ok(()),
                None => Err(BackendError::Unconfirmed("it was lost by a change of master")),
            },
        }
    }

    /// Takes a turn that ended (its lease freed by its ending or released) out of the lapsed-lease index.
    pub(super) async fn unindex_turn(&self, session_id: &str, turn_id: &str) -> BResult<()> {
        let member = super::keys::deadline_member(session_id, turn_id);
        self.client.zrem::<(), _, _>(self.keys.turns_deadline(), member).await.map_err(|e| self.err(e))
    }

    /// Members of a deadline index whose score (Unix ms) is at or before `now_ms`, at most `max`.
    pub(super) async fn due(&self, index: &str, now_ms: i64, max: usize) -> BResult<Vec<String>> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.client.zrangebyscore(index, "-inf", now_ms as f64, false, Some((0, limit))).await.map_err(|e| self.err(e))
    }

    pub(super) fn idle_ms(&self) -> i64 {
        self.idle_ttl_s.saturating_mul(1000)
    }
}

/// Every Redis backend trait except the bus, on one pod's shared connection.
pub(super) struct RedisStore {
    pub(super) shared: Arc<Shared>,
}

impl RedisStore {
    pub(super) fn s(&self) -> &Shared {
        &self.shared
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fred_config_per_target() {
        let c = fred_config(&RedisTarget::parse("redis-cluster://:secret@h:7000").expect("parse"), "").expect("config");
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert!(c.server.is_clustered());
        let tls = RedisTarget::parse("rediss://h:6380").expect("parse");
        assert!(fred_config(&tls, "").expect("config").tls.is_some(), "rediss is TLS");
        assert!(fred_config(&RedisTarget::parse("redis://h:6379").expect("parse"), "").expect("config").tls.is_none());
        assert!(fred_config(&tls, "/no/such/ca.pem").is_err(), "an unreadable CA file is an error");
    }
}
