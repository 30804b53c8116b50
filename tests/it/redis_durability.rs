//! What production Redis must give Switchboard, checked against real servers: `redis_wait_replicas` makes
//! parks, decisions and log appends wait for a replica (`WAIT`) on a connection of their own, and the boot warns
//! when `maxmemory-policy` lets Redis evict our keys.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard::backend::{conformance, redis, BackendError, Backends, BusEvent, Channel, Guard, TakeOver, TurnInfo};
use switchboard::config::Config;

use support::proxy::Proxy;
use support::redis::RedisServer;
use support::unique_id;

/// `calls` of one command in the server's `INFO commandstats`.
fn calls(server: &RedisServer, command: &str) -> u64 {
    let info = server.info("commandstats");
    let prefix = format!("cmdstat_{command}:calls=");
    info.lines()
        .find_map(|l| l.strip_prefix(&prefix))
        .and_then(|rest| rest.split(',').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(0)
}

fn config(url: String, wait_replicas: u32) -> Config {
    Config {
        redis_url: url,
        redis_key_prefix: unique_id("dur"),
        redis_wait_replicas: wait_replicas,
        redis_wait_timeout_ms: 1_500,
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn durable_writes_wait_for_a_replica_on_their_own_connection() {
    let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
    let replica = RedisServer::start_replica_of(&master);

    // Without the setting nothing waits.
    let plain = config(master.url(), 0);
    let (a, b) = (redis::connect(&plain).await.expect("a"), redis::connect(&plain).await.expect("b"));
    conformance::confirmations(&a, &b).await;
    conformance::event_log_and_publish(&a, &b, 1000).await;
    assert_eq!(calls(&master, "wait"), 0, "WAIT is only sent when redis_wait_replicas asks for it");

    // With it, the same behaviour, and every park, decision and append is followed by a WAIT.
    let cfg = config(master.url(), 1);
    let (a, b) = (redis::connect(&cfg).await.expect("a"), redis::connect(&cfg).await.expect("b"));
    conformance::confirmations(&a, &b).await;
    let before = calls(&master, "wait");
    conformance::event_log_and_publish(&a, &b, 1000).await;
    let waits = calls(&master, "wait") - before;
    assert!(waits >= 21, "each of the 21+ appends waits for the replica, saw {waits} WAITs");
    let session = unique_id("s");
    let seq = a.log.append(&session, r#"{"n":1}"#).await.expect("append");
    let log_key = format!("{}:{{{session}}}:log", cfg.redis_key_prefix);
    assert_eq!(replica.cli(&["XLEN", &log_key]), "1", "an acknowledged append is on the replica");
    assert_eq!(seq, 1);

    // A stalled replica delays the durable write (up to the timeout), not the pod's other commands; and no
    // socket hears of the event before a replica has it: a failover could otherwise take back an event a client
    // has seen, and the next event would reuse its seq.
    let channel = Channel::Session(session.clone());
    let mut heard = b.bus.receiver();
    b.bus.subscribe(&channel).await.expect("subscribe");
    replica.pause();
    let log = a.log.clone();
    let id = session.clone();
    let append = tokio::spawn(async move { log.append(&id, r#"{"n":2}"#).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(a.log.bounds(&session).await.expect("bounds").1, 2, "the write itself is on the master");
    assert!(a.health.ping().await, "the command connection is not blocked by the WAIT");
    assert!(!append.is_finished(), "the append waits for the replica");
    while let Ok(event) = heard.try_recv() {
        assert!(event.raw().is_none_or(|(c, _)| c != channel), "published before a replica had it");
    }
    replica.resume();
    let done = tokio::time::timeout(Duration::from_secs(10), append).await.expect("the replica acknowledges");
    assert_eq!(done.expect("join").expect("the write is confirmed"), 2);
    let message = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            if let Ok(event) = heard.recv().await {
                if let Some((c, payload)) = event.raw().filter(|(c, _)| *c == channel) {
                    assert_eq!(c, channel);
                    return payload.to_string();
                }
            }
        }
    })
    .await
    .expect("then the event is published");
    assert!(message.starts_with("2:") && message.ends_with(r#"{"n":2}"#), "{message}");

    // A replica that stays away past `redis_wait_timeout_ms`: the write is logged and the append returns, but
    // nobody hears of it until a replica has it (then it is published); a running turn's append fails instead,
    // so the turn does not stream on from events a failover could take back.
    let lease = TurnInfo::new("t1", "req", "pod-a");
    assert!(a.leases.acquire(&session, &lease, 60_000).await.expect("acquire"));
    replica.pause();
    let done = tokio::time::timeout(Duration::from_secs(10), a.log.append(&session, r#"{"n":3}"#)).await;
    assert_eq!(done.expect("the wait times out").expect("the write goes on, logged"), 3);
    // A turn's start and a turn's step that replicas do not confirm are refused: a failover could take them back
    // after the turn acted on them (no sweeper could find the started turn; a takeover would go on from the step
    // before and run a non-idempotent call again). The refused start is given back.
    let other = unique_id("s");
    let leases = a.leases.clone();
    let id = other.clone();
    let start = tokio::spawn(async move { leases.acquire(&id, &TurnInfo::new("t2", "req", "pod-a"), 60_000).await });
    // While the start waits for replicas, a sweeper can already find it (should this pod die now).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let index = format!("{}:turns:deadline", cfg.redis_key_prefix);
    let member = format!("{other}|t2");
    assert_ne!(master.cli(&["ZSCORE", &index, &member]), "", "the start's lapsed-lease entry is written first");
    let start = start.await.expect("join");
    assert!(unconfirmed(&start), "{start:?}");
    assert_eq!(master.cli(&["ZSCORE", &index, &member]), "", "and goes with the refused start");
    assert_eq!(a.leases.current(&other).await.expect("current"), None, "the refused start is given back");
    let step = a.leases.checkpoint(&session, "t1", r#"{"running_call":"c1"}"#).await;
    assert!(unconfirmed(&step), "{step:?}");
    let held = a.log.append_guarded(&session, vec![r#"{"n":4}"#.into()], Guard::Holder("t1")).await;
    assert!(unconfirmed(&held), "a turn's unconfirmed append fails: {held:?}");
    assert_eq!(a.log.bounds(&session).await.expect("bounds").1, 4, "both are logged on the master");
    let early = published(&mut heard_rx(&b, &channel).await, &channel, Duration::from_millis(500)).await;
    assert!(early.is_empty(), "nothing unconfirmed is published: {early:?}");
    let mut late = heard_rx(&b, &channel).await;
    replica.resume();
    let got = published(&mut late, &channel, Duration::from_secs(5)).await;
    assert!(got.iter().any(|m| m.starts_with("3:")), "published once the replica has it: {got:?}");
    assert!(got.iter().any(|m| m.starts_with("4:")), "the turn's batch too (its takeover goes on after it): {got:?}");
}

/// A takeover replicas do not confirm is not run: made on a master a Sentinel switch is replacing (the turn's lease
/// lapsed there because its pod renews it on the new master), it would run the turn beside its live self or beside
/// another pod's takeover or ending: two endings. Its lease then lapses unrun and the turn is taken over again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_replicas_do_not_confirm_is_not_run() {
    let (_master, replica, _cfg, pod) = replicated_pod().await;
    // Once the replica has synced (this append waits for it), the dead pod's turn: started, one step, lapsed.
    pod.log.append(&unique_id("warm"), "{}").await.expect("a first confirmed write");
    let session = unique_id("s");
    let lapsed = TurnInfo::new("t1", "req-1", "pod-dead");
    assert!(pod.leases.acquire(&session, &lapsed, 1_000).await.expect("acquire"));
    assert!(pod.leases.checkpoint(&session, "t1", r#"{"step":1}"#).await.expect("step"), "a confirmed step");
    tokio::time::sleep(Duration::from_millis(1_100)).await;

    replica.pause();
    let first = TurnInfo::new("t2", "req-1", "pod-b");
    let taken = pod.leases.take_over(&session, "t1", &first, 300, 2).await;
    assert!(unconfirmed(&taken), "an unconfirmed takeover is refused: {taken:?}");
    replica.resume();

    // The write stayed (no failover came): its lease lapses unrun and the turn is taken over again, under the
    // id the unconfirmed takeover gave it, from the same step, as its second takeover.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let second = TurnInfo::new("t3", "req-1", "pod-c");
    match pod.leases.take_over(&session, "t2", &second, 60_000, 2).await.expect("take over") {
        TakeOver::Taken { checkpoint, .. } => {
            assert_eq!(checkpoint.state, r#"{"step":1}"#);
            assert_eq!(checkpoint.takeovers, 2, "the unconfirmed takeover counts");
        }
        other => panic!("the turn is taken over again: {other:?}"),
    }
}

/// A new session is confirmed by replicas before the client is told of it: a failover right after its creation
/// would otherwise leave the client a session id that is not found (every turn and resume refused from then on).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_new_session_replicas_do_not_confirm_is_refused() {
    let (_master, replica, cfg, pod) = replicated_pod().await;
    let key = |sid: &str| format!("{}:{{{sid}}}:session", cfg.redis_key_prefix);

    let (session, conversation) = conformance::session(&unique_id("s"), "u1");
    pod.sessions.create_session(&session, Some(&conversation)).await.expect("created");
    assert_eq!(replica.cli(&["EXISTS", &key(&session.session_id)]), "1", "a created session is on the replica");

    replica.pause();
    let (session, conversation) = conformance::session(&unique_id("s"), "u1");
    let created = pod.sessions.create_session(&session, Some(&conversation)).await;
    assert!(unconfirmed(&created), "a session replicas do not have is not reported created: {created:?}");
    replica.resume();
}

/// A master, its replica and a pod whose durable writes wait for one replica.
async fn replicated_pod() -> (RedisServer, RedisServer, Config, Backends) {
    let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
    let replica = RedisServer::start_replica_of(&master);
    let cfg = config(master.url(), 1);
    let pod = redis::connect(&cfg).await.expect("pod");
    (master, replica, cfg, pod)
}

/// Whether an append was refused as not confirmed by replicas.
fn unconfirmed<T>(r: &Result<T, BackendError>) -> bool {
    r.as_ref().is_err_and(|e| e.to_string().contains("not confirmed by replicas"))
}

/// A fresh receiver of `b`'s bus, subscribed to `channel`.
async fn heard_rx(b: &Backends, channel: &Channel) -> tokio::sync::broadcast::Receiver<BusEvent> {
    let rx = b.bus.receiver();
    b.bus.subscribe(channel).await.expect("subscribe");
    rx
}

/// The payloads published on `channel` that `rx` receives within `within`.
async fn published(
    rx: &mut tokio::sync::broadcast::Receiver<BusEvent>,
    channel: &Channel,
    within: Duration,
) -> Vec<String> {
    let mut out = Vec::new();
    let deadline = tokio::time::Instant::now() + within;
    while let Ok(Ok(event)) = tokio::time::timeout_at(deadline, rx.recv()).await {
        if let Some((_, payload)) = event.raw().filter(|(c, _)| c == channel) {
            out.push(payload.to_string());
        }
    }
    out
}

/// The fork a Sentinel switch made: a write the old master took after the replica was promoted, then lost when
/// it was demoted. It must be reported lost and never shown: a client shown it would drop the next event (the
/// same seq, new content) as already seen. The test plays the switch with a proxy in front of the master.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_append_lost_by_a_change_of_master_is_reported_and_never_shown() {
    let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
    let replica = RedisServer::start_replica_of(&master);
    let proxy = Proxy::start(([127, 0, 0, 1], master.port()).into()).await;
    let cfg = config(format!("redis://{}", proxy.addr), 1);
    let pod = redis::connect(&cfg).await.expect("pod");
    let watch = |url: String| Config { redis_url: url, ..cfg.clone() };
    let (on_master, on_replica) = (
        redis::connect(&watch(master.url())).await.expect("watcher"),
        redis::connect(&watch(replica.url())).await.expect("watcher"),
    );
    let session = unique_id("s");
    let channel = Channel::Session(session.clone());
    assert_eq!(pod.log.append(&session, r#"{"n":1}"#).await.expect("append"), 1);
    let (mut old, mut new) = (heard_rx(&on_master, &channel).await, heard_rx(&on_replica, &channel).await);

    // The replica is promoted: the master goes on taking writes no replica will have.
    replica.cli(&["REPLICAOF", "NO", "ONE"]);
    let log = pod.log.clone();
    let id = session.clone();
    let lost = tokio::spawn(async move { log.append(&id, r#"{"lost":true}"#).await });
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(master.cli(&["GET", &format!("{}:{{{session}}}:seq", cfg.redis_key_prefix)]), "2");
    // The switch: connections now reach the promoted replica, and the old master's are closed.
    proxy.route_to(([127, 0, 0, 1], replica.port()).into());
    master.cli(&["CLIENT", "KILL", "TYPE", "normal"]);
    let lost = tokio::time::timeout(Duration::from_secs(10), lost).await.expect("the append returns").expect("join");
    assert!(unconfirmed(&lost), "the lost write is reported, not acknowledged: {lost:?}");

    // The next event takes the lost one's seq (the promoted replica has no replica of its own, so it stays
    // unpublished: its append goes on once `redis_wait_timeout_ms` runs out); nobody ever heard the lost one.
    let next = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match pod.log.append(&session, r#"{"n":2}"#).await {
                Ok(seq) => return seq,
                Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
            }
        }
    })
    .await
    .expect("the pod writes to the new master");
    assert_eq!(next, 2);
    let (old, new) = (
        published(&mut old, &channel, Duration::from_millis(300)).await,
        published(&mut new, &channel, Duration::from_millis(300)).await,
    );
    assert!(old.iter().chain(&new).all(|m| !m.contains("lost")), "the lost write was published: {old:?} {new:?}");
}

/// Starts the real binary on `url` and returns its log lines up to "listening".
fn boot_log(url: &str) -> Vec<String> {
    let mut child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
        .arg("serve")
        .env("SWITCHBOARD_BIND", format!("127.0.0.1:{}", support::ports::free_port()))
        .env("SWITCHBOARD_REDIS_URL", url)
        .env("SWITCHBOARD_AUTH__RESUME_SECRET", "test-resume-secret-0123456789abcdef")
        .env("SWITCHBOARD_REDIS_KEY_PREFIX", unique_id("boot"))
        .env("SWITCHBOARD_LOG_FORMAT", "json")
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start switchboard");
    let out = child.stdout.take().expect("stdout");
    let err = child.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    for pipe in [Box::new(out) as Box<dyn std::io::Read + Send>, Box::new(err)] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
    }
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) {
        let up = line.contains("listening");
        lines.push(line);
        if up {
            break;
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(lines.iter().any(|l| l.contains("listening")), "the pod did not come up:\n{}", lines.join("\n"));
    lines
}

#[test]
fn the_boot_warns_when_redis_may_evict_our_keys() {
    let evicting = RedisServer::start_with_args(&["--maxmemory", "64mb", "--maxmemory-policy", "allkeys-lru"]);
    let lines = boot_log(&evicting.url());
    let warning = lines.iter().find(|l| l.contains("maxmemory-policy is not noeviction"));
    let warning = warning.unwrap_or_else(|| panic!("no eviction warning in:\n{}", lines.join("\n")));
    assert!(warning.contains("WARN") && warning.contains("allkeys-lru"), "{warning}");

    let safe = RedisServer::start_with_args(&["--maxmemory-policy", "noeviction"]);
    let lines = boot_log(&safe.url());
    assert!(!lines.iter().any(|l| l.contains("maxmemory-policy is not")), "{}", lines.join("\n"));
}
