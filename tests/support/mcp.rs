//! MCP servers for the tests, none built on the client's own SDK: a server from the official Python SDK (PyPI
//! `mcp`, `MCPServer` over streamable HTTP; `tests/mcp/server.py`) and `@modelcontextprotocol/server-everything`
//! (npm). Each is installed on first use into an ignored folder under `target/` (`.ci/run` installs them up
//! front) and runs as a child process on a free port, which a test can kill and start again.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

/// The versions the tests were written against.
pub const PY_MCP: &str = "mcp==2.3.0";
pub const EVERYTHING: &str = "@modelcontextprotocol/server-everything@2026.8.31";

fn target(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target").join(dir)
}

/// Serialises the installs of one test process.
static INSTALL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn python() -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let venv = target("mcp-py");
    let py = venv.join("bin/python");
    if venv.join(".installed").exists() {
        return py;
    }
    let ok = Command::new("python3").args(["-m", "venv"]).arg(&venv).status().is_ok_and(|s| s.success());
    assert!(ok, "python3 -m venv failed (Python 3.10+ is needed for the MCP tests)");
    let ok = Command::new(venv.join("bin/pip"))
        .args(["install", "--quiet", "--disable-pip-version-check", PY_MCP])
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "pip install {PY_MCP} failed");
    std::fs::write(venv.join(".installed"), PY_MCP).expect("stamp");
    py
}

fn everything_script() -> PathBuf {
    let _guard = INSTALL.lock().unwrap_or_else(|e| e.into_inner());
    let dir = target("mcp-everything");
    let script = dir.join("node_modules/@modelcontextprotocol/server-everything/dist/index.js");
    if script.exists() {
        return script;
    }
    std::fs::create_dir_all(&dir).expect("dir");
    std::fs::write(dir.join("package.json"), "{\"private\":true}\n").expect("package.json");
    let ok = Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", EVERYTHING])
        .current_dir(&dir)
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "npm install {EVERYTHING} failed");
    script
}

/// Waits until something accepts connections on `port`.
fn wait_listening(port: u16, what: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while std::time::Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on {port} within 60 s");
}

/// One MCP server child process.
pub struct McpServer {
    pub port: u16,
    child: Option<Child>,
    command: Box<dyn Fn(u16) -> Command + Send + Sync>,
    what: &'static str,
}

impl McpServer {
    /// The Python SDK's server (`tests/mcp/server.py`): `echo`, `slow`, `fail`, `weather` (structured),
    /// `tiny_image`, `headers`, `add_tool` / `remove_tool` (which announce `tools/list_changed`).
    pub fn python() -> McpServer {
        McpServer::python_on(super::ports::free_port())
    }

    /// [`McpServer::python`] on a given port (a server a pod was told about before it ran).
    pub fn python_on(port: u16) -> McpServer {
        let py = python();
        let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/mcp/server.py");
        McpServer::spawn(port, "the Python MCP server", move |port| {
            let mut c = Command::new(&py);
            c.arg(&script).args(["--host", "127.0.0.1", "--port", &port.to_string()]);
            c
        })
    }

    /// `@modelcontextprotocol/server-everything` in streamable HTTP mode.
    pub fn everything() -> McpServer {
        let script = everything_script();
        McpServer::spawn(super::ports::free_port(), "server-everything", move |port| {
            let mut c = Command::new("node");
            c.arg(&script).arg("streamableHttp").env("PORT", port.to_string());
            c
        })
    }

    fn spawn(port: u16, what: &'static str, command: impl Fn(u16) -> Command + Send + Sync + 'static) -> McpServer {
        let mut s = McpServer { port, child: None, command: Box::new(command), what };
        s.start();
        s
    }

    /// `http://127.0.0.1:<port>/mcp`.
    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/mcp", self.port)
    }

    /// Starts the server (again, on the same port).
    pub fn start(&mut self) {
        let child = (self.command)(self.port)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{} does not start: {e}", self.what));
        self.child = Some(child);
        wait_listening(self.port, self.what);
    }

    /// Kills the server (a crash: no goodbye to its clients).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Drop for McpServer {
    fn drop(&mut self) {
        self.kill();
    }
}
