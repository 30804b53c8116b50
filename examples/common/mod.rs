// Shared by several example programs; not every one uses every helper.
#![allow(dead_code)]

//! What the small benchmark programs share: a `redis-server` of their own on a free port (removed when
//! dropped) and one pod started in-process on it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Wall-clock nanoseconds since the Unix epoch: stamps that a client in another task (or process) compares.
pub fn now_ns() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0)
}

/// An environment variable parsed, or `default` when unset or unparsable.
pub fn env_or<T: std::str::FromStr>(name: &str, default: T) -> T {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

/// The value at fraction `p` (0..=1) of a sorted sample; `None` when it is empty.
pub fn percentile(sorted: &[u64], p: f64) -> Option<u64> {
    let last = sorted.len().checked_sub(1)?;
    sorted.get((last as f64 * p).round() as usize).copied()
}

/// Resident memory of a process in KiB (0 when it cannot be read).
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        .unwrap_or(0)
}

/// A child process (a pod) killed and reaped when dropped.
pub struct ChildGuard(pub Child);
impl Drop for ChildGuard {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).unwrap_or(0)
}

/// A `redis-server` child without persistence, killed (and its directory removed) on drop.
pub struct LocalRedis {
    pub port: u16,
    child: Child,
    dir: PathBuf,
}

impl LocalRedis {
    pub async fn start(name: &str) -> LocalRedis {
        let port = free_port();
        let dir = std::env::temp_dir().join(format!("{name}-{port}"));
        let _ = std::fs::create_dir_all(&dir);
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--save", "", "--appendonly", "no"])
            .current_dir(&dir)
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server");
        let up = Instant::now();
        while Command::new("redis-cli")
            .args(["-p", &port.to_string(), "PING"])
            .output()
            .map(|o| o.stdout)
            .unwrap_or_default()
            != b"PONG\n"
        {
            assert!(up.elapsed() < Duration::from_secs(10), "redis did not start");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        LocalRedis { port, child, dir }
    }

    /// A pod in-process on this Redis with one agent `bench`; `limits` is the body of its `[limits]` table.
    pub async fn pod(&self, name: &str, limits: &str) -> switchboard::server::Running {
        let toml = format!(
            "bind = \"127.0.0.1:0\"\nredis_url = \"redis://127.0.0.1:{}\"\n\
             [auth]\nresume_secret = \"bench-resume-secret-0123456789abcdef\"\n[limits]\n{limits}\n\
             [[agents]]\nid = \"bench\"\nname = \"Bench\"\nsystem_prompt = \"\"\n",
            self.port
        );
        let config = switchboard::config::Config::load_text(Some((name, &toml)), Vec::new()).expect("config");
        switchboard::server::start(config).await.expect("pod")
    }
}

impl Drop for LocalRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Serves an in-process fake model (or tool host) on a free port. `TCP_NODELAY` as a real streaming API sets
/// it: without it Nagle holds each small chunk until the previous one is acknowledged, and the receiver's
/// delayed ACK (up to 40 ms) then shows up as latency the server under test did not add.
pub async fn serve_model(app: axum::Router) -> u16 {
    use axum::serve::ListenerExt;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind model");
    let port = listener.local_addr().expect("addr").port();
    let listener = listener.tap_io(|tcp| {
        let _ = tcp.set_nodelay(true);
    });
    tokio::spawn(async move { axum::serve(listener, app).await });
    port
}
