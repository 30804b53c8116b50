//! The generic backend conformance suite against real Redis: a single server, a 3-master cluster and a
//! Sentinel-managed master/replica, each with two "pods" (two `connect` calls sharing one Redis under a fresh
//! key prefix). Plus the failures the Redis backends exist to survive: a Redis restart (the bus resubscribes
//! and says so), a Sentinel failover after the master died, and a Sentinel failover that demotes the master
//! in place (the client must follow `+switch-master`).

use crate::support;

use std::future::Future;
use std::time::Duration;

use tokio::sync::broadcast;
use tokio::time::Instant;

use switchboard::backend::{
    conformance, redis, BResult, Backends, BusEvent, Channel, Guard, SessionBatch, SessionRecord, TakeOver, TurnInfo,
};
use switchboard::config::Config;

use support::redis::{RedisCluster, RedisSentinel, RedisServer};
use support::unique_id;

const LOG_LEN: usize = 50;
/// `session.conversation_max_messages` for these pods (the suite's other checks keep fewer).
const HISTORY_CAP: usize = 6;
/// `session.conversations_per_user` for the bounds check.
const CONVERSATION_CAP: usize = 3;

fn init_tracing() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
}

fn config(url: &str) -> Config {
    Config {
        redis_url: url.to_string(),
        redis_key_prefix: unique_id("sbt"),
        limits: switchboard::config::LimitsConfig { log_len: LOG_LEN, ..Default::default() },
        session: switchboard::config::SessionConfig { conversation_max_messages: HISTORY_CAP, ..Default::default() },
        ..Config::default()
    }
}

/// Two pods on one Redis, sharing a fresh key prefix.
async fn pods(url: &str) -> (Backends, Backends) {
    let (a, b, _) = pods_with_prefix(url).await;
    (a, b)
}

/// [`pods`], also returning the key prefix for tests that look at the keys.
async fn pods_with_prefix(url: &str) -> (Backends, Backends, String) {
    init_tracing();
    let config = config(url);
    let a = redis::connect(&config).await.expect("connect pod a");
    let b = redis::connect(&config).await.expect("connect pod b");
    (a, b, config.redis_key_prefix)
}

/// Every conformance check, each on its own pair of pods (fresh prefix), as the single-server tests do one
/// by one.
async fn full_suite(url: &str) {
    let (a, b) = pods(url).await;
    conformance::sessions_and_history(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::history_cap(&a, &b, HISTORY_CAP).await;
    let (a, b) = pods(url).await;
    conformance::conversation_listing(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::event_log_and_publish(&a, &b, LOG_LEN).await;
    let (a, b) = pods(url).await;
    conformance::bus_routing(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::confirmations(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::turn_leases(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::takeovers(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::orphans(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::guarded_appends(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::quotas(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::registry(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::deletion(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::idempotency(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::interaction_parks(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::identities(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::org_listing(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::org_settings(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::identity_moves(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::deployment_keys(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::usage_counters(&a, &b).await;
    let (a, b) = pods(url).await;
    conformance::deletion_forgets_the_person(&a, &b).await;
    conversation_bounds(url).await;
}

/// The bounds check needs its own settings (a small cap, empty conversations expiring in a second).
async fn conversation_bounds(url: &str) {
    let mut bounded = config(url);
    bounded.session.conversations_per_user = CONVERSATION_CAP;
    bounded.session.empty_conversation_ttl_s = 1;
    let a = redis::connect(&bounded).await.expect("connect pod a");
    let b = redis::connect(&bounded).await.expect("connect pod b");
    conformance::conversation_bounds(&a, &b, CONVERSATION_CAP).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_conversation_bounds() {
    let redis = RedisServer::start();
    conversation_bounds(&redis.url()).await;
}

/// A use given back after its window turned (the counter already expired) leaves no key behind without a TTL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_quota_give_back_never_leaves_a_key_without_ttl() {
    let redis = RedisServer::start();
    let (a, _, prefix) = pods_with_prefix(&redis.url()).await;
    // A window of 200 ms: taken in one, given back after it ended.
    assert!(a.quotas.take("k", 5, 200).await.expect("take"));
    tokio::time::sleep(Duration::from_millis(450)).await;
    a.quotas.give_back("k", 200).await.expect("give back");
    assert!(a.quotas.take("k", 5, 200).await.expect("take"));
    a.quotas.give_back("k", 200).await.expect("give back");
    let keys = redis.cli(&["--scan", "--pattern", &format!("{prefix}:quota:*")]);
    for key in keys.lines().filter(|k| !k.is_empty()) {
        let ttl = redis.cli(&["PTTL", key]);
        assert_ne!(ttl.trim(), "-1", "{key} has no TTL");
    }
}

/// Retries `op` until it succeeds or `within` passes (Redis is coming back, or failing over).
async fn eventually<T, F, Fut>(within: Duration, what: &str, mut op: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = BResult<T>>,
{
    let deadline = Instant::now() + within;
    loop {
        match op().await {
            Ok(v) => return v,
            Err(e) if Instant::now() < deadline => {
                tracing::debug!(error = %e, "{what}: retrying");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(e) => panic!("{what} still failing after {within:?}: {e}"),
        }
    }
}

/// Skips messages on `want` until one equals `payload` (earlier ones may or may not have been delivered); a
/// session payload is compared without its epoch.
async fn recv_payload(rx: &mut broadcast::Receiver<BusEvent>, want: &Channel, payload: &str, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = recv_on(rx, want, left).await;
        if line == payload || (matches!(want, Channel::Session(_)) && split_epoch(&line).0 == payload) {
            return;
        }
    }
}

/// Waits until the Sentinel set's replica has `key` = `value` (replication is asynchronous).
async fn replicated(set: &RedisSentinel, key: &str, value: &str) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while set.replica().cli(&["GET", key]) != value {
        assert!(Instant::now() < deadline, "the replica never received {key}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Sentinel and cluster tests start several Redis processes and depend on failover timing: they take turns
/// so that two of them never compete for the machine's two cores.
static HEAVY: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// Waits for a [`BusEvent::Resubscribed`], skipping messages.
async fn wait_resubscribed(rx: &mut broadcast::Receiver<BusEvent>, within: Duration) {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(BusEvent::Resubscribed)) => return,
            Ok(Ok(BusEvent::Message { .. } | BusEvent::Session { .. }))
            | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("bus receiver closed: {e}"),
            Err(_) => panic!("no BusEvent::Resubscribed within {within:?}"),
        }
    }
}

/// The next message on `want`, skipping others (and Resubscribed events).
/// A session bus message of one event as `(<seq>:<event>, epoch)`.
fn split_epoch(message: &str) -> (String, String) {
    let batch = SessionBatch::decode(std::sync::Arc::from(message));
    let event = batch.events().first().expect("an event");
    (format!("{}:{}", event.seq, batch.json(event)), batch.epoch(event).to_string())
}

async fn recv_on(rx: &mut broadcast::Receiver<BusEvent>, want: &Channel, within: Duration) -> String {
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, rx.recv()).await {
            Ok(Ok(ev)) if ev.raw().is_some_and(|(channel, _)| &channel == want) => {
                return ev.raw().map(|(_, payload)| payload.to_string()).unwrap_or_default()
            }
            Ok(Ok(_)) | Ok(Err(broadcast::error::RecvError::Lagged(_))) => continue,
            Ok(Err(e)) => panic!("bus receiver closed: {e}"),
            Err(_) => panic!("no message on {want:?} within {within:?}"),
        }
    }
}

fn session(id: &str) -> SessionRecord {
    SessionRecord {
        session_id: id.into(),
        conversation_id: unique_id("conv"),
        agent_id: "agent".into(),
        agent_name: "Agent".into(),
        user_id: "user".into(),
        org_id: "org".into(),
        user_participant_id: "up".into(),
        agent_participant_id: "ap".into(),
        created_at_ms: 1,
        namespace: None,
        supports: Vec::new(),
    }
}

// ------------------------------------------------------------------------------------- single server

/// One test per conformance check on a single Redis, each with its own server.
macro_rules! single {
    ($($name:ident => $check:ident $(, $arg:expr)?);* $(;)?) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            let redis = RedisServer::start();
            let (a, b) = pods(&redis.url()).await;
            conformance::$check(&a, &b $(, $arg)?).await;
        }
    )*};
}

single! {
    single_sessions_and_history => sessions_and_history;
    single_history_cap => history_cap, HISTORY_CAP;
    single_conversation_listing => conversation_listing;
    single_event_log_and_publish => event_log_and_publish, LOG_LEN;
    single_bus_routing => bus_routing;
    single_confirmations => confirmations;
    single_interaction_parks => interaction_parks;
    single_identities => identities;
    single_org_listing => org_listing;
    single_org_settings => org_settings;
    single_turn_leases => turn_leases;
    single_takeovers => takeovers;
    single_orphans => orphans;
    single_guarded_appends => guarded_appends;
    single_quotas => quotas;
    single_registry => registry;
    single_deletion => deletion;
    single_idempotency => idempotency;
    single_identity_moves => identity_moves;
    single_deployment_keys => deployment_keys;
    single_usage_counters => usage_counters;
    single_deletion_forgets_the_person => deletion_forgets_the_person;
}

/// The keys of one session share a slot and carry the idle TTL, and nothing is left without one except the
/// documented global indexes and conversations.
/// A Redis of its own, one pod on it and a session created there (for tests that look at the keys).
async fn one_pod_with_a_session() -> (RedisServer, Config, Backends, String) {
    let redis = RedisServer::start();
    init_tracing();
    let config = config(&redis.url());
    let pod = redis::connect(&config).await.expect("connect");
    let sid = unique_id("s");
    pod.sessions.create_session(&session(&sid), None).await.expect("create");
    (redis, config, pod, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_session_keys_carry_the_idle_ttl() {
    let (redis, config, pod, sid) = one_pod_with_a_session().await;
    pod.log.append(&sid, r#"{"n":1}"#).await.expect("append");
    let prefix = &config.redis_key_prefix;
    let ttl = |what: &str| -> i64 { redis.cli(&["TTL", &format!("{prefix}:{{{sid}}}:{what}")]).parse().expect("ttl") };
    let idle = config.session.idle_ttl_s as i64;
    for what in ["session", "seq", "log", "epoch"] {
        assert!(ttl(what) > 0 && ttl(what) <= idle, "{what} ttl {}", ttl(what));
    }
    assert_eq!(redis.cli(&["XRANGE", &format!("{prefix}:{{{sid}}}:log"), "-", "+"]).lines().next(), Some("1-0"));
    // Reading the session keeps its log alive with it: the log, counter and epoch never expire first (their
    // seq would restart under a live session).
    for what in ["seq", "log", "epoch"] {
        redis.cli(&["EXPIRE", &format!("{prefix}:{{{sid}}}:{what}"), "5"]);
    }
    pod.sessions.get_session(&sid).await.expect("get").expect("the session");
    for what in ["session", "seq", "log", "epoch"] {
        assert!(ttl(what) > 5, "{what} ttl {} after a read", ttl(what));
    }
    // The pod that just refreshed them reads the record alone within the refresh period (one GET, no script);
    // another pod refreshes them itself; a deleted session is gone for both.
    let scripts = || -> u64 {
        let info = redis.cli(&["INFO", "commandstats"]);
        let line = info.lines().find(|l| l.starts_with("cmdstat_evalsha:")).unwrap_or("");
        line.split(&[':', '=', ','][..]).nth(2).and_then(|n| n.parse().ok()).unwrap_or(0)
    };
    let before = scripts();
    pod.sessions.get_session(&sid).await.expect("get").expect("the session");
    assert_eq!(scripts(), before, "a read within the period runs no script");
    redis.cli(&["EXPIRE", &format!("{prefix}:{{{sid}}}:seq"), "5"]);
    let other = redis::connect(&config).await.expect("connect another pod");
    other.sessions.get_session(&sid).await.expect("get").expect("the session");
    assert!(ttl("seq") > 5, "another pod refreshes: seq ttl {}", ttl("seq"));
    redis.cli(&["DEL", &format!("{prefix}:{{{sid}}}:session")]);
    assert!(pod.sessions.get_session(&sid).await.expect("get").is_none(), "deleted");
    assert!(other.sessions.get_session(&sid).await.expect("get").is_none(), "deleted");
}

/// The append's own resend guard (fred resends a call whose connection dropped, and the call may have run). A
/// running turn's append finds the counter where its pod expected it and appends at once, or finds it elsewhere
/// (another writer came first, the pod had no idea, or it is a second run) and looks for its token in the last
/// entries: a second run answers the first run's seq without appending again. Any other call keeps its token
/// among the last calls' in a small key, where its second run finds it. One entry holds a batch, with its first
/// seq, and a later read cuts it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_an_append_sent_twice_is_appended_once() {
    let (redis, config, pod, sid) = one_pod_with_a_session().await;
    let prefix = &config.redis_key_prefix;
    let key = |k: &str| format!("{prefix}:{{{sid}}}:{k}");
    let keys: Vec<String> =
        ["seq", "log", "lease", "turn", "epoch", "session", "toks", "step"].iter().map(|k| key(k)).collect();
    let script = include_str!("../../src/backend/redis/lua/append_batch.lua");
    let append = |token: &str, expected: &str, events: &[&str]| {
        let channel = key("events");
        let mut args = vec!["EVAL", script, "8"];
        args.extend(keys.iter().map(String::as_str));
        let n = events.len().to_string();
        let joined = events.join("\n");
        args.extend(["100", "60", channel.as_str(), "PUBLISH", "none", "", "ep1", token, expected, &n, &joined]);
        redis.cli(&args)
    };
    let a = [r#"{"a":1}"#, r#"{"a":2}"#];
    assert_eq!(append("tok-a", "1", &a), "1", "a turn's append where it was expected");
    assert_eq!(append("tok-b", "", &[r#"{"b":1}"#]), "3", "another call appends");
    assert_eq!(append("tok-a", "1", &a), "1", "the turn's first run is found in the log");
    assert_eq!(append("tok-a", "0", &a), "1", "found whatever the pod expected");
    assert_eq!(append("tok-b", "", &[r#"{"b":1}"#]), "3", "the other call's first run is found by its token");
    assert_eq!(append("tok-c", "4", &[r#"{"c":1}"#]), "4", "where it was expected");
    assert_eq!(append("tok-d", "2", &[r#"{"d":1}"#]), "5", "expected elsewhere, never ran: appends");
    assert_eq!(redis.cli(&["XLEN", &key("log")]), "4", "one entry per batch, none twice");
    let read = pod.log.read_after(&sid, 1, 10).await.expect("read");
    let expected: Vec<(u64, String)> = [(2, r#"{"a":2}"#), (3, r#"{"b":1}"#), (4, r#"{"c":1}"#), (5, r#"{"d":1}"#)]
        .map(|(s, e)| (s, e.to_string()))
        .to_vec();
    assert_eq!(read, expected);
    assert_eq!(pod.log.bounds(&sid).await.expect("bounds"), (1, 5));
    let ttl: i64 = redis.cli(&["TTL", &key("toks")]).parse().expect("ttl");
    assert!(ttl > 0, "the tokens expire with the log: {ttl}");
}

/// A busy session's resend-safety records stay small: the ops hash keeps the last 64 replies and one previous
/// generation, not a reply per write for as long as the session keeps writing (it held up to 1,000 before).
/// The log's appends keep none at all: they guard their own resends (a token in the stream entry).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_ops_hashes_stay_bounded_on_a_busy_session() {
    let (redis, config, pod, sid) = one_pod_with_a_session().await;
    let prefix = &config.redis_key_prefix;
    let hlen = |key: String| -> u64 { redis.cli(&["HLEN", &key]).parse().expect("hlen") };
    for n in 1..=600u64 {
        assert_eq!(pod.log.append(&sid, &format!(r#"{{"n":{n}}}"#)).await.expect("append"), n);
    }
    assert_eq!(hlen(format!("{prefix}:{{{sid}}}:ops")), 0, "appends keep no reply per call");
    for _ in 0..600 {
        assert!(!pod.leases.release(&sid, "no-such-turn").await.expect("release"));
    }
    let (ops, prev) = (hlen(format!("{prefix}:{{{sid}}}:ops")), hlen(format!("{prefix}:{{{sid}}}:ops:prev")));
    assert!((1..=64).contains(&ops), "current generation holds {ops}");
    assert_eq!(prev, 64, "the previous generation holds one full hash");
    let ttl: i64 = redis.cli(&["TTL", &format!("{prefix}:{{{sid}}}:ops")]).parse().expect("ttl");
    assert!(ttl > 0 && ttl <= 60, "ops ttl {ttl}");
}

// ------------------------------------------------------------------------------------------- cluster

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cluster_conformance() {
    let _turn = HEAVY.lock().await;
    let cluster = RedisCluster::start();
    full_suite(&cluster.url()).await;
}

// ------------------------------------------------------------------------------------------ sentinel

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_conformance() {
    let _turn = HEAVY.lock().await;
    let set = RedisSentinel::start();
    full_suite(&set.url()).await;
}

// ---------------------------------------------------------------------------------------- failures

/// Redis dies and comes back empty on the same port: the bus reconnects, resubscribes and emits
/// `Resubscribed`; live messages flow again, and the log and the stores work (a new epoch: seq restarts).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn restart_resubscribes_and_keeps_working() {
    let mut redis = RedisServer::start();
    let (a, b) = pods(&redis.url()).await;
    let sid = unique_id("s");
    let session_ch = Channel::Session(sid.clone());
    let user_ch = Channel::User(unique_id("u"));
    let mut rx = b.bus.receiver();
    b.bus.subscribe(&session_ch).await.expect("subscribe session");
    b.bus.subscribe(&user_ch).await.expect("subscribe user");
    assert_eq!(a.log.append(&sid, r#"{"n":1}"#).await.expect("append"), 1);
    let (line, before) = split_epoch(&recv_on(&mut rx, &session_ch, Duration::from_secs(5)).await);
    assert_eq!(line, r#"1:{"n":1}"#);

    tokio::task::block_in_place(|| redis.kill());
    assert!(!a.health.ping().await, "ping must fail while Redis is down");
    tokio::time::sleep(Duration::from_millis(500)).await;
    tokio::task::block_in_place(|| redis.restart());

    wait_resubscribed(&mut rx, Duration::from_secs(20)).await;
    // Pub/sub flows again on both kinds of channel, from the other pod.
    eventually(Duration::from_secs(15), "publish after restart", || a.bus.publish(&user_ch, r#"{"after":"restart"}"#))
        .await;
    assert_eq!(recv_on(&mut rx, &user_ch, Duration::from_secs(5)).await, r#"{"after":"restart"}"#);
    let seq = eventually(Duration::from_secs(15), "append after restart", || a.log.append(&sid, r#"{"n":2}"#)).await;
    assert_eq!(seq, 1, "Redis came back empty: a new epoch starts at seq 1");
    let (line, after) = split_epoch(&recv_on(&mut rx, &session_ch, Duration::from_secs(5)).await);
    assert_eq!(line, r#"1:{"n":2}"#);
    assert_ne!(before, after, "the restarted log has a new epoch, so seq 1 is not taken for the old seq 1");
    assert_eq!(b.log.epoch(&sid).await.expect("epoch"), Some(after));
    assert_eq!(b.log.bounds(&sid).await.expect("bounds"), (1, 1));
    assert_eq!(b.log.read_after(&sid, 0, 10).await.expect("read"), vec![(1, r#"{"n":2}"#.to_string())]);
    let record = session(&sid);
    a.sessions.create_session(&record, None).await.expect("create after restart");
    assert_eq!(b.sessions.get_session(&sid).await.expect("get"), Some(record));
    assert!(a.health.ping().await && b.health.ping().await);
}

/// Two pods on a Sentinel set with one logged event on a session that pod b follows, replicated so that it
/// survives a failover. Returns the pods, the session, its channel, b's receiver and the seq key.
/// A Sentinel deployment that requires a password: the pod's `+switch-master` watcher connects with the pod's own
/// credentials (as every other connection does), so it is subscribed and a failover is followed at once, rather
/// than failing NOAUTH in silence and leaving the pod on the demoted master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_watcher_uses_the_pods_credentials() {
    let _turn = HEAVY.lock().await;
    let set = RedisSentinel::start();
    let pw = "s3ntinel-pass";
    for node in [set.master(), set.replica()] {
        assert_eq!(node.cli(&["CONFIG", "SET", "masterauth", pw]), "OK");
        assert_eq!(node.cli(&["CONFIG", "SET", "requirepass", pw]), "OK");
    }
    assert_eq!(set.sentinel_cli(&["SENTINEL", "SET", "mymaster", "auth-pass", pw]), "OK");
    assert_eq!(set.sentinel_cli(&["ACL", "SETUSER", "default", "resetpass", &format!(">{pw}")]), "OK");
    let sentinel_cli = |args: &[&str]| {
        let port = set.sentinel_port().to_string();
        let out = std::process::Command::new("redis-cli")
            .args(["-p", &port, "-a", pw, "--no-auth-warning"])
            .args(args)
            .output()
            .expect("redis-cli");
        String::from_utf8_lossy(&out.stdout).to_string()
    };
    init_tracing();
    let url = format!("redis-sentinel://:{pw}@127.0.0.1:{}/mymaster", set.sentinel_port());
    let pod = redis::connect(&config(&url)).await.expect("connect with the password");
    let sid = unique_id("s");
    assert_eq!(pod.log.append(&sid, r#"{"n":1}"#).await.expect("append"), 1, "the pod's commands authenticate");
    let watching = Instant::now() + Duration::from_secs(20);
    while sentinel_cli(&["CLIENT", "LIST"]).lines().filter(|l| l.contains(" sub=1 ")).count() < 1 {
        assert!(Instant::now() < watching, "the pod's watcher never subscribed to +switch-master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn sentinel_session(
    set: &RedisSentinel,
) -> (Backends, Backends, String, Channel, broadcast::Receiver<BusEvent>, String) {
    let (a, b, prefix) = pods_with_prefix(&set.url()).await;
    let sid = unique_id("s");
    let ch = Channel::Session(sid.clone());
    let mut rx = b.bus.receiver();
    b.bus.subscribe(&ch).await.expect("subscribe");
    assert_eq!(a.log.append(&sid, r#"{"n":1}"#).await.expect("append"), 1);
    assert_eq!(split_epoch(&recv_on(&mut rx, &ch, Duration::from_secs(15)).await).0, r#"1:{"n":1}"#);
    let seq_key = format!("{prefix}:{{{sid}}}:seq");
    // Replication is asynchronous: wait until the replica has the log so it survives the failover.
    replicated(set, &seq_key, "1").await;
    (a, b, sid, ch, rx, seq_key)
}

/// The master is killed; Sentinel promotes the replica; appends and publishes go through the new master and
/// the bus resubscribes there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_failover_after_master_death() {
    let _turn = HEAVY.lock().await;
    let mut set = RedisSentinel::start();
    let (a, b, sid, ch, mut rx, _) = sentinel_session(&set).await;

    set.kill_master();
    let new_master = set.wait_for_failover_async(Duration::from_secs(30)).await;
    assert_ne!(new_master, set.master_port());
    wait_resubscribed(&mut rx, Duration::from_secs(30)).await;

    let seq = eventually(Duration::from_secs(20), "append after failover", || a.log.append(&sid, r#"{"n":2}"#)).await;
    assert_eq!(seq, 2, "the replica had the log: seq continues on the new master");
    recv_payload(&mut rx, &ch, r#"2:{"n":2}"#, Duration::from_secs(15)).await;
    let user = Channel::User(unique_id("u"));
    b.bus.subscribe(&user).await.expect("subscribe on new master");
    a.bus.publish(&user, r#"{"hello":"new master"}"#).await.expect("publish");
    assert_eq!(recv_on(&mut rx, &user, Duration::from_secs(15)).await, r#"{"hello":"new master"}"#);
    assert_eq!(b.log.bounds(&sid).await.expect("bounds"), (1, 2));
    assert!(a.health.ping().await);
}

/// `SENTINEL FAILOVER` promotes the replica while the old master keeps running: Sentinel only demotes it (and
/// drops its clients) on its next periodic check, up to ~10 s later, and every write that reaches it meanwhile
/// is lost on the resync. The pods must follow `+switch-master` right away instead of waiting for that.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sentinel_switch_master_is_followed_and_loses_no_write() {
    let _turn = HEAVY.lock().await;
    let set = RedisSentinel::start();
    let (a, b, sid, ch, mut rx, seq_key) = sentinel_session(&set).await;

    // Both pods' watchers must be subscribed to +switch-master before the failover (under CPU load they may
    // still be connecting); Sentinel's CLIENT LIST shows them as `sub=1`.
    let watching = Instant::now() + Duration::from_secs(20);
    while set.sentinel_cli(&["CLIENT", "LIST"]).lines().filter(|l| l.contains(" sub=1 ")).count() < 2 {
        assert!(Instant::now() < watching, "the pods never subscribed to +switch-master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Sentinel only promotes a replica it has fresh INFO from; right after start it may answer NOGOODSLAVE.
    let asked = Instant::now() + Duration::from_secs(30);
    loop {
        let out = set.sentinel_cli(&["SENTINEL", "FAILOVER", "mymaster"]);
        if out == "OK" {
            break;
        }
        assert!(Instant::now() < asked, "SENTINEL FAILOVER refused: {out}");
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let new_master = set.wait_for_failover_async(Duration::from_secs(30)).await;
    assert_eq!(new_master, set.replica_port());
    // Pod b reconnects its commands, then its bus, on +switch-master (usually within a second, well before
    // Sentinel's demotion; under CPU load it can take longer, so the bound here is loose). What must hold either
    // way is asserted next: the write lands on the promoted node and nothing is lost.
    wait_resubscribed(&mut rx, Duration::from_secs(30)).await;
    let seq = eventually(Duration::from_secs(10), "append after switch", || b.log.append(&sid, r#"{"n":2}"#)).await;
    assert_eq!(seq, 2, "the promoted replica had the log: seq continues");
    assert_eq!(set.replica().cli(&["GET", &seq_key]), "2", "the write went to the promoted node");

    // Once Sentinel has demoted the old master (its resync drops anything written there), nothing is lost.
    let demoted = Instant::now() + Duration::from_secs(30);
    while set.master().cli(&["ROLE"]).lines().next() != Some("slave") {
        assert!(Instant::now() < demoted, "sentinel did not demote the old master");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let next = eventually(Duration::from_secs(10), "append after demotion", || a.log.append(&sid, r#"{"n":3}"#)).await;
    assert_eq!(next, 3);
    // n:2 may or may not have reached b (published while b's subscriber moved); n:3 must.
    recv_payload(&mut rx, &ch, r#"3:{"n":3}"#, Duration::from_secs(15)).await;
    let log: Vec<u64> = b.log.read_after(&sid, 0, 10).await.expect("read").into_iter().map(|(s, _)| s).collect();
    assert_eq!(log, [1, 2, 3]);
}

/// A Redis of its own and two pods on it whose logs keep every event of a test.
async fn two_pods_keeping_long_logs() -> (RedisServer, Backends, Backends) {
    let redis = RedisServer::start();
    init_tracing();
    let mut config = config(&redis.url());
    config.limits.log_len = 100_000;
    let a = redis::connect(&config).await.expect("connect pod a");
    let b = redis::connect(&config).await.expect("connect pod b");
    (redis, a, b)
}

/// Drops every client connection eight times, 30 ms apart, while the test's writers write.
async fn drop_connections(redis: &RedisServer) {
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(30)).await;
        tokio::task::block_in_place(|| redis.cli(&["CLIENT", "KILL", "TYPE", "normal"]));
    }
}

/// A session's whole log, checked gap-free with no event twice.
async fn each_event_once(pod: &Backends, sid: &str) -> Vec<(u64, String)> {
    let log = pod.log.read_after(sid, 0, 1_000_000).await.expect("read");
    let seqs: Vec<u64> = log.iter().map(|(s, _)| *s).collect();
    assert_eq!(seqs, (1..=log.len() as u64).collect::<Vec<_>>(), "gap-free in {sid}");
    let mut events: Vec<&String> = log.iter().map(|(_, e)| e).collect();
    events.sort();
    let before = events.len();
    events.dedup();
    assert_eq!(events.len(), before, "an event was appended twice in {sid}");
    log
}

/// Connections dropped under load (fred resends the commands that were in flight) never append an event
/// twice: the log stays gap-free, each event appears once, and each returned seq points at its own event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_never_duplicate_an_append() {
    let (redis, a, b) = two_pods_keeping_long_logs().await;
    let sid = unique_id("s");
    let writers: Vec<_> = (0..8)
        .map(|w| {
            let log = a.log.clone();
            let sid = sid.clone();
            tokio::spawn(async move {
                let mut done = Vec::new();
                for i in 0..150 {
                    let event = format!(r#"{{"w":{w},"i":{i}}}"#);
                    done.push((event.clone(), log.append(&sid, &event).await));
                }
                done
            })
        })
        .collect();
    drop_connections(&redis).await;
    let mut acked = Vec::new();
    for w in writers {
        for (event, result) in w.await.expect("writer") {
            match result {
                Ok(seq) => acked.push((seq, event)),
                Err(e) => tracing::info!(error = %e, "append failed (may or may not be logged)"),
            }
        }
    }
    let log = each_event_once(&b, &sid).await;
    for (seq, event) in &acked {
        assert_eq!(&log[(*seq - 1) as usize].1, event, "seq {seq} was returned for another event");
    }
    assert!(acked.len() > 1_000, "most appends succeed: {}", acked.len());
}

/// A running turn's appends (each knows where the counter should be, so it skips the search for its token) under
/// dropped connections: fred resends the ones in flight, and none is appended twice; each turn's events stay in
/// order, once each, and every returned seq points at its own event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_never_duplicate_a_turns_append() {
    let (redis, a, b) = two_pods_keeping_long_logs().await;
    let turns: Vec<_> = (0..6)
        .map(|w| {
            let (log, leases) = (a.log.clone(), a.leases.clone());
            tokio::spawn(async move {
                let sid = unique_id("s");
                let turn = format!("t{w}");
                assert!(leases.acquire(&sid, &TurnInfo::new(&turn, "r", "pod-a"), 60_000).await.expect("acquire"));
                let mut done = Vec::new();
                for i in 0..200 {
                    let events = vec![format!(r#"{{"i":{i},"x":0}}"#), format!(r#"{{"i":{i},"x":1}}"#)];
                    let result = log.append_guarded(&sid, events.clone(), Guard::Holder(&turn)).await;
                    done.push((events, result));
                }
                (sid, done)
            })
        })
        .collect();
    drop_connections(&redis).await;
    let mut acked = 0;
    for t in turns {
        let (sid, done) = t.await.expect("turn");
        let log = each_event_once(&b, &sid).await;
        for (sent, result) in done {
            match result {
                Ok(Some(first)) => {
                    acked += 1;
                    let at = (first - 1) as usize;
                    assert_eq!(
                        log[at..at + 2].iter().map(|(_, e)| e).collect::<Vec<_>>(),
                        sent.iter().collect::<Vec<_>>()
                    );
                }
                Ok(None) => panic!("the turn lost its lease"),
                Err(e) => tracing::info!(error = %e, "append failed (may or may not be logged)"),
            }
        }
    }
    assert!(acked > 1_000, "most appends succeed: {acked}");
}

/// Conversations are kept `session.conversation_ttl_s` after their last message: every conversation key carries
/// that TTL, a message renews it, and an expired conversation leaves the owner's list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_conversations_expire_after_their_retention() {
    use switchboard::backend::{ConversationRecord, Direction, StoredMessage};
    let redis = RedisServer::start();
    init_tracing();
    let mut cfg = config(&redis.url());
    cfg.session.conversation_ttl_s = 2;
    let pod = redis::connect(&cfg).await.expect("connect");
    let s = session(&unique_id("s"));
    let now = switchboard_now();
    let conv = ConversationRecord {
        conversation_id: s.conversation_id.clone(),
        user_id: s.user_id.clone(),
        org_id: s.org_id.clone(),
        agent_id: s.agent_id.clone(),
        title: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        message_count: 0,
        namespace: None,
        supports: None,
    };
    pod.sessions.create_session(&s, Some(&conv)).await.expect("create");
    let msg =
        StoredMessage { id: "m1".into(), direction: Direction::Inbound, text: "hi".into(), created_at: "t".into() };
    pod.sessions.append_message(&conv.conversation_id, &msg, now).await.expect("message");
    let prefix = &cfg.redis_key_prefix;
    let cid = &conv.conversation_id;
    for key in [format!("{prefix}:conv:{{{cid}}}"), format!("{prefix}:conv:{{{cid}}}:msgs")] {
        let ttl: i64 = redis.cli(&["TTL", &key]).parse().expect("ttl");
        assert!((1..=2).contains(&ttl), "{key}: ttl {ttl}");
    }
    let listed = pod.sessions.list_conversations(&s.org_id, &s.user_id, 0, 10).await.expect("list");
    assert_eq!(listed.conversations.len(), 1);
    tokio::time::sleep(Duration::from_millis(2_500)).await;
    assert_eq!(pod.sessions.get_conversation(cid).await.expect("get"), None, "expired");
    let listed = pod.sessions.list_conversations(&s.org_id, &s.user_id, 0, 10).await.expect("list");
    assert!(listed.conversations.is_empty() && !listed.has_more, "{listed:?}");
}

fn switchboard_now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// A park taken by an answer (or a cancel, or its timeout) is followed at once by the taker's resume or ending.
/// Should the taker's pod die in between, the turn must not wait for the park's whole deadline (its lease is
/// held by the park until then): taking a park shortens the park's hold to twice the lease and brings the
/// turn's lapsed-lease entry forward, so a sweeper ends the turn within seconds. Before, a decided park whose
/// answering pod died left the session refusing turns (`TURN_IN_PROGRESS`) until the park's deadline, which the
/// chaos program saw as turns with no ending. A park that is not taken keeps its hold.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_taken_park_whose_taker_dies_lapses_within_two_leases() {
    use switchboard::backend::{Decided, Gate, ParkedTurn, PendingCall};
    let redis = RedisServer::start();
    let (a, _, prefix) = pods_with_prefix(&redis.url()).await;
    let lease_ms = switchboard::config::Config::default().turn.lease_ms;
    for by_decision in [true, false] {
        let sid = unique_id("s");
        let turn = TurnInfo::new("t-1", "r-1", "pod-a");
        assert!(a.leases.acquire(&sid, &turn, lease_ms).await.expect("acquire"));
        let parked = ParkedTurn {
            session_id: sid.clone(),
            turn_id: "t-1".into(),
            request_id: "r-1".into(),
            call: PendingCall { tool_call_id: "c1".into(), tool_name: "delete_record".into(), arguments: "{}".into() },
            gate: Gate::Confirm,
            expires_at_ms: wall_ms() + 600_000,
            state: serde_json::json!({}),
        };
        a.confirms.park(&parked).await.expect("park");
        let hold = 600_000 + lease_ms;
        assert!(a.leases.hand_over(&sid, &TurnInfo::new("t-1", "r-1", ""), "c1", hold).await.expect("hand over"));
        let lease_key = format!("{prefix}:{{{sid}}}:lease");
        let pttl = |k: &str| -> i64 { redis.cli(&["PTTL", k]).parse().expect("pttl") };
        assert!(pttl(&lease_key) > 500_000, "the park holds the lease to its deadline");
        // An answer that takes nothing (another call's) leaves the hold as it is.
        assert_eq!(a.confirms.decide(&sid, Some("other"), true).await.expect("decide"), Decided::NoPending);
        assert!(pttl(&lease_key) > 500_000, "a park not taken keeps its hold");
        // Taken (and the taker dies before it resumes the turn).
        if by_decision {
            assert!(matches!(a.confirms.decide(&sid, Some("c1"), true).await.expect("decide"), Decided::Claimed(_)));
        } else {
            assert!(a.confirms.take(&sid, Some("c1")).await.expect("take").is_some());
        }
        let left = pttl(&lease_key);
        assert!(left > 0 && left <= 2 * lease_ms as i64, "the taken park's hold is two leases at most: {left}");
        let index = format!("{prefix}:turns:deadline");
        let due: f64 = redis.cli(&["ZSCORE", &index, &format!("{sid}|t-1")]).parse().expect("indexed");
        assert!(due as i64 <= wall_ms() + 2 * lease_ms as i64, "its lapsed-lease entry comes due with it");
    }
}

/// A failover can lose a takeover's writes but keep the index entry written after them: the deadline index then
/// names a turn the record does not (the record is still the lapsed turn's, with no lease). The entry is the
/// only pointer left to that turn, so its claim hands out the turn the record names instead of dropping the
/// entry (which left the turn with no ending, ever).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_follows_the_turn_record_when_the_index_names_another_turn() {
    let redis = RedisServer::start();
    let (a, _, prefix) = pods_with_prefix(&redis.url()).await;
    let sid = unique_id("s");
    let lapsed = TurnInfo::new("t-1", "r-1", "pod-a");
    assert!(a.leases.acquire(&sid, &lapsed, 50).await.expect("acquire"));
    // What survived the failover: t-1's record, no lease, and only the entry of the lost takeover's t-2.
    let index = format!("{prefix}:turns:deadline");
    redis.cli(&["ZREM", &index, &format!("{sid}|t-1")]);
    redis.cli(&["ZADD", &index, "1", &format!("{sid}|t-2")]);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let claimed = a.leases.claim_lapsed(wall_ms(), 100).await.expect("claim");
    assert_eq!(claimed, vec![(sid.clone(), lapsed)], "the record's turn is claimed");
    // A record whose turn runs is left to that turn's own entry.
    let running = TurnInfo::new("t-3", "r-3", "pod-a");
    let other = unique_id("s");
    assert!(a.leases.acquire(&other, &running, 60_000).await.expect("acquire"));
    redis.cli(&["ZADD", &index, "1", &format!("{other}|t-old")]);
    let claimed = a.leases.claim_lapsed(wall_ms(), 100).await.expect("claim");
    assert!(claimed.iter().all(|(s, _)| s != &other), "{claimed:?}");
}

fn wall_ms() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// A dead pod's turn `t1` (one step, its lease lapsed), taken over as `t2` (returned) with a lease of `lease_ms`.
async fn lapsed_and_taken_over(pod: &Backends, sid: &str, lease_ms: u64) -> TurnInfo {
    let first = TurnInfo::new("t1", "req", "pod-a");
    assert!(pod.leases.acquire(sid, &first, 50).await.expect("acquire"));
    assert!(pod.leases.checkpoint(sid, "t1", "{}").await.expect("checkpoint"));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let second = TurnInfo::new("t2", "req", "pod-b");
    let taken = pod.leases.take_over(sid, "t1", &second, lease_ms, 2).await.expect("take over");
    assert!(matches!(taken, TakeOver::Taken { .. }), "{taken:?}");
    second
}

/// A session with two due entries (the lapsed turn's, kept so a lost takeover can still be found, and its
/// takeover's) is claimed once per sweep: both lead to the turn the record names, and claiming both in one sweep
/// set two endings of that one turn going at once (a Sentinel chaos run: one pod's sweep logged the same session's
/// lapsed turn twice, 1 ms apart, and that request was ended twice). The other entry waits for the next sweep.
#[tokio::test]
async fn single_a_session_is_claimed_once_per_sweep() {
    let (redis, config, pod, sid) = one_pod_with_a_session().await;
    let second = lapsed_and_taken_over(&pod, &sid, 50).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Both entries due now (the takeover's lease lapsed too, its pod gone).
    let index = format!("{}:turns:deadline", config.redis_key_prefix);
    for turn in ["t1", "t2"] {
        redis.cli(&["ZADD", &index, "0", &format!("{sid}|{turn}")]);
    }

    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    let claimed = pod.leases.claim_lapsed(now(), 10).await.expect("claim");
    assert_eq!(claimed, vec![(sid.clone(), second)], "one claim of the session's turn in a sweep");
}

/// A takeover whose reply was lost (its pod never heard it had taken the turn, so never indexed the new turn):
/// the lapsed turn's entry, claimed while the new turn's lease runs, leaves an entry for the new turn behind,
/// so once that lease lapses too a sweeper still finds the turn (before, the stale entry was dropped and the
/// turn was never ended).
#[tokio::test]
async fn single_a_takeover_never_indexed_is_still_found_by_a_sweeper() {
    let (redis, config, pod, sid) = one_pod_with_a_session().await;
    let second = lapsed_and_taken_over(&pod, &sid, 1_000).await;
    // As if the reply never came: the new turn's own entry is not there.
    let index = format!("{}:turns:deadline", config.redis_key_prefix);
    redis.cli(&["ZREM", &index, &format!("{sid}|t2")]);

    let now = || std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64);
    assert_eq!(pod.leases.claim_lapsed(now(), 10).await.expect("claim"), vec![], "t2's lease runs");
    let members = redis.cli(&["ZRANGE", &index, "0", "-1"]);
    assert!(members.lines().any(|m| m == format!("{sid}|t2")), "t2 is watched now: {members}");
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let claimed = pod.leases.claim_lapsed(now(), 10).await.expect("claim");
    assert_eq!(claimed, vec![(sid.clone(), second)], "the lapsed takeover is found");
}
