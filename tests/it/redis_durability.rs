//! What production Redis must give Switchboard, checked against real servers: `redis_wait_replicas` makes
//! parks, decisions and log appends wait for a replica (`WAIT`) on a connection of their own, and the boot warns
//! when `maxmemory-policy` lets Redis evict our keys.

use crate::support;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use switchboard::backend::{conformance, redis, Channel};
use switchboard::config::Config;

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

    // A replica that stays away: the write goes on unconfirmed once `redis_wait_timeout_ms` runs out.
    replica.pause();
    let done = tokio::time::timeout(Duration::from_secs(10), a.log.append(&session, r#"{"n":3}"#)).await;
    assert_eq!(done.expect("the WAIT times out").expect("the write goes on unconfirmed"), 3);
    replica.resume();
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
