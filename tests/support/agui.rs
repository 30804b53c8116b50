//! AG-UI's official TypeScript client, `@ag-ui/client` (`HttpAgent`), run by Node against a pod: the test
//! sends one command at a time to `tests/agui/driver.cjs` and reads what the client saw (its validated events,
//! its messages and pending interrupts). The package is installed from npm into `target/agui-client` (ignored
//! by git) on first use; `.ci/run` installs it up front.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::process::{Child, ChildStdin, ChildStdout, Command};

/// The client version the tests were written against.
pub const CLIENT: &str = "@ag-ui/client@1.0.0";

fn dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/agui-client")
}

/// Installs the client once per test process (npm, into `target/agui-client`).
fn ensure_installed() -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _guard = LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let dir = dir();
    if dir.join("node_modules/@ag-ui/client/package.json").exists() {
        return dir;
    }
    std::fs::create_dir_all(&dir).expect("client dir");
    if !dir.join("package.json").exists() {
        std::fs::write(dir.join("package.json"), "{\"private\":true}\n").expect("package.json");
    }
    let status = std::process::Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", CLIENT])
        .current_dir(&dir)
        .status()
        .expect("npm runs (Node.js and npm are needed for the AG-UI tests)");
    assert!(status.success(), "npm install {CLIENT} failed");
    dir
}

/// One Node process running the official client.
pub struct AguiClient {
    child: Child,
    stdin: ChildStdin,
    out: Lines<BufReader<ChildStdout>>,
}

impl AguiClient {
    pub async fn start() -> AguiClient {
        let modules = ensure_installed().join("node_modules");
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/agui/driver.cjs");
        let mut child = Command::new("node")
            .arg(script)
            .env("NODE_PATH", modules)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .expect("node starts");
        let stdin = child.stdin.take().expect("stdin");
        let out = BufReader::new(child.stdout.take().expect("stdout")).lines();
        AguiClient { child, stdin, out }
    }

    /// Sends one command and returns the client's answer.
    pub async fn cmd(&mut self, command: Value) -> Value {
        let line = format!("{command}\n");
        self.stdin.write_all(line.as_bytes()).await.expect("write to the client");
        let answer = tokio::time::timeout(Duration::from_secs(30), self.out.next_line())
            .await
            .unwrap_or_else(|_| panic!("the AG-UI client did not answer {command} within 30 s"))
            .expect("read the client")
            .expect("the client exited");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("not JSON from the client: {e}: {answer}"))
    }
}

impl Drop for AguiClient {
    fn drop(&mut self) {
        let _ = self.child.start_kill();
    }
}
