//! A 3-master Redis Cluster of real servers.

use super::*;

/// A Redis Cluster of three masters (no replicas), with all 16384 slots assigned.
///
/// Three masters is the smallest cluster `redis-cli --cluster create` accepts, and it is enough to spread one
/// test's session keys over several nodes, exercising MOVED redirects and sharded pub/sub.
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts three cluster-enabled nodes, joins them with `redis-cli --cluster create`, and returns once
    /// every node reports `cluster_state:ok` and knows all three nodes.
    pub fn start() -> RedisCluster {
        let nodes: Vec<RedisServer> = (0..3)
            .map(|_| {
                RedisServer::launch("cluster node", free_cluster_port, |port, dir| {
                    let mut args = base_args(port, dir);
                    // Each node sits in its own temp dir, so `nodes.conf` never collides between nodes.
                    for a in [
                        "--cluster-enabled",
                        "yes",
                        "--cluster-config-file",
                        "nodes.conf",
                        "--cluster-node-timeout",
                        "5000",
                    ] {
                        args.push(a.into());
                    }
                    args
                })
            })
            .collect();
        let addrs: Vec<String> = nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())).collect();
        let out = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .stdin(Stdio::null())
            .output()
            .expect("run redis-cli --cluster create");
        assert!(out.status.success(), "redis-cli --cluster create failed: {}", describe(&out));
        let cluster = RedisCluster { nodes };
        cluster.wait_ok(READY_TIMEOUT);
        cluster
    }

    /// Waits until every running node says `cluster_state:ok` and knows all nodes, e.g. after restarting one.
    pub fn wait_ok(&self, timeout: Duration) {
        wait_until(timeout, "cluster_state:ok on every node", || {
            self.nodes.iter().all(|n| {
                let info = n.cli(&["CLUSTER", "INFO"]);
                info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
            })
        });
    }

    /// `redis-cluster://127.0.0.1:P1`: one seed is enough, the client discovers the rest from it.
    pub fn url(&self) -> String {
        format!("redis-cluster://127.0.0.1:{}", self.nodes[0].port())
    }

    /// `redis://127.0.0.1:P` for each node, for clients that want every seed listed.
    pub fn seed_urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// Node ports in creation order (index `i` is [`RedisCluster::node_mut`]`(i)`).
    pub fn ports(&self) -> Vec<u16> {
        self.nodes.iter().map(RedisServer::port).collect()
    }

    /// The nodes, for per-node assertions such as which node holds a key.
    pub fn nodes(&self) -> &[RedisServer] {
        &self.nodes
    }

    /// Mutable access to one node, to kill or restart it.
    pub fn node_mut(&mut self, i: usize) -> &mut RedisServer {
        &mut self.nodes[i]
    }

    /// Runs `redis-cli -c` against the first node; `-c` follows MOVED redirects, so any key works.
    pub fn cli(&self, args: &[&str]) -> String {
        redis_cli(self.nodes[0].port(), &["-c"], args)
    }
}
