//! Redis over TLS: a real `redis-server --tls-port` with a CA and a server certificate this test makes, an ACL
//! user with a password, and the backend conformance checks over that connection.

mod support;

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

fn start_tls_redis() -> TlsRedis {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = |name: &str| dir.path().join(name).to_string_lossy().into_owned();
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
    let port = support::ports::free_port();
    let conf = format!(
        "port 0\ntls-port {port}\nbind 127.0.0.1\ntls-cert-file {}\ntls-key-file {}\ntls-ca-cert-file {}\n\
         tls-auth-clients no\nsave \"\"\nappendonly no\ndir {}\n\
         user default off\nuser app on >app-s3cret-pw ~* &* +@all\n",
        path("server.pem"),
        path("server.key"),
        path("ca.pem"),
        dir.path().display()
    );
    std::fs::write(path("redis.conf"), conf).expect("write");
    let child = Command::new("redis-server")
        .arg(path("redis.conf"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("redis-server (with TLS) starts");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let ok = Command::new("redis-cli")
            .args(["--tls", "--cacert", &path("ca.pem"), "-h", "127.0.0.1", "-p", &port.to_string()])
            .args(["--user", "app", "--pass", "app-s3cret-pw", "--no-auth-warning", "PING"])
            .output()
            .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains("PONG"));
        if ok {
            break;
        }
        assert!(Instant::now() < deadline, "the TLS redis-server did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
    TlsRedis { child, port, ca_file: path("ca.pem"), _dir: dir }
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
