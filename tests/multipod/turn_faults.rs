//! Exactly one ending per turn under faults: a pod process frozen (SIGSTOP) past its lease, Redis stalled
//! past the lease mid-turn, and a parked turn resumed after its slot was taken. Each ends the turn once
//! (`TURN_INTERRUPTED` from a sweeper), and the turn that lost its lease adds nothing to the log afterwards.

use std::process::{Child, Command, Stdio};

use super::*;

/// A Switchboard server process (the real binary), killed on drop.
struct ProcessPod {
    child: Child,
    port: u16,
    _config_dir: tempfile::TempDir,
}

impl Drop for ProcessPod {
    fn drop(&mut self) {
        self.signal("CONT");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ProcessPod {
    /// Starts the binary with `config` (written as a TOML file) on a free port and waits until it is ready.
    async fn start(mut config: switchboard::config::Config) -> ProcessPod {
        let port = support::ports::free_port();
        config.bind = format!("127.0.0.1:{port}");
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("switchboard.toml");
        std::fs::write(&path, toml::to_string(&config).expect("config as TOML")).expect("write config");
        let child = Command::new(env!("CARGO_BIN_EXE_switchboard"))
            .args(["serve", "--config"])
            .arg(&path)
            .env_clear()
            .env("SWITCHBOARD_LOG_FORMAT", "json")
            .env("RUST_LOG", std::env::var("SB_TEST_LOG").unwrap_or_else(|_| "off".into()))
            .stdout(Stdio::null())
            .stderr(if std::env::var("SB_TEST_LOG").is_ok() { Stdio::inherit() } else { Stdio::null() })
            .spawn()
            .expect("spawn switchboard");
        let pod = ProcessPod { child, port, _config_dir: dir };
        let http = reqwest::Client::new();
        let deadline = Instant::now() + Duration::from_secs(20);
        let ready = format!("http://127.0.0.1:{port}/readyz");
        while !http.get(&ready).send().await.is_ok_and(|r| r.status() == 200) {
            assert!(Instant::now() < deadline, "the server process never became ready");
            sleep_ms(100).await;
        }
        pod
    }

    fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }
}

/// The frames of `rid` in the session's whole log, read by a fresh socket on `pod`.
async fn logged(pod: &switchboard::server::Running, sid: &str, rid: &str) -> Vec<serde_json::Value> {
    let mut c = connect(pod, true).await;
    c.send(&json!({"action": "resume_session", "requestId": "log", "sessionId": sid, "afterSeq": 0})).await;
    let mut frames = Vec::new();
    while let Some(Frame::Text(v)) = c.recv_raw_timeout(Duration::from_millis(1_500)).await {
        if v["requestId"] == rid {
            frames.push(v);
        }
    }
    frames
}

fn is_terminal(v: &serde_json::Value) -> bool {
    matches!(v["type"].as_str(), Some("eventual_response" | "error" | "cancelled"))
}

/// The one ending of `rid`: exactly one terminal event, and it is the request's last event.
fn single_ending(frames: &[serde_json::Value]) -> serde_json::Value {
    let endings: Vec<_> = frames.iter().filter(|v| is_terminal(v)).collect();
    assert_eq!(endings.len(), 1, "exactly one ending, got {endings:?}");
    assert!(is_terminal(frames.last().expect("frames")), "nothing after the ending: {frames:?}");
    endings[0].clone()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_frozen_past_its_lease_is_ended_once_and_adds_nothing_when_it_wakes() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut cfg = config(&llm, &tools);
    cfg.turn.lease_ms = 1_500;
    let p = pods(1, cfg.clone(), &Store::Redis(redis.url())).await;
    cfg.redis_url = p[0].config().redis_url.clone();
    cfg.redis_key_prefix = p[0].config().redis_key_prefix.clone();
    cfg.auth.resume_secret = p[0].config().auth.resume_secret.clone();
    let frozen = ProcessPod::start(cfg).await;

    let mut a = Client::connect(&frozen.ws_url()).await;
    let sid = create_session(&mut a).await;
    let chunks: Vec<String> = (0..30).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks, delay_ms: 100, usage: None });
    send_message(&mut a, &sid, "r-1", "tell me").await;
    a.recv_until(|v| v["type"].as_str().is_some_and(|t| t.starts_with("stream_"))).await;
    frozen.signal("STOP");

    // The healthy pod's sweeper ends the turn once the frozen pod's lease lapses.
    let mut b = connect(&p[0], true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 0})).await;
    let seen = until_terminal(&mut b, "r-1").await;
    let ending = seen.last().expect("ending");
    assert_eq!(ending["error"]["code"], "TURN_INTERRUPTED", "{ending}");

    // The frozen pod wakes with the model's whole reply waiting in its socket buffer: it must notice that its
    // lease is gone and stop, adding nothing (no tokens, no second ending).
    frozen.signal("CONT");
    sleep_ms(4_000).await;
    let frames = logged(&p[0], &sid, "r-1").await;
    let ending = single_ending(&frames);
    assert_eq!(ending["error"]["code"], "TURN_INTERRUPTED");

    // The session takes a new turn (on either pod) and it runs to its end.
    llm.push(Reply::text(&["again"]));
    send_message(&mut b, &sid, "r-2", "again").await;
    let frames = until_terminal(&mut b, "r-2").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response", "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stalled_past_the_lease_mid_turn_ends_the_turn_once() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let p = pods(2, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    let chunks: Vec<String> = (0..40).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks, delay_ms: 100, usage: None });
    // Should the turn go on after the stall it would call the model again; this would show it.
    llm.set_default(Reply::text(&["SECOND CALL"]));
    send_message(&mut a, &sid, "r-1", "tell me").await;
    a.recv_until(|v| v["type"].as_str().is_some_and(|t| t.starts_with("stream_"))).await;
    // Longer than the lease (2 s) and than the client's command timeout (10 s): appends and renewals fail.
    redis.pause();
    sleep_ms(11_000).await;
    redis.resume();

    let frames = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frames = logged(&p[1], &sid, "r-1").await;
            if frames.iter().any(is_terminal) {
                return frames;
            }
            sleep_ms(500).await;
        }
    })
    .await
    .expect("the turn ends after Redis is back");
    sleep_ms(3_000).await;
    let frames_later = logged(&p[1], &sid, "r-1").await;
    assert_eq!(frames_later.len(), frames.len(), "nothing is added after the ending: {frames_later:?}");
    let ending = single_ending(&frames_later);
    assert_eq!(ending["error"]["code"], "TURN_INTERRUPTED", "{ending}");
    assert_eq!(llm.request_count(), 1, "the stopped turn did not go on to call the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_turn_whose_slot_was_taken_ends_instead_of_running() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("gone")));
    let redis = RedisServer::start();
    let p = pods(1, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::tool_call("call-1", "delete_record", &json!({"id": "1"})));
    send_message(&mut a, &sid, "r-1", "delete 1").await;
    a.recv_until(|v| v["type"].as_str().is_some_and(|t| t.starts_with("stream_"))).await;

    // The parked turn's hold ran out and a newer turn took the session's slot (here: taken through the
    // backend, as a pod would).
    let backends = switchboard::backend::redis::connect(p[0].config()).await.expect("connect");
    let parked = backends.leases.current(&sid).await.expect("current").expect("the parked turn holds the slot");
    assert!(backends.leases.release(&sid, &parked.turn_id).await.expect("release"));
    let newer = switchboard::backend::TurnInfo::new("newer-turn", "r-newer", "another-pod");
    assert!(backends.leases.acquire(&sid, &newer, 30_000).await.expect("acquire"));

    llm.set_default(Reply::text(&["SHOULD NOT RUN"]));
    a.send(&json!({"action": "confirm_tool_action", "requestId": "yes", "sessionId": sid, "approved": true})).await;
    let frames = until_terminal(&mut a, "r-1").await;
    let ending = frames.last().expect("ending");
    assert_eq!(ending["error"]["code"], "TURN_INTERRUPTED", "{frames:?}");
    sleep_ms(500).await;
    assert!(tools.calls("delete_record").is_empty(), "the approved tool must not run beside the newer turn");
    assert_eq!(llm.request_count(), 1, "the model is not called again");
    assert_eq!(backends.leases.current(&sid).await.expect("current"), Some(newer), "the newer turn keeps its slot");
}
