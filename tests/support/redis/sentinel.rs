//! A master/replica pair of real servers watched by one Sentinel.

use super::*;

/// A master, one replica of it, and a single Sentinel (quorum 1) watching them, tuned to fail over within a
/// few seconds so tests can cover "the master died" without waiting for production timeouts.
pub struct RedisSentinel {
    master: RedisServer,
    replica: RedisServer,
    sentinel: RedisServer,
}

impl RedisSentinel {
    /// Starts master, replica and Sentinel and returns once the Sentinel knows the replica, because a
    /// Sentinel that has not yet discovered a replica has nothing to promote and the failover test would hang.
    pub fn start() -> RedisSentinel {
        // Redis 7 delays a diskless full sync by 5 s to batch replicas; with one replica that is pure waiting,
        // both for the initial sync and for re-syncing a restarted old master after a failover.
        let master = RedisServer::start_with_args(&["--repl-diskless-sync-delay", "0"]);
        let replica = RedisServer::start_replica_of(&master);

        let master_port = master.port();
        let sentinel = RedisServer::launch("sentinel", free_port, move |port, dir| {
            let conf = dir.join("sentinel.conf");
            // Sentinel rewrites its config file at runtime, so it must be a writable file of its own.
            let text = format!(
                "port {port}\n\
                 bind 127.0.0.1\n\
                 protected-mode no\n\
                 dir {dir}\n\
                 sentinel resolve-hostnames no\n\
                 sentinel monitor {SENTINEL_MASTER_NAME} 127.0.0.1 {master_port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER_NAME} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER_NAME} 5000\n",
                dir = dir.display()
            );
            std::fs::write(&conf, text).expect("write sentinel.conf");
            vec![conf.into_os_string(), "--sentinel".into()]
        });

        let set = RedisSentinel { master, replica, sentinel };
        let replica_port = set.replica.port().to_string();
        wait_until(READY_TIMEOUT, "sentinel to discover the replica", || {
            let out = set.sentinel_cli(&["SENTINEL", "REPLICAS", SENTINEL_MASTER_NAME]);
            let lines: Vec<&str> = out.lines().collect();
            lines.contains(&replica_port.as_str()) && lines.contains(&"slave")
        });
        set
    }

    /// `redis-sentinel://127.0.0.1:SENTINELPORT/mymaster`.
    pub fn url(&self) -> String {
        format!("redis-sentinel://127.0.0.1:{}/{SENTINEL_MASTER_NAME}", self.sentinel.port())
    }

    /// The port of the master as started (it does not change after a failover; see
    /// [`RedisSentinel::current_master_port`] for Sentinel's current view).
    pub fn master_port(&self) -> u16 {
        self.master.port()
    }

    /// The replica's port: the node Sentinel promotes after [`RedisSentinel::kill_master`].
    pub fn replica_port(&self) -> u16 {
        self.replica.port()
    }

    /// The Sentinel's port (the one in [`RedisSentinel::url`]).
    pub fn sentinel_port(&self) -> u16 {
        self.sentinel.port()
    }

    /// The node started as master (a replica again once restarted after a failover and reconfigured).
    pub fn master(&self) -> &RedisServer {
        &self.master
    }

    /// Mutable access to the original master, to restart it after a failover.
    pub fn master_mut(&mut self) -> &mut RedisServer {
        &mut self.master
    }

    /// The node started as replica (the master after a failover).
    pub fn replica(&self) -> &RedisServer {
        &self.replica
    }

    /// Mutable access to the replica, to kill or restart it.
    pub fn replica_mut(&mut self) -> &mut RedisServer {
        &mut self.replica
    }

    /// The Sentinel process, e.g. for its log when a failover misbehaves.
    pub fn sentinel(&self) -> &RedisServer {
        &self.sentinel
    }

    /// SIGKILLs the master process started by [`RedisSentinel::start`].
    pub fn kill_master(&mut self) {
        self.master.kill();
    }

    /// Runs `redis-cli` against the Sentinel.
    pub fn sentinel_cli(&self, args: &[&str]) -> String {
        self.sentinel.cli(args)
    }

    /// The master port Sentinel currently announces (`SENTINEL get-master-addr-by-name`).
    pub fn current_master_port(&self) -> Option<u16> {
        let out = self.sentinel_cli(&["SENTINEL", "get-master-addr-by-name", SENTINEL_MASTER_NAME]);
        out.lines().nth(1)?.trim().parse().ok()
    }

    /// True once Sentinel announces a master other than the original and that node reports `role:master`,
    /// i.e. a client that follows `+switch-master` can write to it.
    fn failed_over(&self) -> Option<u16> {
        let port = self.current_master_port()?;
        if port == self.master.port() {
            return None;
        }
        let role = redis_cli(port, &[], &["ROLE"]);
        (role.lines().next() == Some("master")).then_some(port)
    }

    /// Blocks until Sentinel has promoted another node (after [`RedisSentinel::kill_master`]) and returns the
    /// new master's port. Panics with the Sentinel log after `timeout`.
    pub fn wait_for_failover(&self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = self.failed_over() {
                return port;
            }
            if Instant::now() >= deadline {
                self.failover_timed_out(timeout);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Like [`RedisSentinel::wait_for_failover`] but sleeps on the tokio timer, so code under test on the
    /// same current-thread runtime keeps running (and can observe the failover) while we wait.
    pub async fn wait_for_failover_async(&self, timeout: Duration) -> u16 {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(port) = self.failed_over() {
                return port;
            }
            if Instant::now() >= deadline {
                self.failover_timed_out(timeout);
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn failover_timed_out(&self, timeout: Duration) -> ! {
        panic!(
            "no failover within {timeout:?}; sentinel says master is {:?}; sentinel log:\n{}",
            self.current_master_port(),
            self.sentinel.log()
        );
    }
}
