//! A real headless Chromium (Debian's `chromium`, driven over WebDriver by `chromedriver`), for the widget's
//! browser tests. No tool downloads a browser: both binaries must be installed (`.ci/run` installs them with
//! apt-get). Each test gets its own chromedriver on a free port and its own browser profile, and leaves nothing
//! running: [`Browser::close`] ends the WebDriver session (Chromium quits), stops chromedriver and checks that no
//! process of that profile is alive; a test that panics first still has its chromedriver's process group and
//! every process of its profile killed on drop.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

pub struct Browser {
    pub client: fantoccini::Client,
    /// The chromedriver process, leader of its own process group; stopped by `close` or on drop.
    driver: Child,
    /// This browser's profile: every Chromium process it starts names it on its command line.
    profile: tempfile::TempDir,
    closed: bool,
}

/// Pids of the processes whose command line names `profile` (this test's Chromium and its helpers).
fn processes_of(profile: &Path) -> Vec<u32> {
    let needle = profile.to_string_lossy().into_owned();
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| {
            std::fs::read(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| String::from_utf8_lossy(&c).replace('\0', " ").contains(&needle))
        })
        .collect()
}

fn kill(target: &str) {
    let _ = Command::new("kill").args(["-KILL", "--", target]).stderr(Stdio::null()).status();
}

fn find(names: &[&str]) -> PathBuf {
    for n in names {
        for dir in ["/usr/bin", "/usr/local/bin", "/usr/lib/chromium"] {
            let p = PathBuf::from(dir).join(n);
            if p.is_file() {
                return p;
            }
        }
    }
    panic!("{names:?} not found: install Debian's chromium and chromium-driver (apt-get install chromium chromium-driver; .ci/run does)")
}

impl Browser {
    pub async fn start() -> Browser {
        let chromium = find(&["chromium", "chromium-browser"]);
        let chromedriver = find(&["chromedriver"]);
        let port = super::ports::free_port();
        let profile = tempfile::Builder::new().prefix("sb-browser-").tempdir().expect("profile dir");
        let driver = Command::new(chromedriver)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            // Its own process group, so the whole tree can be stopped even if it panics mid-test.
            .process_group(0)
            .spawn()
            .expect("chromedriver starts");
        let url = format!("http://127.0.0.1:{port}");
        let caps: serde_json::Map<String, Value> = serde_json::from_value(json!({
            "goog:chromeOptions": {
                "binary": chromium.to_string_lossy(),
                "args": ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                         "--disable-dev-shm-usage", "--window-size=900,900",
                         format!("--user-data-dir={}", profile.path().display())]
            }
        }))
        .expect("caps");
        let deadline = Instant::now() + Duration::from_secs(20);
        let client = loop {
            // Plain HTTP to chromedriver on 127.0.0.1: no TLS stack (fantoccini's would bring a second rustls
            // crypto provider into the test build).
            let connector = hyper_util::client::legacy::connect::HttpConnector::new();
            let mut builder = fantoccini::ClientBuilder::new(connector);
            match builder.capabilities(caps.clone()).connect(&url).await {
                Ok(c) => break c,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(e) => panic!("no WebDriver session from chromedriver: {e}"),
            }
        };
        Browser { client, driver, profile, closed: false }
    }

    /// Ends the WebDriver session (Chromium quits), stops chromedriver, and asserts that no process of this
    /// browser's profile is left running.
    pub async fn close(mut self) {
        let _ = self.client.clone().close().await;
        self.stop_driver();
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut left = processes_of(self.profile.path());
        while !left.is_empty() && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(100)).await;
            left = processes_of(self.profile.path());
        }
        self.closed = true;
        for pid in &left {
            kill(&pid.to_string());
        }
        assert!(left.is_empty(), "Chromium processes still running after the session closed: {left:?}");
    }

    fn stop_driver(&mut self) {
        kill(&format!("-{}", self.driver.id()));
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }

    /// Runs `script` (a function body; `arguments` are `args`) in the page and returns its value.
    pub async fn eval(&self, script: &str, args: Vec<Value>) -> Value {
        self.client.execute(script, args).await.unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// Waits until `script` returns something truthy (not false/null/""/0), then returns it.
    pub async fn wait_for(&self, what: &str, script: &str, within: Duration) -> Value {
        let deadline = Instant::now() + within;
        loop {
            let v = self.eval(script, vec![]).await;
            let truthy = !matches!(&v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0);
            if truthy {
                return v;
            }
            if Instant::now() >= deadline {
                let page = self.eval(SHADOW_TEXT, vec![]).await;
                panic!("waited {within:?} for {what}; the widget shows:\n{page}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a screenshot under `target/browser-screenshots/<name>.png` (kept as a CI artifact).
    pub async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self.client.screenshot().await.expect("screenshot");
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/browser-screenshots");
        std::fs::create_dir_all(&dir).expect("screenshot dir");
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png).expect("write screenshot");
        path
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if self.closed {
            return;
        }
        // A test that failed before `close`: stop everything this browser started.
        self.stop_driver();
        for pid in processes_of(self.profile.path()) {
            kill(&pid.to_string());
        }
    }
}

/// Everything the widget's shadow DOM shows, as text (for failure messages).
pub const SHADOW_TEXT: &str =
    "const w = document.querySelector('switchboard-chat'); const b = w && w.shadowRoot && w.shadowRoot.querySelector('.box'); return b ? b.innerText : '(no widget)';";
