//! Real `redis-server` processes for tests: a single server, a 3-master cluster, and a master/replica pair
//! watched by one Sentinel.
//!
//! Switchboard's promises (no lost session, resumable streams, failover) are about how it behaves when
//! Redis goes away and comes back, which a mock cannot show. So each helper owns real child processes on
//! free ports (never 6379, so a developer's own Redis is never touched), with persistence off so a restart
//! comes back empty and fast, and kills them when dropped so a failing test leaves nothing running.
//!
//! The API is blocking: starting and probing Redis takes milliseconds, and blocking keeps `Drop` simple.
//! Waits that take seconds ([`RedisSentinel::wait_for_failover`]) also have an `_async` form so the code
//! under test keeps running on a current-thread runtime meanwhile.

use std::ffi::OsString;
use std::fs::File;
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::ports::{free_cluster_port, free_port};

/// Generous, because CI runs on two cores while cargo may still be compiling other test binaries.
mod cluster;
mod sentinel;

// Not every test binary uses both.
#[allow(unused_imports)]
pub use cluster::RedisCluster;
#[allow(unused_imports)]
pub use sentinel::RedisSentinel;

const READY_TIMEOUT: Duration = Duration::from_secs(20);
const POLL: Duration = Duration::from_millis(25);

/// The Sentinel master name every helper and test agrees on.
pub const SENTINEL_MASTER_NAME: &str = "mymaster";

/// Why a launch failed; only a port conflict is worth retrying on another port.
enum LaunchError {
    PortInUse(String),
    Failed(String),
}

/// Poll `ready` until it holds, panicking with `what` after `timeout` so a hung setup names its cause.
pub fn wait_until(timeout: Duration, what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    loop {
        if ready() {
            return;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(POLL);
    }
}

/// Sends an inline `PING` over a fresh TCP connection; used for readiness because a successful connect alone
/// does not mean the server is past loading and answering commands.
pub fn ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    let Ok(mut conn) = TcpStream::connect_timeout(&addr, Duration::from_millis(250)) else {
        return false;
    };
    let timeout = Some(Duration::from_millis(500));
    if conn.set_read_timeout(timeout).is_err()
        || conn.set_write_timeout(timeout).is_err()
        || conn.write_all(b"PING\r\n").is_err()
    {
        return false;
    }
    let mut reply = Vec::new();
    let mut buf = [0u8; 64];
    while !reply.windows(2).any(|w| w == b"\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => reply.extend_from_slice(&buf[..n]),
        }
    }
    reply.starts_with(b"+PONG")
}

/// Runs `redis-cli` and returns its stdout with the trailing newline removed.
///
/// stdout is not a terminal here, so redis-cli prints raw values (`PONG`, one array element per line),
/// which is the easiest form to assert on. Failures to connect go to stderr, leaving stdout empty.
fn redis_cli(port: u16, extra: &[&str], args: &[&str]) -> String {
    let out = Command::new("redis-cli")
        .args(["-h", "127.0.0.1", "-p", &port.to_string()])
        .args(extra)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli (is it on PATH?)");
    String::from_utf8_lossy(&out.stdout).trim_end().to_string()
}

fn describe(out: &Output) -> String {
    format!(
        "status {}\nstdout:\n{}\nstderr:\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Arguments shared by every data-bearing server: loopback only, and no RDB/AOF so a restart starts empty
/// and nothing is written outside the server's temp dir.
fn base_args(port: u16, dir: &Path) -> Vec<OsString> {
    let mut args: Vec<OsString> = [
        "--port",
        &port.to_string(),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--protected-mode",
        "no",
        "--daemonize",
        "no",
    ]
    .iter()
    .map(OsString::from)
    .collect();
    args.push("--dir".into());
    args.push(dir.as_os_str().to_owned());
    args
}

/// One `redis-server` child process (plain server, cluster node, replica or Sentinel), killed on drop.
///
/// The port and the working directory outlive the process, so [`RedisServer::restart`] brings back the same
/// address a client under test was configured with (and, for cluster nodes, the same `nodes.conf`).
pub struct RedisServer {
    port: u16,
    kind: &'static str,
    dir: tempfile::TempDir,
    args: Vec<OsString>,
    child: Option<Child>,
}

impl RedisServer {
    /// Starts a standalone Redis on a free port and returns once it answers `PING`.
    pub fn start() -> RedisServer {
        Self::launch("redis", free_port, base_args)
    }

    /// Starts a server with extra `redis-server` arguments (e.g. `["--maxmemory", "1mb"]`).
    pub fn start_with_args(extra: &[&str]) -> RedisServer {
        let extra: Vec<OsString> = extra.iter().map(OsString::from).collect();
        Self::launch("redis", free_port, move |port, dir| {
            let mut args = base_args(port, dir);
            args.extend(extra.iter().cloned());
            args
        })
    }

    /// Starts a replica of `master` and returns once the two are in sync. Start the master with
    /// `--repl-diskless-sync-delay 0`, or the first sync waits 5 s.
    pub fn start_replica_of(master: &RedisServer) -> RedisServer {
        let master_port = master.port().to_string();
        let replica = RedisServer::launch("replica", free_port, move |port, dir| {
            let mut args = base_args(port, dir);
            for a in ["--repl-diskless-sync-delay", "0", "--replicaof", "127.0.0.1", master_port.as_str()] {
                args.push(a.into());
            }
            args
        });
        wait_until(READY_TIMEOUT, "replica to sync with master", || {
            replica.info("replication").contains("master_link_status:up")
                && master.info("replication").contains("connected_slaves:1")
        });
        replica
    }

    /// Picks a port, builds the command line and starts the process, trying a new port when another process
    /// grabbed the one we picked between probing and binding (the probe cannot reserve it).
    fn launch(
        kind: &'static str,
        pick_port: fn() -> u16,
        build_args: impl Fn(u16, &Path) -> Vec<OsString>,
    ) -> RedisServer {
        let mut last = String::new();
        for _ in 0..5 {
            let port = pick_port();
            let dir =
                tempfile::Builder::new().prefix("switchboard-redis-").tempdir().expect("create temp dir for redis");
            let args = build_args(port, dir.path());
            let mut server = RedisServer { port, kind, dir, args, child: None };
            match server.spawn_and_wait() {
                Ok(()) => return server,
                Err(LaunchError::PortInUse(log)) => last = log,
                Err(LaunchError::Failed(msg)) => panic!("{msg}"),
            }
        }
        panic!("{kind} could not start: port in use on 5 tries; last log:\n{last}");
    }

    fn spawn_and_wait(&mut self) -> Result<(), LaunchError> {
        let log = File::options().create(true).append(true).open(self.log_path()).expect("open redis log file");
        let child = Command::new("redis-server")
            .args(&self.args)
            .current_dir(self.dir.path())
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("clone log handle"))
            .stderr(log)
            .spawn()
            .expect("spawn redis-server (is it on PATH?)");
        self.child = Some(child);

        let deadline = Instant::now() + READY_TIMEOUT;
        loop {
            if let Some(status) = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                self.child = None;
                let log = self.log();
                return Err(if log.contains("Address already in use") {
                    LaunchError::PortInUse(log)
                } else {
                    LaunchError::Failed(format!(
                        "{} on port {} exited during startup ({status}); log:\n{log}",
                        self.kind, self.port
                    ))
                });
            }
            if ping(self.port) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                self.kill();
                return Err(LaunchError::Failed(format!(
                    "{} on port {} did not answer PING within {READY_TIMEOUT:?}; log:\n{}",
                    self.kind,
                    self.port,
                    self.log()
                )));
            }
            std::thread::sleep(POLL);
        }
    }

    /// The port, stable across [`RedisServer::restart`], so clients configured with it reconnect to it.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT`, the form Switchboard's `redis_url` takes for a single server.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// The OS process id while running, for tests that signal the process themselves.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether our child process is alive (it may have been killed, or died on its own).
    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    /// Whether the server answers `PING` right now.
    pub fn ping(&self) -> bool {
        ping(self.port)
    }

    /// SIGKILLs the process and reaps it: an abrupt crash, with no chance to close connections politely,
    /// which is the failure a gateway must survive. Idempotent.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Starts the server again on the same port and directory (killing it first if it still runs) and
    /// returns once it answers `PING`. Data is gone, since persistence is off: like a Redis that lost its
    /// memory, which is what clients must detect.
    pub fn restart(&mut self) {
        self.kill();
        if let Err(LaunchError::PortInUse(log) | LaunchError::Failed(log)) = self.spawn_and_wait() {
            panic!("restarting {} on port {} failed:\n{log}", self.kind, self.port);
        }
    }

    /// SIGSTOPs the process: the socket stays open but nothing answers, i.e. a hung Redis rather than a
    /// dead one, which exercises timeouts instead of reconnects. Undo with [`RedisServer::resume`].
    pub fn pause(&self) {
        self.signal("-STOP");
    }

    /// SIGCONTs a process stopped by [`RedisServer::pause`].
    pub fn resume(&self) {
        self.signal("-CONT");
    }

    fn signal(&self, sig: &str) {
        let pid = self.pid().expect("server is not running");
        let status = Command::new("kill").args([sig, &pid.to_string()]).status().expect("run kill");
        assert!(status.success(), "kill {sig} {pid} failed");
    }

    /// Runs `redis-cli -p PORT ARGS...` and returns its stdout (raw values, trailing newline trimmed).
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.port, &[], args)
    }

    /// `INFO section` as text, for assertions on replication or memory state.
    pub fn info(&self, section: &str) -> String {
        self.cli(&["INFO", section])
    }

    /// The server's stdout/stderr log so far (all runs, including before restarts), for failure messages.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The server's private working directory (log, `nodes.conf`, `sentinel.conf`), removed on drop.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    fn log_path(&self) -> PathBuf {
        self.dir.path().join("redis.log")
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
    }
}
