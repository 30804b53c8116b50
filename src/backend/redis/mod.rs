//! Redis backends (fred): sessions, event log, bus, confirmations, leases and registry on one Redis,
//! a Redis Cluster or a Sentinel-managed master.
//!
//! Key map (`P` = `redis_key_prefix`). Everything that belongs to one session carries the session id as a hash
//! tag, so a session's keys (and its sharded pub/sub channel) live on one cluster slot and one Lua script may
//! touch all of them:
//!
//! | key | type | written by | TTL |
//! |---|---|---|---|
//! | `P:{sid}:session` | string, JSON [`SessionRecord`] | `create_session` | idle, refreshed by `get_session` |
//! | `P:{sid}:seq`, `P:{sid}:log` | counter, stream (one entry per batch: id `<last seq>-0`, fields `f` first seq, `k` the call's token, `e` the events) | `append_batch` | idle, refreshed by `append_batch` |
//! | `P:{sid}:confirm` | hash `json`/`call`/`req`/`gate` (a parked turn of any [`Gate`]) | `park` | until expiry + idle |
//! | `P:{sid}:contact` | hash `name`/`email`/`phone`/`verified` | `stamp`/`set_verified` | idle, refreshed by `get_session` |
//! | `P:{sid}:otp` | hash `json` ([`OtpCode`]), `exp`, `max`, `used` | `put_code`/`attempt` | until the code expires |
//! | `P:{sid}:decided`, `P:{sid}:last` | hash call → `1`/`0` + request id; hash `call`/`decision` | `decide` | idle |
//! | `P:{sid}:lease` | string, JSON [`TurnInfo`] | `acquire`/`renew` | the lease (PX) |
//! | `P:{sid}:turn` | string, JSON [`TurnInfo`] | `acquire`/`renew` | idle (outlives the lease) |
//! | `P:{sid}:step` | hash `t` turn id, `s` seq, `j` state, `n` `<turn id>:<takeovers>` (a running turn's last durable step) | `checkpoint`/`take_over` | idle; deleted with the turn's ending |
//! | `P:conv:{cid}`, `P:conv:{cid}:msgs` | hash of the record's fields, list of JSON messages | sessions | `session.conversation_ttl_s`, refreshed by each message |
//! | `P:{sid}:ops`, `P:conv:{cid}:ops` (+ `:prev`) | hash token → reply of a write script, the last 64 and one previous generation (see `lua/once.lua`) | 60 s |
//! | `P:user:{uid}:convs`, `P:org:{org}:convs` | zset cid → updated_at_ms (a user's, an org's) | sessions | conversation TTL, refreshed on use; expired members pruned when listed |
//! | `P:settings:<org>` | string, JSON [`OrgSettings`] | `put_settings` (admin API) | none |
//! | `P:confirm:expiry` | zset `["sid","call"]` → expires_at_ms | `park` | none (pruned lazily) |
//! | `P:turns:deadline` | zset `sid|turn` → lease deadline ms | `acquire`/`renew` | none (pruned by `claim_lapsed`) |
//! | `P:sock:<conn>` | string, JSON [`SocketEntry`] | `upsert` | the heartbeat (PX) |
//! | `P:idx:{all,session,user,org}[:<id>]` | zset conn → heartbeat deadline ms | `upsert` | refreshed by `upsert` |
//! | `P:idem:<key>` | string: pending marker, then the first answer | `claim`/`complete` | the key's TTL (PX) |
//! | `P:quota:<key>:<window>` | counter of one quota window | `take`/`give_back` | the window |
//!
//! Cluster rule: a Lua script only ever touches keys of one slot. The global indexes (`P:confirm:expiry`,
//! `P:turns:deadline`, `P:user:…`, `P:idx:…`) are updated by separate single-key commands next to the
//! per-session scripts, and every reader of an index re-checks the per-session truth, so a crash between the
//! two steps leaves at worst a stale index entry that is skipped and pruned.
//!
//! Connection handling (measured facts about fred 10, see docs/architecture.md): fred has no reconnect policy by
//! default, so one is set; its pub/sub broadcast capacity defaults to 32 and is raised; subscriptions are
//! restored by us after every reconnect, followed by [`BusEvent::Resubscribed`] so consumers repair gaps from
//! the log; with Sentinel, a watcher follows `+switch-master` (and `READONLY` replies) and forces a reconnect,
//! because Sentinel leaves clients on the old master until its next periodic check demotes it (measured: up
//! to ~10 s after the promotion), and writes that reach it meanwhile are dropped by its resync. fred resends
//! a command after a dropped connection or a MOVED redirect, so every write script whose repetition would
//! show (a second seq, a second claim) records its reply under a per-call token and answers a resend from it.
//!
//! Needs Redis 6.2+ (GETEX, `SET … GET`, `ZADD GT`); Redis Cluster needs 7.0+ (sharded pub/sub).
//!
//! Files: [`url`] (the `redis_url` forms), [`keys`] (this map as code), [`scripts`] (the Lua, one file each under
//! `lua/`), [`conn`] (fred configuration, pod tasks, the state every store shares), [`durability`] (the
//! eviction-policy check, `WAIT` for replicas), one file per store
//! ([`sessions`], [`log`], [`confirms`], [`leases`], [`registry`]), [`bus`] and [`sentinel`].

mod bus;
mod confirms;
mod conn;
mod durability;
mod idempotency;
mod identity;
mod keys;
mod leases;
mod log;
mod memo;
mod quota;
mod registry;
mod replicated;
mod scripts;
mod sentinel;
mod sessions;
mod settings;
pub mod url;

use std::sync::atomic::{AtomicBool, AtomicI64};
use std::sync::Arc;

use fred::interfaces::ClientLike;
use fred::prelude::ServerConfig;
use parking_lot::Mutex;
use tokio::sync::broadcast;
use tracing::info;

use self::bus::{pump, RedisBus, BUS_CAPACITY};
use self::conn::{builder, fred_config, fred_err, spawn_connection, PodTasks, RedisStore, Shared};
use self::durability::check_eviction_policy;
use self::keys::Keys;
use self::replicated::Replicated;
use self::scripts::Scripts;
use self::sentinel::SentinelWatch;
pub use self::url::RedisTarget;
use crate::backend::{BResult, BackendError, Backends};
use crate::config::Config;

/// Connects every Redis backend for one pod.
pub async fn connect(config: &Config) -> BResult<Backends> {
    let target = RedisTarget::parse(&config.redis_url).map_err(BackendError::Config)?;
    let fred_config = fred_config(&target, &config.redis_tls_ca_file).map_err(BackendError::Config)?;
    let cluster = matches!(target, RedisTarget::Cluster(_));
    let b = builder(fred_config.clone());

    let client = b.build().map_err(fred_err)?;
    let client_task = client.init().await.map_err(fred_err)?;
    let subscriber = b.build_subscriber_client().map_err(fred_err)?;
    let subscriber_task = match subscriber.init().await {
        Ok(t) => t,
        Err(e) => {
            let _ = client.quit().await;
            return Err(fred_err(e));
        }
    };

    let tasks = PodTasks { handles: Mutex::new(Vec::new()) };
    spawn_connection(&tasks, client_task, "commands");
    spawn_connection(&tasks, subscriber_task, "subscriber");
    let replicated = if config.redis_wait_replicas > 0 {
        let durable = b.build().map_err(fred_err)?;
        spawn_connection(&tasks, durable.init().await.map_err(fred_err)?, "replicated writes");
        Some(Arc::new(Replicated::new(durable, config.redis_wait_replicas, config.redis_wait_timeout_ms, cluster)))
    } else {
        None
    };
    check_eviction_policy(&client).await;
    let (tx, _) = broadcast::channel(BUS_CAPACITY);
    let restoring = Arc::new(AtomicBool::new(false));
    tasks.push(&tokio::spawn(pump(subscriber.clone(), config.redis_key_prefix.clone(), tx.clone(), restoring.clone())));
    if let ServerConfig::Sentinel { hosts, service_name, .. } = &fred_config.server {
        let last_switch = Arc::new(Mutex::new(String::new()));
        for host in hosts {
            let watch = SentinelWatch {
                sentinel: host.clone(),
                base: fred_config.clone(),
                service: service_name.clone(),
                clients: std::iter::once(client.clone()).chain(replicated.as_ref().map(|r| r.client.clone())).collect(),
                subscriber: subscriber.clone(),
                last_switch: last_switch.clone(),
            };
            tasks.push(&tokio::spawn(watch.run()));
        }
    }

    let shared = Arc::new(Shared {
        client,
        keys: Keys { prefix: config.redis_key_prefix.clone() },
        scripts: Scripts::new(),
        cluster,
        idle_ttl_s: i64::try_from(config.session.idle_ttl_s).unwrap_or(i64::MAX).max(1),
        lease_ms: config.turn.lease_ms.max(1),
        conv_ttl_s: i64::try_from(config.session.conversation_ttl_s).unwrap_or(i64::MAX).max(1),
        conv_max_messages: config.session.conversation_max_messages.max(1),
        empty_conv_ttl_s: i64::try_from(config.session.empty_conversation_ttl_s).unwrap_or(i64::MAX).max(1),
        convs_per_user: config.session.conversations_per_user.max(1),
        log_len: config.limits.log_len.max(1),
        last_readonly_reconnect: AtomicI64::new(0),
        touched: memo::SessionMemo::default(),
        expected: memo::SessionMemo::default(),
        replicated,
        _tasks: tasks,
    });
    info!(redis_mode = target.kind(), cluster, "redis backends connected");
    let store = Arc::new(RedisStore { shared: shared.clone() });
    let bus = Arc::new(RedisBus { shared, subscriber, tx, restoring });
    Ok(Backends::from_store(store.clone(), bus, store))
}
