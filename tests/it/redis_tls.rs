//! Redis over TLS: a real `redis-server --tls-port` with a CA and a server certificate this test makes, an ACL
//! user with a password, and the backend conformance checks over that connection; and a three-node cluster
//! whose client and cluster-bus traffic is TLS only.

use crate::support;

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, KeyPair};
use switchboard::backend::{conformance, redis};
use switchboard::config::Config;

/// A TLS-only Redis (plain port off) whose clients must log in as `app`.
struct TlsRedis {
    child: Child,
    port: u16,
    /// The CA file clients must trust; the directory lives as long as the server.
    ca_file: String,
    _dir: tempfile::TempDir,
}

impl Drop for TlsRedis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A test CA and a server certificate for localhost / 127.0.0.1, written into `dir`; returns the file paths
/// (ca, cert, key).
fn make_certs(dir: &std::path::Path) -> (String, String, String) {
    let path = |name: &str| dir.join(name).to_string_lossy().into_owned();
    let ca_key = KeyPair::generate().expect("ca key");
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("ca params");
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "switchboard test CA");
    let ca = ca_params.self_signed(&ca_key).expect("ca");
    let server_key = KeyPair::generate().expect("server key");
    let server = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()])
        .expect("server params")
        .signed_by(&server_key, &ca, &ca_key)
        .expect("server cert");
    std::fs::write(path("ca.pem"), ca.pem()).expect("write");
    std::fs::write(path("server.pem"), server.pem()).expect("write");
    std::fs::write(path("server.key"), server_key.serialize_pem()).expect("write");
    (path("ca.pem"), path("server.pem"), path("server.key"))
}

/// `redis-cli` over TLS to `port` (extra arguments first, e.g. credentials or `--cluster create`).
fn tls_cli(ca: &str, port: u16, args: &[&str]) -> std::process::Output {
    Command::new("redis-cli")
        .args(["--tls", "--cacert", ca, "-h", "127.0.0.1", "-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("redis-cli")
}

fn spawn_tls_server(dir: &std::path::Path, name: &str, conf: String) -> Child {
    let file = dir.join(format!("{name}.conf"));
    std::fs::write(&file, conf).expect("write");
    Command::new("redis-server")
        .arg(file)
        .current_dir(dir)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (with TLS) starts")
}

fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !ok() {
        assert!(Instant::now() < deadline, "{what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn start_tls_redis() -> TlsRedis {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_certs(dir.path());
    let port = support::ports::free_port();
    let conf = format!(
        "port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\n\
         tls-auth-clients no\nsave \"\"\nappendonly no\ndir {}\n\
         user default off\nuser app on >app-s3cret-pw ~* &* +@all\n",
        dir.path().display()
    );
    let child = spawn_tls_server(dir.path(), "redis", conf);
    wait_for("the TLS redis-server did not come up", || {
        let out = tls_cli(&ca, port, &["--user", "app", "--pass", "app-s3cret-pw", "--no-auth-warning", "PING"]);
        String::from_utf8_lossy(&out.stdout).contains("PONG")
    });
    TlsRedis { child, port, ca_file: ca, _dir: dir }
}

/// Three TLS-only cluster nodes (client and cluster-bus traffic over TLS), joined into one cluster.
struct TlsCluster {
    nodes: Vec<Child>,
    ports: Vec<u16>,
    ca_file: String,
    _dir: tempfile::TempDir,
}

impl Drop for TlsCluster {
    fn drop(&mut self) {
        for child in &mut self.nodes {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

fn start_tls_cluster() -> TlsCluster {
    let dir = tempfile::tempdir().expect("tempdir");
    let (ca, cert, key) = make_certs(dir.path());
    let ports: Vec<u16> = (0..3).map(|_| support::ports::free_cluster_port()).collect();
    let nodes = ports
        .iter()
        .map(|port| {
            let node_dir = dir.path().join(port.to_string());
            std::fs::create_dir(&node_dir).expect("node dir");
            let conf = format!(
                "port 0\ntls-port {port}\ntls-cluster yes\ntls-replication yes\nbind 127.0.0.1\n\
                 tls-cert-file {cert}\ntls-key-file {key}\ntls-ca-cert-file {ca}\ntls-auth-clients no\n\
                 cluster-enabled yes\ncluster-config-file nodes.conf\ncluster-node-timeout 5000\n\
                 save \"\"\nappendonly no\ndir {}\n",
                node_dir.display()
            );
            spawn_tls_server(&node_dir, "node", conf)
        })
        .collect();
    let cluster = TlsCluster { nodes, ports, ca_file: ca, _dir: dir };
    for &port in &cluster.ports {
        wait_for("a TLS cluster node did not come up", || {
            String::from_utf8_lossy(&tls_cli(&cluster.ca_file, port, &["PING"]).stdout).contains("PONG")
        });
    }
    let addrs: Vec<String> = cluster.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    let mut create = vec!["--cluster", "create"];
    create.extend(addrs.iter().map(String::as_str));
    create.extend(["--cluster-replicas", "0", "--cluster-yes"]);
    let out = tls_cli(&cluster.ca_file, cluster.ports[0], &create);
    assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
    for &port in &cluster.ports {
        wait_for("the TLS cluster did not become ok", || {
            let info =
                String::from_utf8_lossy(&tls_cli(&cluster.ca_file, port, &["CLUSTER", "INFO"]).stdout).into_owned();
            info.contains("cluster_state:ok") && info.contains("cluster_known_nodes:3")
        });
    }
    cluster
}

fn config(url: String, ca_file: &str) -> Config {
    Config {
        redis_url: url,
        redis_tls_ca_file: ca_file.to_string(),
        redis_key_prefix: support::unique_id("tls"),
        ..Config::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_work_over_tls_with_an_acl_user() {
    let redis = start_tls_redis();
    let url = format!("rediss://app:app-s3cret-pw@127.0.0.1:{}", redis.port);
    let cfg = config(url, &redis.ca_file);
    assert!(
        Config::load(
            None,
            vec![
                ("SWITCHBOARD_REDIS_URL".to_string(), cfg.redis_url.clone()),
                ("SWITCHBOARD_REDIS_TLS_CA_FILE".to_string(), redis.ca_file.clone()),
                ("SWITCHBOARD_AUTH__RESUME_SECRET".to_string(), "test-resume-secret-0123456789abcdef".to_string()),
            ]
        )
        .is_ok(),
        "the configuration validates"
    );
    let a = redis::connect(&cfg).await.expect("pod a connects over TLS");
    let b = redis::connect(&cfg).await.expect("pod b connects over TLS");
    conformance::sessions_and_history(&a, &b).await;
    conformance::event_log_and_publish(&a, &b, 1000).await;
    conformance::confirmations(&a, &b).await;
    assert!(a.health.ping().await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backends_work_on_a_tls_cluster() {
    let cluster = start_tls_cluster();
    let cfg = config(format!("rediss-cluster://127.0.0.1:{}", cluster.ports[0]), &cluster.ca_file);
    let a = redis::connect(&cfg).await.expect("pod a connects to the TLS cluster");
    let b = redis::connect(&cfg).await.expect("pod b connects to the TLS cluster");
    conformance::sessions_and_history(&a, &b).await;
    conformance::event_log_and_publish(&a, &b, 1000).await;
    conformance::bus_routing(&a, &b).await;
    conformance::confirmations(&a, &b).await;
    conformance::turn_leases(&a, &b).await;
    // The pods hold connections to every node (fred connects to each primary it routes to), and the nodes
    // have no plain port: all of it is TLS.
    for &port in &cluster.ports {
        let info = String::from_utf8_lossy(&tls_cli(&cluster.ca_file, port, &["INFO", "clients"]).stdout).into_owned();
        let clients: u64 = info
            .lines()
            .find_map(|l| l.strip_prefix("connected_clients:"))
            .and_then(|n| n.trim().parse().ok())
            .unwrap_or(0);
        assert!(clients > 1, "node {port} has no connection from the pods: {info}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_the_ca_does_not_vouch_for_or_a_wrong_password_is_refused() {
    let redis = start_tls_redis();
    // Trusting only the built-in public roots, the test CA's certificate does not verify.
    let untrusted = config(format!("rediss://app:app-s3cret-pw@127.0.0.1:{}", redis.port), "");
    let attempt = tokio::time::timeout(Duration::from_secs(15), redis::connect(&untrusted)).await;
    assert!(!matches!(attempt, Ok(Ok(_))), "an unverified server must not be used");
    let wrong_password = config(format!("rediss://app:wrong@127.0.0.1:{}", redis.port), &redis.ca_file);
    let attempt = tokio::time::timeout(Duration::from_secs(15), redis::connect(&wrong_password)).await;
    assert!(!matches!(attempt, Ok(Ok(_))), "a wrong password must not connect");
}
