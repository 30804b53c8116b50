//! Pods as real server processes (so a test can SIGKILL or SIGSTOP one), and reading a turn's whole logged
//! history back.

use std::process::{Child, Command, Stdio};

use super::*;

/// A Switchboard server process (the real binary), killed on drop.
pub(super) struct ProcessPod {
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
    pub(super) async fn start(mut config: switchboard::config::Config) -> ProcessPod {
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

    pub(super) fn ws_url(&self) -> String {
        format!("ws://127.0.0.1:{}/ws", self.port)
    }

    /// Turns this pod took over (`switchboard_turn_takeovers_total`).
    pub(super) async fn takeovers(&self) -> u64 {
        let metrics = scrape_url(&format!("http://127.0.0.1:{}/metrics", self.port)).await;
        metrics.find("switchboard_turn_takeovers_total", &[]).unwrap_or(0.0) as u64
    }

    /// SIGKILL: the process dies at once, with nothing released.
    pub(super) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    pub(super) fn signal(&self, sig: &str) {
        let _ = Command::new("kill").args([&format!("-{sig}"), &self.child.id().to_string()]).status();
    }
}

/// The frames of `rid` in the session's whole log, read by a fresh socket on `pod`.
pub(super) async fn logged(pod: &switchboard::server::Running, sid: &str, rid: &str) -> Vec<serde_json::Value> {
    logged_at(&ws_url(pod), sid, rid).await
}

/// [`logged`], read through the pod at `url`.
pub(super) async fn logged_at(url: &str, sid: &str, rid: &str) -> Vec<serde_json::Value> {
    let mut c = Client::connect_with(url, Some("switchboard"), None).await.expect("connect");
    c.send(&json!({"action": "resume_session", "requestId": "log", "sessionId": sid, "afterSeq": 0})).await;
    let mut frames = Vec::new();
    while let Some(Frame::Text(v)) = c.recv_raw_timeout(Duration::from_millis(1_500)).await {
        if v["requestId"] == rid {
            frames.push(v);
        }
    }
    frames
}

pub(super) fn is_terminal(v: &serde_json::Value) -> bool {
    matches!(v["type"].as_str(), Some("eventual_response" | "error" | "cancelled"))
}

/// The one ending of `rid`: exactly one terminal event, and it is the request's last event.
pub(super) fn single_ending(frames: &[serde_json::Value]) -> serde_json::Value {
    let endings: Vec<_> = frames.iter().filter(|v| is_terminal(v)).collect();
    assert_eq!(endings.len(), 1, "exactly one ending, got {endings:?}");
    assert!(is_terminal(frames.last().expect("frames")), "nothing after the ending: {frames:?}");
    endings[0].clone()
}

/// The reply text of an `eventual_response`.
pub(super) fn reply_text(ending: &serde_json::Value) -> String {
    ending["data"]["data"]["response"]["responseParts"][0].as_str().unwrap_or_default().to_string()
}

/// `cfg` for a process pod sharing `p`'s store and resume key.
pub(super) fn shared(
    cfg: &switchboard::config::Config,
    p: &switchboard::server::Running,
) -> switchboard::config::Config {
    let mut cfg = cfg.clone();
    cfg.redis_url = p.config().redis_url.clone();
    cfg.redis_key_prefix = p.config().redis_key_prefix.clone();
    cfg.auth.resume_secret = p.config().auth.resume_secret.clone();
    cfg
}
