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
//! | `P:{sid}:seq`, `P:{sid}:log` | counter, stream (`<seq>-0` ids, field `e`) | `append` | idle, refreshed by `append` |
//! | `P:{sid}:confirm` | hash `json`/`call`/`req` | `park` | until expiry + idle |
//! | `P:{sid}:decided`, `P:{sid}:last` | hash call → `1`/`0` + request id; hash `call`/`decision` | `decide` | idle |
//! | `P:{sid}:lease` | string, JSON [`TurnInfo`] | `acquire`/`renew` | the lease (PX) |
//! | `P:{sid}:turn` | string, JSON [`TurnInfo`] | `acquire`/`renew` | idle (outlives the lease) |
//! | `P:conv:{cid}`, `P:conv:{cid}:msgs` | hash of the record's fields, list of JSON messages | sessions | none |
//! | `P:{sid}:ops`, `P:conv:{cid}:ops` | hash token → reply of a write script (see `once_lua`) | 60 s |
//! | `P:user:{uid}:convs` | zset cid → updated_at_ms | sessions | none |
//! | `P:confirm:expiry` | zset `["sid","call"]` → expires_at_ms | `park` | none (pruned lazily) |
//! | `P:turns:deadline` | zset sid → lease deadline ms | `acquire`/`renew` | none (pruned by `claim_lapsed`) |
//! | `P:sock:<conn>` | string, JSON [`SocketEntry`] | `upsert` | the heartbeat (PX) |
//! | `P:idx:{all,session,user,org}[:<id>]` | zset conn → heartbeat deadline ms | `upsert` | refreshed by `upsert` |
//!
//! Cluster rule: a Lua script only ever touches keys of one slot. The global indexes (`P:confirm:expiry`,
//! `P:turns:deadline`, `P:user:…`, `P:idx:…`) are updated by separate single-key commands next to the
//! per-session scripts, and every reader of an index re-checks the per-session truth, so a crash between the
//! two steps leaves at worst a stale index entry that is skipped and pruned.
//!
//! Connection handling (measured facts about fred 10, see DESIGN.md §5): fred has no reconnect policy by
//! default, so one is set; its pub/sub broadcast capacity defaults to 32 and is raised; subscriptions are
//! restored by us after every reconnect, followed by [`BusEvent::Resubscribed`] so consumers repair gaps from
//! the log; with Sentinel, a watcher follows `+switch-master` (and `READONLY` replies) and forces a reconnect,
//! because Sentinel leaves clients on the old master until its next periodic check demotes it (measured: up
//! to ~10 s after the promotion), and writes that reach it meanwhile are dropped by its resync. fred resends
//! a command after a dropped connection or a MOVED redirect, so every write script whose repetition would
//! show (a second seq, a second claim) records its reply under a per-call token and answers a resend from it.
//!
//! Needs Redis 6.2+ (GETEX, `SET … GET`, `ZADD GT`); Redis Cluster needs 7.0+ (sharded pub/sub).

use std::collections::{BTreeSet, HashMap};
use std::sync::atomic::{AtomicI64, Ordering as AtomicOrdering};
use std::time::Duration;

use fred::clients::SubscriberClient;
use fred::interfaces::{
    ClientLike, EventInterface, HashesInterface, KeysInterface, ListInterface, LuaInterface, PubsubInterface,
    SortedSetsInterface, StreamsInterface,
};
use fred::prelude::{Builder, Client, Error as FredError, ReconnectPolicy, ServerConfig};
use fred::types::config::{Config as FredConfig, Options, Server, UnresponsiveConfig};
use fred::types::scripts::Script;
use fred::types::sorted_sets::{Ordering as ZOrdering, ZRange, ZRangeBound, ZRangeKind};
use fred::types::{ClusterHash, CustomCommand, Expiration, Value};
use futures_util::future::join_all;
use parking_lot::Mutex;
use tokio::task::{AbortHandle, JoinHandle};
use tracing::{debug, info, warn};

use super::*;
use crate::util::now_ms;

/// A parsed `redis_url`.
#[derive(Debug, Clone, PartialEq)]
pub enum RedisTarget {
    /// `redis://` or `rediss://`.
    Single(String),
    /// `redis-cluster://host:port[,host:port…]`.
    Cluster(String),
    /// `redis-sentinel://host:port[,host:port…]/service_name`.
    Sentinel(String),
}

impl RedisTarget {
    pub fn parse(url: &str) -> Result<RedisTarget, String> {
        let (scheme, rest) = url.split_once("://").ok_or("expected a URL such as redis://host:6379")?;
        if rest.is_empty() {
            return Err("missing host".into());
        }
        match scheme {
            "redis" | "rediss" => Ok(RedisTarget::Single(url.to_string())),
            "redis-cluster" | "rediss-cluster" => {
                UrlParts::parse(url, None)?;
                Ok(RedisTarget::Cluster(url.to_string()))
            }
            "redis-sentinel" | "rediss-sentinel" => {
                let path = rest.split_once('/').map(|(_, p)| p).unwrap_or("");
                if path.is_empty() {
                    return Err(
                        "redis-sentinel:// needs the master name as path, e.g. redis-sentinel://host:26379/mymaster"
                            .into(),
                    );
                }
                UrlParts::parse(url, Some(26379))?;
                Ok(RedisTarget::Sentinel(url.to_string()))
            }
            other => Err(format!("unsupported scheme `{other}` (redis, rediss, redis-cluster, redis-sentinel)")),
        }
    }

    fn url(&self) -> &str {
        match self {
            RedisTarget::Single(u) | RedisTarget::Cluster(u) | RedisTarget::Sentinel(u) => u,
        }
    }

    /// The fred client configuration for this target.
    fn fred_config(&self) -> Result<FredConfig, String> {
        if self.url().starts_with("rediss") {
            // fred is built without a TLS feature: it would silently connect in plain text.
            return Err("TLS (rediss://) is not supported by this build; use redis:// inside a trusted network".into());
        }
        match self {
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
}

/// `scheme://[user[:password]@]host[:port][,host[:port]…][/path]`, the multi-host form fred's own URL parser
/// does not read (it wants `?node=`).
struct UrlParts {
    username: Option<String>,
    password: Option<String>,
    hosts: Vec<(String, u16)>,
    path: String,
}

impl UrlParts {
    fn parse(url: &str, default_port: Option<u16>) -> Result<UrlParts, String> {
        let (_, rest) = url.split_once("://").ok_or("expected scheme://host:port")?;
        if rest.contains('?') {
            return Err("query parameters are not supported in redis_url".into());
        }
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        let (userinfo, hostlist) = match authority.rsplit_once('@') {
            Some((u, h)) => (Some(u), h),
            None => (None, authority),
        };
        let (username, password) = match userinfo {
            None => (None, None),
            Some(u) => match u.split_once(':') {
                Some((user, pass)) => {
                    (Some(percent_decode(user)?).filter(|s| !s.is_empty()), Some(percent_decode(pass)?))
                }
                None => (Some(percent_decode(u)?).filter(|s| !s.is_empty()), None),
            },
        };
        let mut hosts = Vec::new();
        for item in hostlist.split(',') {
            hosts.push(parse_host_port(item, default_port)?);
        }
        Ok(UrlParts { username, password, hosts, path: path.trim_end_matches('/').to_string() })
    }
}

fn parse_host_port(item: &str, default_port: Option<u16>) -> Result<(String, u16), String> {
    let item = item.trim();
    let (host, port) = if let Some(v6) = item.strip_prefix('[') {
        let (host, tail) = v6.split_once(']').ok_or_else(|| format!("bad IPv6 host `{item}`"))?;
        (host, tail.strip_prefix(':'))
    } else {
        match item.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (item, None),
        }
    };
    if host.is_empty() {
        return Err(format!("missing host in `{item}`"));
    }
    let port = match (port, default_port) {
        (Some(p), _) => p.parse::<u16>().map_err(|_| format!("bad port in `{item}`"))?,
        (None, Some(d)) => d,
        (None, None) => return Err(format!("`{item}` needs a port (host:port)")),
    };
    Ok((host.to_string(), port))
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s.get(i + 1..i + 3).ok_or("bad percent-encoding in redis_url")?;
            out.push(u8::from_str_radix(hex, 16).map_err(|_| "bad percent-encoding in redis_url")?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "redis_url credentials are not UTF-8".to_string())
}

// ---------------------------------------------------------------------------------------------------------
// Lua scripts. Each touches the keys of one session (one slot); KEYS are always passed explicitly.
// ---------------------------------------------------------------------------------------------------------

/// KEYS: seq, log. ARGV: event, log_len, idle_ttl_s, channel, publish command (PUBLISH or SPUBLISH).
/// Assigns the next seq, appends with id `<seq>-0`, trims exactly, refreshes TTLs and publishes, all atomically
/// so the log and the bus agree on order and seq has no gaps.
const APPEND_LUA: &str = r#"
local seq = redis.call('INCR', KEYS[1])
if seq == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  -- The counter vanished while the stream survived: continue after the stream so ids stay increasing.
  local last = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if last[1] then
    seq = tonumber(string.match(last[1][1], '^(%d+)')) + 1
    redis.call('SET', KEYS[1], string.format('%d', seq))
  end
end
local id = string.format('%d', seq)
redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[2], id .. '-0', 'e', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call(ARGV[5], ARGV[4], id .. ':' .. ARGV[1])
return seq
"#;

/// KEYS: seq, log. ARGV: log_len, idle_ttl_s, channel, publish command, then the events.
/// Like APPEND_LUA for several events: consecutive seqs, one XADD each, one publish of `<seq>:<event>` lines.
/// Returns the first seq.
const APPEND_BATCH_LUA: &str = r#"
local n = #ARGV - 5
local last = redis.call('INCRBY', KEYS[1], n)
local first = last - n + 1
if first == 1 and redis.call('EXISTS', KEYS[2]) == 1 then
  local tail = redis.call('XREVRANGE', KEYS[2], '+', '-', 'COUNT', 1)
  if tail[1] then
    first = tonumber(string.match(tail[1][1], '^(%d+)')) + 1
    last = first + n - 1
    redis.call('SET', KEYS[1], string.format('%d', last))
  end
end
local lines = {}
for i = 1, n do
  local id = string.format('%d', first + i - 1)
  redis.call('XADD', KEYS[2], 'MAXLEN', ARGV[1], id .. '-0', 'e', ARGV[4 + i])
  lines[i] = id .. ':' .. ARGV[4 + i]
end
redis.call('EXPIRE', KEYS[1], ARGV[2])
redis.call('EXPIRE', KEYS[2], ARGV[2])
redis.call(ARGV[4], ARGV[3], table.concat(lines, '\n'))
return first
"#;

/// KEYS: seq, log. Returns {oldest retained, latest}, {0, 0} when the session has no events.
const BOUNDS_LUA: &str = r#"
local latest = tonumber(redis.call('GET', KEYS[1]) or '0')
if latest == 0 then return {0, 0} end
local first = redis.call('XRANGE', KEYS[2], '-', '+', 'COUNT', 1)
local oldest = latest + 1
if first[1] then oldest = tonumber(string.match(first[1][1], '^(%d+)')) end
return {oldest, latest}
"#;

/// KEYS: conv hash, msgs list. ARGV: message JSON, now_ms, inbound (1/0), title from the message.
/// Returns the conversation's user id (for the per-user index), or nil when the conversation does not exist.
const APPEND_MESSAGE_LUA: &str = r#"
redis.call('RPUSH', KEYS[2], ARGV[1])
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], 'message_count', 1)
redis.call('HSET', KEYS[1], 'updated_at_ms', ARGV[2])
if ARGV[3] == '1' and (redis.call('HGET', KEYS[1], 'title') or '') == '' then
  redis.call('HSET', KEYS[1], 'title', ARGV[4])
end
return redis.call('HGET', KEYS[1], 'user_id')
"#;

/// KEYS: msgs list. ARGV: before index ('' = from the newest), limit. Returns {start index, messages…} oldest
/// first, read atomically so the index and the page agree.
const MESSAGES_PAGE_LUA: &str = r#"
local len = redis.call('LLEN', KEYS[1])
local stop = len
if ARGV[1] ~= '' then stop = math.min(tonumber(ARGV[1]), len) end
local start = math.max(stop - tonumber(ARGV[2]), 0)
local out = {start}
if stop > start then
  local items = redis.call('LRANGE', KEYS[1], start, stop - 1)
  for i = 1, #items do out[#out + 1] = items[i] end
end
return out
"#;

/// KEYS: conv hash. ARGV: title. 1 when renamed, 0 when the conversation does not exist.
const RENAME_LUA: &str = r#"
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'title', ARGV[1])
return 1
"#;

/// KEYS: confirm hash. ARGV: parked JSON, call id, request id, ttl ms. Replaces any previous parked turn.
const PARK_LUA: &str = r#"
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'json', ARGV[1], 'call', ARGV[2], 'req', ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
return 1
"#;

/// KEYS: confirm hash, decided hash, last hash. ARGV: call id ('' = the pending one), approved (1/0), ttl s.
/// First decision wins: the parked record is removed by the winner; repeats read the decided hash.
/// Returns {'claimed', json, call} | {'already', call, flag..request_id} | {'none'}.
const DECIDE_LUA: &str = r#"
if ARGV[1] ~= '' then
  local prev = redis.call('HGET', KEYS[2], ARGV[1])
  if prev then return {'already', ARGV[1], prev} end
end
local call = redis.call('HGET', KEYS[1], 'call')
if not call then return {'none'} end
if ARGV[1] ~= '' and ARGV[1] ~= call then return {'none'} end
local json = redis.call('HGET', KEYS[1], 'json') or ''
local req = redis.call('HGET', KEYS[1], 'req') or ''
redis.call('DEL', KEYS[1])
local decision = ARGV[2] .. req
redis.call('HSET', KEYS[2], call, decision)
redis.call('EXPIRE', KEYS[2], ARGV[3])
redis.call('HSET', KEYS[3], 'call', call, 'decision', decision)
redis.call('EXPIRE', KEYS[3], ARGV[3])
return {'claimed', json, call}
"#;

/// KEYS: confirm hash. Removes the parked turn and returns {json, call}, or {} when none: exactly one caller
/// gets it.
const TAKE_LUA: &str = r#"
local json = redis.call('HGET', KEYS[1], 'json')
if not json then return {} end
local call = redis.call('HGET', KEYS[1], 'call') or ''
redis.call('DEL', KEYS[1])
return {json, call}
"#;

/// KEYS: lease, turn record. ARGV: TurnInfo JSON, lease ms, idle ttl s. 1 when the slot was free.
const ACQUIRE_LUA: &str = r#"
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[3])
return 1
"#;

/// KEYS: lease, turn record. ARGV: turn id, TurnInfo JSON, lease ms, idle ttl s. Compare-and-set on turn id.
const RENEW_LUA: &str = r#"
local cur = redis.call('GET', KEYS[1])
if not cur or cjson.decode(cur)['turn_id'] ~= ARGV[1] then return 0 end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('SET', KEYS[2], ARGV[2], 'EX', ARGV[4])
return 1
"#;

/// KEYS: lease, turn record. ARGV: turn id. Deletes whichever of the two still belongs to that turn.
const RELEASE_LUA: &str = r#"
local released = 0
local cur = redis.call('GET', KEYS[1])
if cur and cjson.decode(cur)['turn_id'] == ARGV[1] then
  redis.call('DEL', KEYS[1])
  released = 1
end
local rec = redis.call('GET', KEYS[2])
if rec and cjson.decode(rec)['turn_id'] == ARGV[1] then
  redis.call('DEL', KEYS[2])
  released = 1
end
return released
"#;

/// KEYS: lease, turn record. Run by the caller that won the deadline-index ZREM. Returns {'alive', pttl} when a
/// lease still runs (a new turn took the slot), {'claimed', json} when the lapsed turn is handed over, {'gone'}.
const CLAIM_LUA: &str = r#"
local ttl = redis.call('PTTL', KEYS[1])
if ttl ~= -2 then return {'alive', ttl} end
local rec = redis.call('GET', KEYS[2])
if not rec then return {'gone'} end
redis.call('DEL', KEYS[2])
return {'claimed', rec}
"#;

/// KEYS: one index zset. ARGV: deadline ms, connection id, now ms, keep ms. Adds the member, prunes expired
/// members and keeps the index alive at least `keep` ms, so an index never outlives its members by much and
/// never expires before them.
const INDEX_ADD_LUA: &str = r#"
redis.call('ZADD', KEYS[1], ARGV[1], ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', ARGV[3])
if redis.call('PTTL', KEYS[1]) < tonumber(ARGV[4]) then redis.call('PEXPIRE', KEYS[1], ARGV[4]) end
return 1
"#;

/// How many recent replies a slot's ops hash keeps, and for how long after its last write. fred resends a
/// command whose connection dropped after the reconnect (seconds later at most, bounded by the command
/// timeout), so this only has to outlive that window.
const OPS_CAP: u32 = 1000;
const OPS_TTL_S: u32 = 60;

/// Makes a write script safe to resend: the last KEY is an ops hash (same slot) and the last ARGV a token
/// unique to this call. A resend of the same call (fred retries after a dropped connection, and re-sends after
/// a MOVED redirect) returns the recorded reply instead of appending, deciding or claiming twice.
fn once_lua(body: &str) -> String {
    format!(
        r#"
local ops = KEYS[#KEYS]
local token = ARGV[#ARGV]
local cached = redis.call('HGET', ops, token)
if cached then return cjson.decode(cached) end
local function run()
{body}
end
local result = run()
if redis.call('HLEN', ops) >= {OPS_CAP} then redis.call('DEL', ops) end
redis.call('HSET', ops, token, cjson.encode(result))
redis.call('EXPIRE', ops, {OPS_TTL_S})
return result
"#
    )
}

/// The ops hash of the slot `key` belongs to: the key up to its hash tag, plus `:ops`.
fn ops_key(key: &str) -> String {
    match key.find('}') {
        Some(end) => format!("{}:ops", &key[..=end]),
        None => format!("{key}:ops"),
    }
}

/// The compiled scripts (hashes computed once; loaded lazily on NOSCRIPT).
struct Scripts {
    append: Script,
    append_batch: Script,
    bounds: Script,
    append_message: Script,
    messages_page: Script,
    rename: Script,
    park: Script,
    decide: Script,
    take: Script,
    acquire: Script,
    renew: Script,
    release: Script,
    claim: Script,
    index_add: Script,
}

impl Scripts {
    fn new() -> Self {
        Self {
            append: Script::from_lua(once_lua(APPEND_LUA)),
            append_batch: Script::from_lua(once_lua(APPEND_BATCH_LUA)),
            bounds: Script::from_lua(BOUNDS_LUA),
            append_message: Script::from_lua(once_lua(APPEND_MESSAGE_LUA)),
            messages_page: Script::from_lua(MESSAGES_PAGE_LUA),
            rename: Script::from_lua(RENAME_LUA),
            park: Script::from_lua(PARK_LUA),
            decide: Script::from_lua(once_lua(DECIDE_LUA)),
            take: Script::from_lua(once_lua(TAKE_LUA)),
            acquire: Script::from_lua(once_lua(ACQUIRE_LUA)),
            renew: Script::from_lua(RENEW_LUA),
            release: Script::from_lua(once_lua(RELEASE_LUA)),
            claim: Script::from_lua(once_lua(CLAIM_LUA)),
            index_add: Script::from_lua(INDEX_ADD_LUA),
        }
    }
}

/// Key names; see the module docs for the map.
struct Keys {
    prefix: String,
}

impl Keys {
    fn session_key(&self, sid: &str, what: &str) -> String {
        format!("{}:{{{sid}}}:{what}", self.prefix)
    }
    fn conv(&self, cid: &str) -> String {
        format!("{}:conv:{{{cid}}}", self.prefix)
    }
    fn msgs(&self, cid: &str) -> String {
        format!("{}:conv:{{{cid}}}:msgs", self.prefix)
    }
    fn user_convs(&self, uid: &str) -> String {
        format!("{}:user:{{{uid}}}:convs", self.prefix)
    }
    fn confirm_expiry(&self) -> String {
        format!("{}:confirm:expiry", self.prefix)
    }
    fn turns_deadline(&self) -> String {
        format!("{}:turns:deadline", self.prefix)
    }
    fn sock(&self, conn: &str) -> String {
        format!("{}:sock:{conn}", self.prefix)
    }
    fn idx(&self, kind: &str, id: &str) -> String {
        format!("{}:idx:{kind}:{id}", self.prefix)
    }
    fn idx_all(&self) -> String {
        format!("{}:idx:all", self.prefix)
    }
}

/// Background tasks of one pod's Redis connections (fred's connection tasks, the bus pump, Sentinel
/// watchers). Owned jointly by the pod's backend handles; the last one dropped aborts them, which closes the
/// pod's connections. Dropping a `JoinHandle` would only detach a task, hence abort handles.
struct PodTasks {
    /// Abort handles of every task the pod started; pushed while connecting, drained on drop.
    handles: Mutex<Vec<AbortHandle>>,
}

impl PodTasks {
    fn push<T>(&self, handle: &JoinHandle<T>) {
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

/// Aborts a task when dropped: ties a helper connection's task to the task that uses it.
struct AbortOnDrop(AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// State shared by all of one pod's Redis backends.
struct Shared {
    /// The pod's command connection(s), multiplexed by fred; shared by every backend of the pod.
    client: Client,
    keys: Keys,
    scripts: Scripts,
    /// Redis Cluster: session channels use sharded pub/sub.
    cluster: bool,
    idle_ttl_s: i64,
    log_len: usize,
    /// Last time (ms) a READONLY reply forced a reconnect; rate-limits reconnect storms.
    last_readonly_reconnect: AtomicI64,
    /// The pod's background tasks: alive while any backend handle exists, aborted when the last one goes.
    _tasks: PodTasks,
}

fn fred_err(e: FredError) -> BackendError {
    BackendError::Redis(e.to_string())
}

fn corrupt(what: &str, e: impl std::fmt::Display) -> BackendError {
    BackendError::Corrupt(format!("{what}: {e}"))
}

/// A reply value as text; fred may hand bulk strings over as bytes.
fn text(v: &Value) -> Option<String> {
    match v {
        Value::Null => None,
        other => other.as_str_lossy().map(|c| c.into_owned()),
    }
}

fn int(v: &Value) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        other => other.as_i64(),
    }
}

fn array(v: Value) -> Vec<Value> {
    match v {
        Value::Array(items) => items,
        Value::Null => Vec::new(),
        other => vec![other],
    }
}

/// Parses `<seq>-0`.
fn seq_of(id: &str) -> Option<u64> {
    id.split_once('-').map(|(s, _)| s).unwrap_or(id).parse().ok()
}

impl Shared {
    /// Maps a fred error, and reacts to `READONLY`: the connection points at a demoted master (a failover
    /// happened without the connection dropping), so force a reconnect, which asks Sentinel for the new master.
    fn err(&self, e: FredError) -> BackendError {
        if e.details().starts_with("READONLY") {
            let now = now_ms();
            let last = self.last_readonly_reconnect.load(AtomicOrdering::Relaxed);
            if now - last > 1_000
                && self
                    .last_readonly_reconnect
                    .compare_exchange(last, now, AtomicOrdering::Relaxed, AtomicOrdering::Relaxed)
                    .is_ok()
            {
                warn!("redis answered READONLY: reconnecting to find the current master");
                let client = self.client.clone();
                tokio::spawn(async move {
                    if let Err(e) = client.force_reconnection().await {
                        warn!(error = %e, "forced reconnect after READONLY failed");
                    }
                });
            }
        }
        fred_err(e)
    }

    /// EVALSHA, loading the script on NOSCRIPT (a restarted or failed-over server has an empty script cache).
    async fn eval(&self, script: &Script, keys: Vec<String>, args: Vec<String>) -> BResult<Value> {
        // Shared strings: the copy kept for a NOSCRIPT retry costs a reference count per argument, not a copy
        // of every event of an append.
        let keys: Vec<fred::types::Key> = keys.into_iter().map(Into::into).collect();
        let args: Vec<Value> = args.into_iter().map(|a| Value::String(a.into())).collect();
        match self.client.evalsha::<Value, _, _, _>(script.sha1().clone(), keys.clone(), args.clone()).await {
            Err(e) if e.details().starts_with("NOSCRIPT") => {
                script.load(&self.client).await.map_err(|e| self.err(e))?;
                self.client.evalsha(script.sha1().clone(), keys, args).await.map_err(|e| self.err(e))
            }
            other => other.map_err(|e| self.err(e)),
        }
    }

    /// [`Shared::eval`] for a script built by [`once_lua`]: adds the ops key (same slot as `keys[0]`) and a fresh
    /// token, so fred's resend of the same command after a dropped connection (or a MOVED redirect) returns
    /// the first run's reply instead of running it again.
    async fn eval_once(&self, script: &Script, mut keys: Vec<String>, mut args: Vec<String>) -> BResult<Value> {
        let first = keys.first().ok_or_else(|| corrupt("script", "no key"))?;
        keys.push(ops_key(first));
        args.push(uuid::Uuid::new_v4().simple().to_string());
        self.eval(script, keys, args).await
    }

    /// Records when a session's turn lease lapses, for `claim_lapsed` on any pod.
    async fn index_turn_deadline(&self, session_id: &str, deadline_ms: i64) -> BResult<()> {
        self.client
            .zadd::<(), _, _>(self.keys.turns_deadline(), None, None, false, false, (deadline_ms as f64, session_id))
            .await
            .map_err(|e| self.err(e))
    }

    /// Members of a deadline index whose score (Unix ms) is at or before `now_ms`, at most `max`.
    async fn due(&self, index: &str, now_ms: i64, max: usize) -> BResult<Vec<String>> {
        let limit = i64::try_from(max).unwrap_or(i64::MAX);
        self.client.zrangebyscore(index, "-inf", now_ms as f64, false, Some((0, limit))).await.map_err(|e| self.err(e))
    }

    fn idle_ms(&self) -> i64 {
        self.idle_ttl_s.saturating_mul(1000)
    }
}

/// Every Redis backend trait except the bus, on one pod's shared connection.
struct RedisStore {
    shared: Arc<Shared>,
}

impl RedisStore {
    fn s(&self) -> &Shared {
        &self.shared
    }
}

fn conv_from_hash(map: HashMap<String, String>) -> BResult<Option<ConversationRecord>> {
    if map.is_empty() {
        return Ok(None);
    }
    let field = |k: &str| map.get(k).cloned().ok_or_else(|| corrupt("conversation", format!("missing field {k}")));
    let num = |k: &str| -> BResult<i64> { field(k)?.parse::<i64>().map_err(|e| corrupt("conversation", e)) };
    Ok(Some(ConversationRecord {
        conversation_id: field("conversation_id")?,
        user_id: field("user_id")?,
        org_id: field("org_id")?,
        agent_id: field("agent_id")?,
        title: map.get("title").cloned().unwrap_or_default(),
        created_at_ms: num("created_at_ms")?,
        updated_at_ms: num("updated_at_ms")?,
        message_count: u64::try_from(num("message_count")?).map_err(|e| corrupt("conversation", e))?,
    }))
}

fn parse_json<T: serde::de::DeserializeOwned>(what: &str, s: &str) -> BResult<T> {
    serde_json::from_str(s).map_err(|e| corrupt(what, e))
}

fn to_json<T: Serialize>(v: &T) -> BResult<String> {
    serde_json::to_string(v).map_err(|e| corrupt("serialize", e))
}

#[async_trait]
impl SessionStore for RedisStore {
    async fn create_session(
        &self,
        session: &SessionRecord,
        new_conversation: Option<&ConversationRecord>,
    ) -> BResult<()> {
        let s = self.s();
        let key = s.keys.session_key(&session.session_id, "session");
        s.client
            .set::<(), _, _>(key, to_json(session)?, Some(Expiration::EX(s.idle_ttl_s)), None, false)
            .await
            .map_err(|e| s.err(e))?;
        if let Some(c) = new_conversation {
            let fields: Vec<(&str, String)> = vec![
                ("conversation_id", c.conversation_id.clone()),
                ("user_id", c.user_id.clone()),
                ("org_id", c.org_id.clone()),
                ("agent_id", c.agent_id.clone()),
                ("title", c.title.clone()),
                ("created_at_ms", c.created_at_ms.to_string()),
                ("updated_at_ms", c.updated_at_ms.to_string()),
                ("message_count", c.message_count.to_string()),
            ];
            s.client.hset::<(), _, _>(s.keys.conv(&c.conversation_id), fields).await.map_err(|e| s.err(e))?;
            s.client
                .zadd::<(), _, _>(
                    s.keys.user_convs(&c.user_id),
                    None,
                    None,
                    false,
                    false,
                    (c.updated_at_ms as f64, c.conversation_id.as_str()),
                )
                .await
                .map_err(|e| s.err(e))?;
        }
        Ok(())
    }

    async fn get_session(&self, session_id: &str) -> BResult<Option<SessionRecord>> {
        let s = self.s();
        let key = s.keys.session_key(session_id, "session");
        // GETEX reads and refreshes the idle TTL in one step (fred 10 has no typed GETEX).
        let getex = CustomCommand::new_static("GETEX", ClusterHash::FirstKey, false);
        let raw: Option<String> =
            s.client.custom(getex, vec![key, "EX".into(), s.idle_ttl_s.to_string()]).await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("session", &r)).transpose()
    }

    async fn get_conversation(&self, conversation_id: &str) -> BResult<Option<ConversationRecord>> {
        let s = self.s();
        let map: HashMap<String, String> =
            s.client.hgetall(s.keys.conv(conversation_id)).await.map_err(|e| s.err(e))?;
        conv_from_hash(map)
    }

    async fn append_message(&self, conversation_id: &str, message: &StoredMessage, now_ms: i64) -> BResult<()> {
        let s = self.s();
        let inbound = if message.direction == "inbound" { "1" } else { "0" };
        let reply = s
            .eval_once(
                &s.scripts.append_message,
                vec![s.keys.conv(conversation_id), s.keys.msgs(conversation_id)],
                vec![to_json(message)?, now_ms.to_string(), inbound.into(), crate::util::title_from(&message.text)],
            )
            .await?;
        if let Some(user_id) = text(&reply) {
            // Separate command: the user index lives on another slot. GT keeps it monotonic when two pods race.
            s.client
                .zadd::<(), _, _>(
                    s.keys.user_convs(&user_id),
                    None,
                    Some(ZOrdering::GreaterThan),
                    false,
                    false,
                    (now_ms as f64, conversation_id),
                )
                .await
                .map_err(|e| s.err(e))?;
        }
        Ok(())
    }

    async fn messages_page(&self, conversation_id: &str, before: Option<u64>, limit: usize) -> BResult<MessagePage> {
        let s = self.s();
        let before = before.map(|b| b.to_string()).unwrap_or_default();
        let reply = s
            .eval(&s.scripts.messages_page, vec![s.keys.msgs(conversation_id)], vec![before, limit.to_string()])
            .await?;
        let mut items = array(reply).into_iter();
        let start = items.next().as_ref().and_then(int).ok_or_else(|| corrupt("messages page", "no start index"))?;
        let mut messages = items
            .map(|v| text(&v).ok_or_else(|| corrupt("message", "not text")).and_then(|t| parse_json("message", &t)))
            .collect::<BResult<Vec<StoredMessage>>>()?;
        messages.reverse();
        let start = u64::try_from(start).map_err(|e| corrupt("messages page", e))?;
        Ok(MessagePage { messages, oldest_index: start, has_more: start > 0 })
    }

    async fn recent_messages(&self, conversation_id: &str, n: usize) -> BResult<Vec<StoredMessage>> {
        if n == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let from = -(i64::try_from(n).unwrap_or(i64::MAX));
        let raw: Vec<String> = s.client.lrange(s.keys.msgs(conversation_id), from, -1).await.map_err(|e| s.err(e))?;
        raw.iter().map(|r| parse_json("message", r)).collect()
    }

    async fn list_conversations(&self, user_id: &str, offset: usize, limit: usize) -> BResult<ConversationPage> {
        let s = self.s();
        let key = s.keys.user_convs(user_id);
        let total: u64 = s.client.zcard(&key).await.map_err(|e| s.err(e))?;
        if limit == 0 {
            return Ok(ConversationPage { conversations: Vec::new(), has_more: total as usize > offset });
        }
        let start = i64::try_from(offset).unwrap_or(i64::MAX);
        let stop = i64::try_from(offset.saturating_add(limit) - 1).unwrap_or(i64::MAX);
        // ZREVRANGE orders equal scores by member descending: updated desc, then conversation id desc, as memory.
        let ids: Vec<String> = s.client.zrevrange(&key, start, stop, false).await.map_err(|e| s.err(e))?;
        let fetched = join_all(ids.iter().map(|cid| self.get_conversation(cid))).await;
        let mut conversations = Vec::with_capacity(ids.len());
        for c in fetched {
            if let Some(c) = c? {
                conversations.push(c);
            }
        }
        let has_more = total as usize > offset + ids.len();
        Ok(ConversationPage { conversations, has_more })
    }

    async fn rename_conversation(&self, conversation_id: &str, title: &str) -> BResult<bool> {
        let s = self.s();
        let reply = s.eval(&s.scripts.rename, vec![s.keys.conv(conversation_id)], vec![title.to_string()]).await?;
        Ok(int(&reply) == Some(1))
    }
}

#[async_trait]
impl EventLog for RedisStore {
    async fn append(&self, session_id: &str, event: &str) -> BResult<u64> {
        let s = self.s();
        let channel = Channel::Session(session_id.to_string()).name(&s.keys.prefix);
        let publish = if s.cluster { "SPUBLISH" } else { "PUBLISH" };
        let reply = s
            .eval_once(
                &s.scripts.append,
                vec![s.keys.session_key(session_id, "seq"), s.keys.session_key(session_id, "log")],
                vec![event.to_string(), s.log_len.to_string(), s.idle_ttl_s.to_string(), channel, publish.into()],
            )
            .await?;
        int(&reply).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| corrupt("append", "no seq returned"))
    }

    async fn append_batch(&self, session_id: &str, events: Vec<String>) -> BResult<u64> {
        if events.is_empty() {
            return Ok(0);
        }
        let s = self.s();
        let channel = Channel::Session(session_id.to_string()).name(&s.keys.prefix);
        let publish = if s.cluster { "SPUBLISH" } else { "PUBLISH" };
        let mut args = Vec::with_capacity(events.len() + 4);
        args.extend([s.log_len.to_string(), s.idle_ttl_s.to_string(), channel, publish.to_string()]);
        args.extend(events);
        let reply = s
            .eval_once(
                &s.scripts.append_batch,
                vec![s.keys.session_key(session_id, "seq"), s.keys.session_key(session_id, "log")],
                args,
            )
            .await?;
        int(&reply).and_then(|n| u64::try_from(n).ok()).ok_or_else(|| corrupt("append_batch", "no seq returned"))
    }

    async fn read_after(&self, session_id: &str, after: u64, max: usize) -> BResult<Vec<(u64, String)>> {
        if max == 0 || after == u64::MAX {
            return Ok(Vec::new());
        }
        let s = self.s();
        // fred rejects counts that do not fit its signed integer type; no log is that long anyway.
        let count = u64::try_from(max).unwrap_or(u64::MAX).min(i32::MAX as u64);
        let start = format!("{}-0", after + 1);
        let reply: Value = s
            .client
            .xrange(s.keys.session_key(session_id, "log"), start, "+", Some(count))
            .await
            .map_err(|e| s.err(e))?;
        let mut out = Vec::new();
        for entry in array(reply) {
            let mut parts = array(entry).into_iter();
            let id = parts.next().as_ref().and_then(text).ok_or_else(|| corrupt("log entry", "no id"))?;
            let seq = seq_of(&id).ok_or_else(|| corrupt("log entry", format!("bad id {id}")))?;
            let fields = parts.next().map(array).unwrap_or_default();
            // Fields come as [name, value, …]; the event is the value of `e`.
            let event = fields
                .chunks(2)
                .find(|kv| kv.first().and_then(text).as_deref() == Some("e"))
                .and_then(|kv| kv.get(1).and_then(text))
                .ok_or_else(|| corrupt("log entry", format!("no event in {id}")))?;
            out.push((seq, event));
        }
        Ok(out)
    }

    async fn bounds(&self, session_id: &str) -> BResult<(u64, u64)> {
        let s = self.s();
        let reply = s
            .eval(
                &s.scripts.bounds,
                vec![s.keys.session_key(session_id, "seq"), s.keys.session_key(session_id, "log")],
                vec![],
            )
            .await?;
        let v = array(reply);
        let get = |i: usize| v.get(i).and_then(int).and_then(|n| u64::try_from(n).ok());
        match (get(0), get(1)) {
            (Some(o), Some(l)) => Ok((o, l)),
            _ => Err(corrupt("bounds", "unexpected reply")),
        }
    }
}

/// The expiry index member of one parked call: both ids, so a stale entry (the call was replaced or decided)
/// is recognised and never removes a newer park of the same session.
fn expiry_member(session_id: &str, call_id: &str) -> String {
    serde_json::json!([session_id, call_id]).to_string()
}

#[async_trait]
impl ConfirmStore for RedisStore {
    async fn park(&self, parked: &ParkedTurn) -> BResult<()> {
        let s = self.s();
        // The record outlives its deadline so a sweeper that was down still finds it and fails it closed.
        let ttl_ms = (parked.expires_at_ms - now_ms()).max(0).saturating_add(s.idle_ms()).max(1_000);
        s.eval(
            &s.scripts.park,
            vec![s.keys.session_key(&parked.session_id, "confirm")],
            vec![to_json(parked)?, parked.call.tool_call_id.clone(), parked.request_id.clone(), ttl_ms.to_string()],
        )
        .await?;
        s.client
            .zadd::<(), _, _>(
                s.keys.confirm_expiry(),
                None,
                None,
                false,
                false,
                (parked.expires_at_ms as f64, expiry_member(&parked.session_id, &parked.call.tool_call_id)),
            )
            .await
            .map_err(|e| s.err(e))
    }

    async fn get(&self, session_id: &str) -> BResult<Option<ParkedTurn>> {
        let s = self.s();
        let raw: Option<String> =
            s.client.hget(s.keys.session_key(session_id, "confirm"), "json").await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("parked turn", &r)).transpose()
    }

    async fn decide(&self, session_id: &str, tool_call_id: Option<&str>, approved: bool) -> BResult<Decided> {
        let s = self.s();
        let reply = s
            .eval_once(
                &s.scripts.decide,
                vec![
                    s.keys.session_key(session_id, "confirm"),
                    s.keys.session_key(session_id, "decided"),
                    s.keys.session_key(session_id, "last"),
                ],
                vec![
                    tool_call_id.unwrap_or("").to_string(),
                    if approved { "1" } else { "0" }.into(),
                    s.idle_ttl_s.to_string(),
                ],
            )
            .await?;
        let v: Vec<Option<String>> = array(reply).iter().map(text).collect();
        match v.first().cloned().flatten().as_deref() {
            Some("claimed") => {
                let json = v.get(1).cloned().flatten().ok_or_else(|| corrupt("decide", "no record"))?;
                let parked: ParkedTurn = parse_json("parked turn", &json)?;
                let call = v.get(2).cloned().flatten().unwrap_or_default();
                let removed = s
                    .client
                    .zrem::<(), _, _>(s.keys.confirm_expiry(), expiry_member(session_id, &call))
                    .await
                    .map_err(|e| s.err(e));
                if let Err(e) = removed {
                    // The decision stands; the stale index entry is pruned by `expired`.
                    warn!(error = %e, "could not remove a decided confirmation from the expiry index");
                }
                Ok(Decided::Claimed(parked))
            }
            Some("already") => {
                let call = v.get(1).cloned().flatten().unwrap_or_default();
                let decision = v.get(2).cloned().flatten().unwrap_or_default();
                let (flag, request_id) = decision.split_at(decision.len().min(1));
                Ok(Decided::AlreadyDecided { tool_call_id: call, approved: flag == "1", request_id: request_id.into() })
            }
            Some("none") => Ok(Decided::NoPending),
            _ => Err(corrupt("decide", "unexpected reply")),
        }
    }

    async fn last_decision(&self, session_id: &str) -> BResult<Option<(String, bool, String)>> {
        let s = self.s();
        let v: Vec<Option<String>> = s
            .client
            .hmget(s.keys.session_key(session_id, "last"), vec!["call", "decision"])
            .await
            .map_err(|e| s.err(e))?;
        match (v.first().cloned().flatten(), v.get(1).cloned().flatten()) {
            (Some(call), Some(decision)) => {
                let (flag, request_id) = decision.split_at(decision.len().min(1));
                Ok(Some((call, flag == "1", request_id.to_string())))
            }
            _ => Ok(None),
        }
    }

    async fn take(&self, session_id: &str) -> BResult<Option<ParkedTurn>> {
        let s = self.s();
        let reply = s.eval_once(&s.scripts.take, vec![s.keys.session_key(session_id, "confirm")], vec![]).await?;
        let v: Vec<Option<String>> = array(reply).iter().map(text).collect();
        let Some(json) = v.first().cloned().flatten() else {
            return Ok(None);
        };
        let call = v.get(1).cloned().flatten().unwrap_or_default();
        if let Err(e) = s.client.zrem::<(), _, _>(s.keys.confirm_expiry(), expiry_member(session_id, &call)).await {
            warn!(error = %e, "could not remove a taken confirmation from the expiry index");
        }
        parse_json("parked turn", &json).map(Some)
    }

    async fn expired(&self, now_ms: i64, max: usize) -> BResult<Vec<String>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let index = s.keys.confirm_expiry();
        let members = s.due(&index, now_ms, max).await?;
        let mut out = Vec::new();
        for member in members {
            let Ok((sid, call)) = serde_json::from_str::<(String, String)>(&member) else {
                let _ = s.client.zrem::<(), _, _>(&index, &member).await;
                continue;
            };
            // The index only points; the record decides. A decided, taken, replaced or vanished call is stale.
            let live: Option<String> =
                s.client.hget(s.keys.session_key(&sid, "confirm"), "call").await.map_err(|e| s.err(e))?;
            if live.as_deref() == Some(call.as_str()) {
                out.push(sid);
            } else {
                let _ = s.client.zrem::<(), _, _>(&index, &member).await;
            }
        }
        Ok(out)
    }

    async fn pending_count(&self) -> BResult<u64> {
        let s = self.s();
        s.client.zcard(s.keys.confirm_expiry()).await.map_err(|e| s.err(e))
    }
}

#[async_trait]
impl TurnLease for RedisStore {
    async fn acquire(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let s = self.s();
        let deadline = now_ms().saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let reply = s
            .eval_once(
                &s.scripts.acquire,
                vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")],
                vec![to_json(info)?, ttl_ms.max(1).to_string(), s.idle_ttl_s.to_string()],
            )
            .await?;
        if int(&reply) != Some(1) {
            return Ok(false);
        }
        s.index_turn_deadline(session_id, deadline).await?;
        Ok(true)
    }

    async fn renew(&self, session_id: &str, info: &TurnInfo, ttl_ms: u64) -> BResult<bool> {
        let s = self.s();
        let deadline = now_ms().saturating_add(i64::try_from(ttl_ms).unwrap_or(i64::MAX));
        let reply = s
            .eval(
                &s.scripts.renew,
                vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")],
                vec![info.turn_id.clone(), to_json(info)?, ttl_ms.max(1).to_string(), s.idle_ttl_s.to_string()],
            )
            .await?;
        if int(&reply) != Some(1) {
            return Ok(false);
        }
        s.index_turn_deadline(session_id, deadline).await?;
        Ok(true)
    }

    async fn release(&self, session_id: &str, turn_id: &str) -> BResult<bool> {
        let s = self.s();
        // The deadline index entry is left for `claim_lapsed` to prune: removing it here could remove the entry
        // of a turn that acquired the slot right after this release.
        let reply = s
            .eval_once(
                &s.scripts.release,
                vec![s.keys.session_key(session_id, "lease"), s.keys.session_key(session_id, "turn")],
                vec![turn_id.to_string()],
            )
            .await?;
        Ok(int(&reply) == Some(1))
    }

    async fn current(&self, session_id: &str) -> BResult<Option<TurnInfo>> {
        let s = self.s();
        let raw: Option<String> = s.client.get(s.keys.session_key(session_id, "lease")).await.map_err(|e| s.err(e))?;
        raw.map(|r| parse_json("turn lease", &r)).transpose()
    }

    async fn claim_lapsed(&self, now_ms: i64, max: usize) -> BResult<Vec<(String, TurnInfo)>> {
        if max == 0 {
            return Ok(Vec::new());
        }
        let s = self.s();
        let index = s.keys.turns_deadline();
        let due = s.due(&index, now_ms, max).await?;
        let mut out = Vec::new();
        for sid in due {
            // ZREM picks the one caller that handles this entry.
            let removed: i64 = s.client.zrem(&index, sid.as_str()).await.map_err(|e| s.err(e))?;
            if removed != 1 {
                continue;
            }
            let reply = s
                .eval_once(
                    &s.scripts.claim,
                    vec![s.keys.session_key(&sid, "lease"), s.keys.session_key(&sid, "turn")],
                    vec![],
                )
                .await?;
            let v = array(reply);
            match v.first().and_then(text).as_deref() {
                Some("claimed") => {
                    let json = v.get(1).and_then(text).ok_or_else(|| corrupt("claim", "no turn record"))?;
                    out.push((sid, parse_json("turn record", &json)?));
                }
                Some("alive") => {
                    // A lease runs (a new turn took the slot): put its deadline back so it is still watched.
                    let pttl = v.get(1).and_then(int).filter(|t| *t > 0).unwrap_or(1_000);
                    let deadline = crate::util::now_ms().saturating_add(pttl);
                    s.client
                        .zadd::<(), _, _>(
                            &index,
                            None,
                            Some(ZOrdering::GreaterThan),
                            false,
                            false,
                            (deadline as f64, sid.as_str()),
                        )
                        .await
                        .map_err(|e| s.err(e))?;
                }
                _ => {}
            }
        }
        Ok(out)
    }
}

/// The index keys a socket entry belongs to (besides `idx:all`).
fn entry_indexes(keys: &Keys, e: &SocketEntry) -> BTreeSet<String> {
    let mut set: BTreeSet<String> = e.sessions.iter().map(|sid| keys.idx("session", sid)).collect();
    set.insert(keys.idx("user", &e.user_id));
    set.insert(keys.idx("org", &e.org_id));
    set.insert(keys.idx_all());
    set
}

/// How long an index key outlives its newest member, so one slow heartbeat never drops a live socket.
const INDEX_GRACE_MS: i64 = 60_000;
/// Candidates read per index page when listing sockets.
const LIST_PAGE: i64 = 256;

#[async_trait]
impl Registry for RedisStore {
    async fn upsert(&self, entry: &SocketEntry, ttl_ms: u64) -> BResult<()> {
        let s = self.s();
        let now = now_ms();
        let ttl = i64::try_from(ttl_ms).unwrap_or(i64::MAX).max(1);
        let deadline = now.saturating_add(ttl);
        let key = s.keys.sock(&entry.connection_id);
        let old: Option<String> =
            s.client.set(&key, to_json(entry)?, Some(Expiration::PX(ttl)), None, true).await.map_err(|e| s.err(e))?;
        let new_idx = entry_indexes(&s.keys, entry);
        let keep = ttl.saturating_add(INDEX_GRACE_MS).to_string();
        let adds = new_idx.iter().map(|idx| {
            s.eval(
                &s.scripts.index_add,
                vec![idx.clone()],
                vec![deadline.to_string(), entry.connection_id.clone(), now.to_string(), keep.clone()],
            )
        });
        for r in join_all(adds).await {
            r?;
        }
        // Drop the socket from indexes it left (e.g. detached from a session); list() re-checks anyway.
        if let Some(old) = old.and_then(|o| serde_json::from_str::<SocketEntry>(&o).ok()) {
            for idx in entry_indexes(&s.keys, &old).difference(&new_idx) {
                s.client.zrem::<(), _, _>(idx, entry.connection_id.as_str()).await.map_err(|e| s.err(e))?;
            }
        }
        Ok(())
    }

    async fn remove(&self, connection_id: &str) -> BResult<()> {
        let s = self.s();
        let key = s.keys.sock(connection_id);
        let old: Option<String> = s.client.getdel(&key).await.map_err(|e| s.err(e))?;
        let mut indexes = BTreeSet::from([s.keys.idx_all()]);
        if let Some(old) = old.and_then(|o| serde_json::from_str::<SocketEntry>(&o).ok()) {
            indexes.extend(entry_indexes(&s.keys, &old));
        }
        for idx in indexes {
            s.client.zrem::<(), _, _>(idx, connection_id).await.map_err(|e| s.err(e))?;
        }
        Ok(())
    }

    async fn list(&self, filter: &SocketFilter, max: usize) -> BResult<Vec<SocketEntry>> {
        let s = self.s();
        if max == 0 {
            return Ok(Vec::new());
        }
        if let Some(conn) = &filter.connection {
            let raw: Option<String> = s.client.get(s.keys.sock(conn)).await.map_err(|e| s.err(e))?;
            let entry = raw.map(|r| parse_json::<SocketEntry>("socket entry", &r)).transpose()?;
            return Ok(entry.filter(|e| filter.matches(e)).into_iter().collect());
        }
        // The most selective index; the entries themselves are the truth and are re-filtered.
        let index = if let Some(sid) = &filter.session {
            s.keys.idx("session", sid)
        } else if let Some(uid) = &filter.user {
            s.keys.idx("user", uid)
        } else if let Some(oid) = &filter.org {
            s.keys.idx("org", oid)
        } else {
            s.keys.idx_all()
        };
        let live_from = ZRange { kind: ZRangeKind::Exclusive, range: ZRangeBound::Score(now_ms() as f64) };
        let mut out = Vec::new();
        let mut offset = 0i64;
        loop {
            let ids: Vec<String> = s
                .client
                .zrangebyscore(&index, live_from.clone(), "+inf", false, Some((offset, LIST_PAGE)))
                .await
                .map_err(|e| s.err(e))?;
            let got = ids.len() as i64;
            let fetched = join_all(ids.iter().map(|id| s.client.get::<Option<String>, _>(s.keys.sock(id)))).await;
            for raw in fetched {
                let Some(raw) = raw.map_err(|e| s.err(e))? else {
                    continue;
                };
                let entry: SocketEntry = parse_json("socket entry", &raw)?;
                if filter.matches(&entry) && out.len() < max {
                    out.push(entry);
                }
            }
            if got < LIST_PAGE || out.len() >= max {
                break;
            }
            offset += got;
        }
        out.sort_by(|a, b| a.connection_id.cmp(&b.connection_id));
        Ok(out)
    }
}

#[async_trait]
impl Health for RedisStore {
    async fn ping(&self) -> bool {
        let opts = Options { timeout: Some(Duration::from_secs(1)), max_attempts: Some(1), ..Default::default() };
        let client = self.s().client.with_options(&opts);
        let ping = client.ping::<String>(None);
        matches!(tokio::time::timeout(Duration::from_millis(1_500), ping).await, Ok(Ok(_)))
    }
}

/// One pod's bus: publishes on the command connection, receives on one dedicated subscriber connection.
struct RedisBus {
    shared: Arc<Shared>,
    /// The pod's only subscriber connection (subscribe once per channel per pod); owned by the bus, cloned
    /// into the pump task that restores subscriptions after reconnects.
    subscriber: SubscriberClient,
    /// Sender of this pod's bus events; fed by the pump task, receivers are handed to the hub.
    tx: broadcast::Sender<BusEvent>,
    /// Set by the pump task from a reconnect until the subscriptions are restored; read by readiness.
    restoring: Arc<std::sync::atomic::AtomicBool>,
}

impl RedisBus {
    fn sharded(&self, channel: &Channel) -> bool {
        self.shared.cluster && matches!(channel, Channel::Session(_))
    }
}

#[async_trait]
impl Bus for RedisBus {
    fn delivering(&self) -> bool {
        self.subscriber.state() == fred::types::ClientState::Connected && !self.restoring.load(AtomicOrdering::Relaxed)
    }

    async fn publish(&self, channel: &Channel, payload: &str) -> BResult<()> {
        let s = &self.shared;
        let name = channel.name(&s.keys.prefix);
        if self.sharded(channel) {
            s.client.spublish::<(), _, _>(name, payload).await.map_err(|e| s.err(e))
        } else {
            s.client.publish::<(), _, _>(name, payload).await.map_err(|e| s.err(e))
        }
    }

    async fn subscribe(&self, channel: &Channel) -> BResult<()> {
        self.subscribe_many(std::slice::from_ref(channel)).await
    }

    async fn subscribe_many(&self, channels: &[Channel]) -> BResult<()> {
        let prefix = &self.shared.keys.prefix;
        let (sharded, plain): (Vec<&Channel>, Vec<&Channel>) = channels.iter().partition(|c| self.sharded(c));
        let plain: Vec<String> = plain.iter().map(|c| c.name(prefix)).collect();
        let sharded: Vec<String> = sharded.iter().map(|c| c.name(prefix)).collect();
        subscribe_names(&self.subscriber, plain, sharded).await.map_err(fred_err)
    }

    async fn unsubscribe(&self, channel: &Channel) -> BResult<()> {
        let name = channel.name(&self.shared.keys.prefix);
        let slot = if self.sharded(channel) {
            let slot = fred::util::redis_keyslot(name.as_bytes());
            self.subscriber.sunsubscribe(name).await.map_err(fred_err)?;
            slot
        } else {
            self.subscriber.unsubscribe(name).await.map_err(fred_err)?;
            legacy_slot(&self.subscriber)
        };
        barrier(&self.subscriber, slot).await.map_err(fred_err)
    }

    fn receiver(&self) -> broadcast::Receiver<BusEvent> {
        self.tx.subscribe()
    }
}

/// Waits until Redis has processed the (un)subscribe commands sent before on the connection that serves
/// `slot`. fred resolves SUBSCRIBE, UNSUBSCRIBE and SUNSUBSCRIBE as soon as they are written (it drops their
/// confirmations), so without this a publish right after `subscribe()` returned could still be missed, and one
/// right after `unsubscribe()` still delivered. Redis answers a connection's commands in order, so the reply to
/// a PING sent behind them proves they are done (in RESP2 subscribed mode PING is allowed).
async fn barrier(subscriber: &SubscriberClient, slot: u16) -> Result<(), FredError> {
    let ping = CustomCommand::new_static("PING", ClusterHash::Custom(slot), false);
    subscriber.custom::<Value, String>(ping, Vec::new()).await.map(|_| ())
}

/// The slot whose node fred sends this client's plain (non-sharded) pub/sub commands to in a cluster: it
/// pins them to one node (by client id) so that they share one connection.
fn legacy_slot(subscriber: &SubscriberClient) -> u16 {
    fred::util::redis_keyslot(subscriber.id().as_bytes())
}

/// Channels per SUBSCRIBE / SSUBSCRIBE command ([`subscribe_names`]).
const SUBSCRIBE_CHUNK: usize = 1000;
/// Capacity of the pod's own bus broadcast (what the hub reads).
const BUS_CAPACITY: usize = 4096;
/// Capacity of fred's internal broadcasts (pub/sub messages, reconnect events); fred's default is 32.
const FRED_BROADCAST_CAPACITY: usize = 8192;

fn reconnect_policy() -> ReconnectPolicy {
    // Retry forever: a gateway without Redis is useless, and readiness reports the outage meanwhile.
    ReconnectPolicy::new_exponential(0, 100, 2_000, 2)
}

fn builder(config: FredConfig) -> Builder {
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

/// Reads fred's pub/sub stream into the pod's bus and restores subscriptions after every reconnect.
async fn pump(
    subscriber: SubscriberClient,
    prefix: String,
    tx: broadcast::Sender<BusEvent>,
    restoring: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut messages = subscriber.message_rx();
    let mut reconnects = subscriber.reconnect_rx();
    loop {
        tokio::select! {
            msg = messages.recv() => match msg {
                Ok(msg) => {
                    let Some(channel) = Channel::parse(&prefix, &msg.channel) else {
                        debug!(channel = %msg.channel, "message on a channel that is not ours");
                        continue;
                    };
                    let Some(payload) = msg.value.as_str_lossy() else { continue };
                    let _ = tx.send(BusEvent::Message { channel, payload: Arc::from(payload.as_ref()) });
                }
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    warn!(dropped = n, "redis pub/sub receiver lagged: consumers repair from the log");
                    let _ = tx.send(BusEvent::Resubscribed);
                }
                Err(broadcast::error::RecvError::Closed) => {
                    // fred closes its streams on QUIT only: the pod is shutting down.
                    debug!("redis pub/sub stream closed");
                    return;
                }
            },
            server = reconnects.recv() => match server {
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                    restoring.store(true, AtomicOrdering::Relaxed);
                    resubscribe(&subscriber, "bus").await;
                    restoring.store(false, AtomicOrdering::Relaxed);
                    let _ = tx.send(BusEvent::Resubscribed);
                }
                Err(broadcast::error::RecvError::Closed) => return,
            },
        }
    }
}

/// Restores every tracked subscription, retrying until it works (the connection may flap again meanwhile).
async fn resubscribe(subscriber: &SubscriberClient, what: &str) {
    let mut delay = Duration::from_millis(50);
    loop {
        // `restore_tracked` ends with the barrier: the channels are live once it returns.
        match restore_tracked(subscriber).await {
            Ok(()) => {
                info!(
                    what,
                    channels = subscriber.tracked_channels().len(),
                    sharded = subscriber.tracked_shard_channels().len(),
                    "redis subscriptions restored after reconnect"
                );
                return;
            }
            Err(e) => {
                warn!(what, error = %e, "redis resubscribe failed, retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
}

/// Subscribes again to every channel fred tracks. Not fred's `resubscribe_all`: that always sends
/// `PSUBSCRIBE` even with no patterns, which Redis answers with an error, so the restore never succeeded
/// on a pod with no patterns (every pod: Switchboard uses none).
async fn restore_tracked(subscriber: &SubscriberClient) -> Result<(), FredError> {
    let patterns: Vec<fred::types::Key> = subscriber.tracked_patterns().into_iter().map(Into::into).collect();
    if !patterns.is_empty() {
        subscriber.psubscribe(patterns).await?;
    }
    let sharded = subscriber.tracked_shard_channels().into_iter().map(|c| c.to_string()).collect();
    subscribe_names(subscriber, subscriber.tracked_channels().into_iter().map(|c| c.to_string()).collect(), sharded)
        .await
}

/// Subscribes `plain` channels with SUBSCRIBE and `sharded` ones with SSUBSCRIBE, a bounded number per command
/// (SSUBSCRIBE: one hash slot per command, and fred waits for its confirmation), then waits for Redis to have
/// processed the plain ones ([`barrier`]). Nothing is sent for an empty list (Redis refuses an empty SUBSCRIBE).
async fn subscribe_names(
    subscriber: &SubscriberClient,
    plain: Vec<String>,
    sharded: Vec<String>,
) -> Result<(), FredError> {
    for chunk in plain.chunks(SUBSCRIBE_CHUNK) {
        subscriber.subscribe(chunk.to_vec()).await?;
    }
    if !plain.is_empty() {
        barrier(subscriber, legacy_slot(subscriber)).await?;
    }
    for (_, keys) in fred::util::group_by_hash_slot(sharded)? {
        for chunk in Vec::from(keys).chunks(SUBSCRIBE_CHUNK) {
            subscriber.ssubscribe(chunk.to_vec()).await?;
        }
    }
    Ok(())
}

/// Follows Sentinel's `+switch-master` for our service. Between promoting a replica and demoting the old
/// master (its next periodic check, up to ~10 s later) Sentinel leaves our connections on the old master,
/// which still accepts writes that its resync will then drop; so move as soon as the switch is announced.
struct SentinelWatch {
    sentinel: Server,
    service: String,
    /// The pod's command client and bus subscriber, reconnected on a switch.
    client: Client,
    subscriber: SubscriberClient,
    /// The last switch acted on, shared by the watchers of all sentinels so one switch reconnects once.
    last_switch: Arc<Mutex<String>>,
}

impl SentinelWatch {
    async fn run(self) {
        let config =
            FredConfig { server: ServerConfig::Centralized { server: self.sentinel.clone() }, ..FredConfig::default() };
        let watcher = match builder(config).build_subscriber_client() {
            Ok(w) => w,
            Err(e) => {
                warn!(error = %e, "cannot build the sentinel watcher");
                return;
            }
        };
        let mut messages = watcher.message_rx();
        let mut reconnects = watcher.reconnect_rx();
        let _connection = AbortOnDrop(watcher.connect().abort_handle());
        loop {
            if watcher.wait_for_connect().await.is_ok() && watcher.subscribe("+switch-master").await.is_ok() {
                break;
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
        info!(sentinel = %self.sentinel, "following +switch-master");
        loop {
            tokio::select! {
                msg = messages.recv() => match msg {
                    Ok(msg) => {
                        let text = msg.value.as_str_lossy().map(|c| c.into_owned()).unwrap_or_default();
                        self.on_switch(text).await;
                    }
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return,
                },
                server = reconnects.recv() => match server {
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {
                        resubscribe(&watcher, "sentinel watcher").await
                    }
                    Err(broadcast::error::RecvError::Closed) => return,
                },
            }
        }
    }

    /// `<master name> <old ip> <old port> <new ip> <new port>`.
    async fn on_switch(&self, text: String) {
        if text.split_whitespace().next() != Some(self.service.as_str()) {
            return;
        }
        {
            let mut last = self.last_switch.lock();
            if *last == text {
                return;
            }
            last.clone_from(&text);
        }
        info!(switch = %text, "sentinel switched master: reconnecting");
        if let Err(e) = self.client.force_reconnection().await {
            warn!(error = %e, "reconnect after +switch-master failed");
        }
        // The bus reconnects too; its pump resubscribes and emits Resubscribed.
        if let Err(e) = self.subscriber.force_reconnection().await {
            warn!(error = %e, "bus reconnect after +switch-master failed");
        }
    }
}

fn spawn_connection(tasks: &PodTasks, handle: fred::types::ConnectHandle, what: &'static str) {
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

/// Connects every Redis backend for one pod.
pub async fn connect(config: &Config) -> BResult<Backends> {
    let target = RedisTarget::parse(&config.redis_url).map_err(BackendError::Config)?;
    let fred_config = target.fred_config().map_err(BackendError::Config)?;
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
    let (tx, _) = broadcast::channel(BUS_CAPACITY);
    let restoring = Arc::new(std::sync::atomic::AtomicBool::new(false));
    tasks.push(&tokio::spawn(pump(subscriber.clone(), config.redis_key_prefix.clone(), tx.clone(), restoring.clone())));
    if let ServerConfig::Sentinel { hosts, service_name, .. } = &fred_config.server {
        let last_switch = Arc::new(Mutex::new(String::new()));
        for host in hosts {
            let watch = SentinelWatch {
                sentinel: host.clone(),
                service: service_name.clone(),
                client: client.clone(),
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
        log_len: config.limits.log_len.max(1),
        last_readonly_reconnect: AtomicI64::new(0),
        _tasks: tasks,
    });
    info!(target = ?target_kind(&target), cluster, "redis backends connected");
    let store = Arc::new(RedisStore { shared: shared.clone() });
    let bus = Arc::new(RedisBus { shared, subscriber, tx, restoring });
    Ok(Backends::from_store(store, bus))
}

/// The kind of target, for logs (the URL may hold a password).
fn target_kind(t: &RedisTarget) -> &'static str {
    match t {
        RedisTarget::Single(_) => "single",
        RedisTarget::Cluster(_) => "cluster",
        RedisTarget::Sentinel(_) => "sentinel",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_targets() {
        assert!(matches!(RedisTarget::parse("redis://127.0.0.1:6379"), Ok(RedisTarget::Single(_))));
        assert!(matches!(RedisTarget::parse("redis-cluster://a:1,b:2"), Ok(RedisTarget::Cluster(_))));
        assert!(RedisTarget::parse("redis-cluster://a").is_err(), "cluster seeds need ports");
        assert!(matches!(RedisTarget::parse("redis-sentinel://s1,s2:26380/mymaster"), Ok(RedisTarget::Sentinel(_))));
        assert!(RedisTarget::parse("redis-sentinel://s1:26379").is_err());
        assert!(RedisTarget::parse("http://x").is_err());
    }

    #[test]
    fn url_parts() {
        let p = UrlParts::parse("redis-sentinel://user:p%40ss@[::1]:26379,h2/mymaster", Some(26379)).expect("parse");
        assert_eq!(p.username.as_deref(), Some("user"));
        assert_eq!(p.password.as_deref(), Some("p@ss"));
        assert_eq!(p.hosts, vec![("::1".to_string(), 26379), ("h2".to_string(), 26379)]);
        assert_eq!(p.path, "mymaster");
        let c = RedisTarget::parse("redis-cluster://:secret@h:7000").expect("parse").fred_config().expect("config");
        assert_eq!(c.password.as_deref(), Some("secret"));
        assert!(c.server.is_clustered());
        assert!(RedisTarget::parse("rediss://h:6380").expect("parse").fred_config().is_err(), "no TLS in this build");
    }

    #[test]
    fn keys_share_the_session_slot() {
        let k = Keys { prefix: "sb".into() };
        let slot = |s: &str| fred::util::redis_keyslot(s.as_bytes());
        let sid = "7d4c";
        let channel = Channel::Session(sid.into()).name("sb");
        for what in ["seq", "log", "confirm", "decided", "last", "lease", "turn", "session"] {
            assert_eq!(slot(&k.session_key(sid, what)), slot(&channel), "{what}");
        }
        assert_eq!(slot(&k.conv("c1")), slot(&k.msgs("c1")));
        assert_eq!(seq_of("42-0"), Some(42));
    }
}
