//! Chaos: three pods (the release binary, as child processes) on Redis (single, then Sentinel), clients running
//! turns with tools, approvals and interaction cards, while pods are SIGKILLed, SIGSTOPped past their lease and
//! restarted, Redis is restarted and the Sentinel master fails over, at random, for a set time. It checks every
//! turn and prints a table; docs/benchmarks.md records a run.
//!
//! `cargo build --release --bin switchboard --example chaos && target/release/examples/chaos`
//! (CHAOS_SECONDS per Redis mode, default 300; CHAOS_CLIENTS, default 200; CHAOS_MODES, default
//! `single,sentinel`; CHAOS_FAULT_EVERY_S, mean seconds between faults, default 4; CHAOS_LOG_DIR: each pod's log there.)
//!
//! Checked per turn: exactly one ending (a second one, or none within 60 s of quiet, is a violation; a direct
//! refusal, with no seq, of a message the client sent again unacknowledged, after its request's logged ending,
//! started nothing and is counted apart); the text of
//! an `eventual_response` is exactly the tokens the client received (none lost, none twice, across pod deaths
//! and reconnects); per session, every event's `seq` follows the last one (a gap is a violation; after a
//! reconnect the client resumes from its last seq); approvals and card answers are re-sent after a reconnect
//! until the turn moves on, so a lost answer shows as a turn without an ending; a tool that is not idempotent
//! (`send_email`, `delete_record`) never receives the same `Idempotency-Key` twice; a session the client was told
//! it has is never `SESSION_NOT_FOUND` later (the client then starts a new one). Redis runs with
//! `appendfsync always` (a restart keeps its data); a Sentinel-watched master and replica with `redis_wait_replicas = 1`.

// The tests' own Redis helpers (real `redis-server` processes, a Sentinel pair that fails over).
#[allow(dead_code)]
#[path = "../tests/support/ports.rs"]
mod ports;
#[allow(dead_code)]
#[path = "../tests/support/redis/mod.rs"]
mod redis;

use std::collections::HashMap;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::response::IntoResponse;
use futures_util::{SinkExt, StreamExt};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

mod common;
use common::env_or;
use ports::free_port;
use redis::{RedisSentinel, RedisServer};

const LEASE_MS: u64 = 2_000;
/// A turn with no event for this long has lost its ending.
const QUIET_LIMIT: Duration = Duration::from_secs(60);

/// What the clients and the tool host saw, for the table.
#[derive(Default)]
struct Tally {
    turns: AtomicU64,
    completed: AtomicU64,
    errors: Mutex<HashMap<String, u64>>,
    resumed: AtomicU64,
    approvals: AtomicU64,
    cards: AtomicU64,
    reconnects: AtomicU64,
    resume_refused: AtomicU64,
    /// Session creations refused (each asked for again).
    create_refused: AtomicU64,
    /// Direct refusals (no seq) of a message the client sent again, for a request whose ending was logged: the
    /// duplicate started nothing (`TURN_IN_PROGRESS`, or a start refused), so it is no second ending.
    duplicates_refused: AtomicU64,
    no_ending: AtomicU64,
    two_endings: AtomicU64,
    /// Sessions the client was told were created, later not found (a failover took them back).
    sessions_lost: AtomicU64,
    text_mismatch: AtomicU64,
    seq_gaps: AtomicU64,
    epoch_changes: AtomicU64,
    /// (tool, Idempotency-Key) → calls.
    tool_calls: Mutex<HashMap<(String, String), u64>>,
    examples: Mutex<Vec<String>>,
    /// Sessions with a turn that never ended, and the last seq their client had: compared with the log at the
    /// end, to tell a lost ending from a log that went back.
    stuck: Mutex<Vec<(String, u64)>>,
}

impl Tally {
    fn violation(&self, counter: &AtomicU64, what: String) {
        counter.fetch_add(1, Ordering::Relaxed);
        let mut ex = self.examples.lock();
        if ex.len() < 40 {
            ex.push(what);
        }
    }
    fn repeated_unsafe_calls(&self) -> u64 {
        let calls = self.tool_calls.lock();
        calls.iter().filter(|((tool, _), n)| tool != "lookup_order" && **n > 1).map(|(_, n)| n - 1).sum()
    }
}

/// The model: a slow text reply by default (kills land mid-stream), a tool call for "lookup"/"email"/"delete",
/// an identity card for "card", a short answer after a tool result, and "the rest." to continue a cut reply.
/// The tool host answers after 300 ms (kills land mid-call) and counts calls per `Idempotency-Key`.
async fn fake_model_and_tools(tally: Arc<Tally>) -> u16 {
    let chat = axum::routing::post(|axum::Json(body): axum::Json<Value>| async move {
        let messages = body["messages"].as_array().cloned().unwrap_or_default();
        let last = messages.last().cloned().unwrap_or(Value::Null);
        let content = last["content"].as_str().unwrap_or_default().to_string();
        let call = |name: &str, args: Value| {
            let id = format!("call_{}", uuid::Uuid::new_v4().simple());
            json!({"choices": [{"index": 0, "delta": {"tool_calls": [{"index": 0, "id": id, "type": "function",
                "function": {"name": name, "arguments": args.to_string()}}]}}]})
        };
        let (chunks, delay_ms): (Vec<Value>, u64) = if last["role"] == "user" {
            let first = content.split_whitespace().next().unwrap_or_default();
            match first {
                "lookup" => (vec![call("lookup_order", json!({"id": "7"}))], 0),
                "email" => (vec![call("send_email", json!({"to": "a@example.com"}))], 0),
                "delete" => (vec![call("delete_record", json!({"id": "7"}))], 0),
                "card" => {
                    (vec![call("request_identity_intake", json!({"fields": ["email"], "reason": "to reply"}))], 0)
                }
                _ => (words(20), 50),
            }
        } else if body.get("continue_final_message").is_some() || content.contains("cut off") {
            (vec![text("the rest.")], 0)
        } else {
            (words(8), 30)
        };
        let usage = json!({"choices": [], "usage": {"prompt_tokens": 20, "completion_tokens": 10}});
        let frames =
            futures_util::stream::iter(chunks.into_iter().chain([usage]).enumerate()).then(move |(i, c)| async move {
                if i > 0 && delay_ms > 0 {
                    tokio::time::sleep(Duration::from_millis(delay_ms)).await;
                }
                Ok::<_, std::convert::Infallible>(format!("data: {c}\n\n"))
            });
        let done = futures_util::stream::once(async { Ok("data: [DONE]\n\n".to_string()) });
        ([("content-type", "text/event-stream")], axum::body::Body::from_stream(frames.chain(done))).into_response()
    });
    let tool = axum::routing::post(
        |axum::extract::State(tally): axum::extract::State<Arc<Tally>>,
         axum::extract::Path(name): axum::extract::Path<String>,
         headers: axum::http::HeaderMap| async move {
            let key = headers.get("idempotency-key").and_then(|v| v.to_str().ok()).unwrap_or_default().to_string();
            *tally.tool_calls.lock().entry((name.clone(), key)).or_default() += 1;
            tokio::time::sleep(Duration::from_millis(300)).await;
            axum::Json(json!({"result": format!("{name} done")}))
        },
    );
    let app = axum::Router::new().route("/v1/chat/completions", chat).route("/tools/{name}", tool).with_state(tally);
    common::serve_model(app).await
}

fn text(t: &str) -> Value {
    json!({"choices": [{"index": 0, "delta": {"content": t}}]})
}

fn words(n: usize) -> Vec<Value> {
    (0..n).map(|i| text(&format!("w{i} "))).collect()
}

/// One pod slot: a fixed port, the process when it runs.
struct Pod {
    port: u16,
    child: Option<Child>,
    stopped: bool,
}

impl Pod {
    fn alive(&self) -> bool {
        self.child.is_some() && !self.stopped
    }
    fn signal(&self, sig: &str) {
        if let Some(c) = &self.child {
            let _ = Command::new("kill").args([sig, &c.id().to_string()]).status();
        }
    }
    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.stopped = false;
    }
}

impl Drop for Pod {
    fn drop(&mut self) {
        self.signal("-CONT");
        self.kill();
    }
}

/// How the pods reach Redis, and what the fault injector can do to it.
enum Store {
    Single(RedisServer),
    Sentinel(RedisSentinel),
}

impl Store {
    fn url(&self) -> String {
        match self {
            Store::Single(r) => r.url(),
            Store::Sentinel(s) => s.url(),
        }
    }
}

fn spawn_pod(bin: &str, port: u16, redis_url: &str, model: u16, sentinel: bool) -> Child {
    // CHAOS_LOG_DIR: each pod's warnings go to `pod-<port>.log` there.
    let log = std::env::var("CHAOS_LOG_DIR").ok();
    let log = log.as_deref();
    let agents = json!([{"id": "chaos", "name": "Chaos", "confirm_tools": ["delete_*"],
        "interactions": ["identity_intake"],
        "tools": [
            {"name": "lookup_order", "url": format!("http://127.0.0.1:{model}/tools/lookup_order"), "idempotent": true},
            {"name": "send_email", "url": format!("http://127.0.0.1:{model}/tools/send_email")},
            {"name": "delete_record", "url": format!("http://127.0.0.1:{model}/tools/delete_record")}]}]);
    let mut cmd = Command::new(bin);
    cmd.arg("serve")
        .env("SWITCHBOARD_BIND", format!("127.0.0.1:{port}"))
        .env("SWITCHBOARD_REDIS_URL", redis_url)
        .env("SWITCHBOARD_AUTH__RESUME_SECRET", "chaos-resume-secret-0123456789abcdef")
        .env("SWITCHBOARD_LLM__BASE_URL", format!("http://127.0.0.1:{model}/v1"))
        .env("SWITCHBOARD_AGENTS", agents.to_string())
        .env("SWITCHBOARD_TURN__LEASE_MS", LEASE_MS.to_string())
        .env("SWITCHBOARD_TOOLS__TIMEOUT_MS", "5000")
        .env("SWITCHBOARD_LIMITS__MESSAGES_PER_USER_PER_MINUTE", "10000000")
        .env("SWITCHBOARD_LIMITS__SESSIONS_PER_USER_PER_MINUTE", "10000000")
        .env("SWITCHBOARD_LIMITS__SOCKETS_PER_USER", "100000")
        .env("SWITCHBOARD_LIMITS__TURNS_PER_USER", "100000")
        // Every chaos client is the one anonymous user: its per-user budgets would throttle the run, not test it.
        .env("SWITCHBOARD_LIMITS__REPLAY_BYTES_PER_USER_PER_MINUTE", "100000000000")
        .env("SWITCHBOARD_LIMITS__READS_PER_USER_PER_MINUTE", "10000000")
        .env("SWITCHBOARD_LOG_FORMAT", "json")
        .env("RUST_LOG", if log.is_some() { "warn" } else { "error" })
        .stderr(Stdio::null())
        .stdout(match log {
            Some(dir) => std::fs::File::options()
                .create(true)
                .append(true)
                .open(format!("{dir}/pod-{port}.log"))
                .map_or_else(|_| Stdio::null(), Stdio::from),
            None => Stdio::null(),
        });
    if sentinel {
        // One replica, which must confirm (`WAIT` must count every replica: Sentinel may promote one that did not
        // acknowledge). After a failover there is none until Sentinel has made the old master a replica and it
        // has re-synced (up to ~10 s): writes wait for it rather than go on unconfirmed, which the next failover
        // could take back.
        cmd.env("SWITCHBOARD_REDIS_WAIT_REPLICAS", "1").env("SWITCHBOARD_REDIS_WAIT_TIMEOUT_MS", "20000");
    }
    cmd.spawn().unwrap_or_else(|e| panic!("cannot start {bin} (cargo build --release first): {e}"))
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(port: u16) -> Option<Ws> {
    let mut req = format!("ws://127.0.0.1:{port}/ws").into_client_request().ok()?;
    req.headers_mut().insert("Sec-WebSocket-Protocol", "switchboard".parse().ok()?);
    let connected = tokio::time::timeout(Duration::from_secs(3), tokio_tungstenite::connect_async(req)).await;
    connected.ok()?.ok().map(|(ws, _)| ws)
}

/// A client's running turn.
struct Turn {
    rid: String,
    tokens: String,
    /// The approval or card answer sent, re-sent after a reconnect until the turn moves on.
    answer: Option<Value>,
    last_event: Instant,
    /// The `send_message`; until the server acknowledged it (202, or any event of the turn) it is sent again
    /// after a reconnect, once the resumed log had a moment to show whether it was taken.
    message: Value,
    accepted: bool,
    resend_at: Option<Instant>,
    /// What this turn's client saw and did, in order (frame types with their seq, reconnects, resends): printed
    /// with a violation, to tell which write a fault took back.
    trail: Vec<String>,
}

/// One client: a session, turns one after another, reconnecting to a live pod whenever its socket drops.
async fn client(n: usize, ports: Arc<Vec<u16>>, tally: Arc<Tally>, until: Instant) {
    let mut sid: Option<String> = None;
    let mut last_seq = 0u64;
    let mut epoch = String::new();
    // Each ended request and how: its ending kind or error code, and the seq it came at (`None`: a direct reply).
    let mut ended: HashMap<String, (String, Option<u64>)> = HashMap::new();
    let mut turn: Option<Turn> = None;
    let mut count = 0u64;
    'connection: loop {
        if Instant::now() >= until && turn.is_none() {
            return;
        }
        let port = ports[rand::random::<usize>() % ports.len()];
        let Some(mut ws) = connect(port).await else {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        };
        let hello = match &sid {
            None => json!({"action": "create_conversation_session", "requestId": "c", "agentId": "chaos",
                           "supports": ["identity_form"]}),
            Some(s) => json!({"action": "resume_session", "requestId": "r", "sessionId": s, "afterSeq": last_seq}),
        };
        if ws.send(Message::text(hello.to_string())).await.is_err() {
            continue;
        }
        if let Some(answer) = turn.as_ref().and_then(|t| t.answer.clone()) {
            if sid.is_some() && ws.send(Message::text(answer.to_string())).await.is_err() {
                continue;
            }
        }
        if let Some(t) = turn.as_mut() {
            t.trail.push(format!("reconnect@{port}"));
            if !t.accepted {
                t.resend_at = Some(Instant::now() + Duration::from_secs(1));
            }
        }
        loop {
            if turn.is_none() && sid.is_some() {
                if Instant::now() >= until {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(200 + rand::random::<u64>() % 800)).await;
                count += 1;
                let rid = format!("c{n}-{count}");
                let kind = ["tell", "tell", "tell", "lookup", "email", "delete", "card"][rand::random::<usize>() % 7];
                let m = json!({"action": "send_message", "requestId": rid, "sessionId": sid, "message": format!("{kind} me")});
                tally.turns.fetch_add(1, Ordering::Relaxed);
                let message = m.clone();
                turn = Some(Turn {
                    rid,
                    tokens: String::new(),
                    answer: None,
                    last_event: Instant::now(),
                    message,
                    accepted: false,
                    resend_at: None,
                    trail: vec![format!("sent@{port}")],
                });
                if ws.send(Message::text(m.to_string())).await.is_err() {
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue 'connection;
                }
            }
            if let Some(t) = turn.as_mut().filter(|t| t.resend_at.is_some_and(|at| at <= Instant::now())) {
                t.resend_at = None;
                if !t.accepted {
                    t.trail.push("resent".into());
                }
                if !t.accepted && ws.send(Message::text(t.message.to_string())).await.is_err() {
                    continue 'connection;
                }
            }
            let quiet = match &turn {
                None => Duration::from_secs(1),
                Some(t) if t.resend_at.is_some() => Duration::from_millis(200),
                Some(t) => QUIET_LIMIT.saturating_sub(t.last_event.elapsed()),
            };
            let msg = match tokio::time::timeout(quiet, ws.next()).await {
                Ok(Some(Ok(Message::Text(t)))) => t,
                Ok(Some(Ok(_))) => continue,
                Ok(_) => {
                    tally.reconnects.fetch_add(1, Ordering::Relaxed);
                    continue 'connection;
                }
                Err(_) => {
                    if let Some(t) = turn.take_if(|t| t.resend_at.is_none() && t.last_event.elapsed() >= QUIET_LIMIT) {
                        let accepted = if t.accepted { "accepted" } else { "never acknowledged" };
                        tally.stuck.lock().push((sid.clone().unwrap_or_default(), last_seq));
                        tally.violation(
                            &tally.no_ending,
                            format!(
                                "{} (session {}): {accepted}, no ending within {QUIET_LIMIT:?}; saw {}",
                                t.rid,
                                sid.as_deref().unwrap_or_default(),
                                t.trail.join(" ")
                            ),
                        );
                    }
                    continue;
                }
            };
            let v: Value = serde_json::from_str(&msg).unwrap_or(Value::Null);
            if sid.is_none() {
                if let Some(s) = v["data"]["sessionId"].as_str() {
                    sid = Some(s.to_string());
                } else if v["type"] == "error" && v["requestId"] == "c" {
                    // The session was not created (Redis failing over, or replicas not confirming it): asked for
                    // again on a fresh socket, as a client must, or this client would wait for it forever.
                    tally.create_refused.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(500)).await;
                    continue 'connection;
                }
                continue;
            }
            if v["type"] == "reconnect" {
                continue 'connection;
            }
            if v["type"] == "error" && v["data"]["error"]["code"] == "SESSION_NOT_FOUND" {
                // The session this client was told it has is gone: a violation; the client starts a new one (its
                // turn in flight went with the session).
                let lost = sid.take().unwrap_or_default();
                let what = turn.take().map(|t| format!("; its turn {} saw {}", t.rid, t.trail.join(" ")));
                tally.violation(&tally.sessions_lost, format!("session {lost} not found{}", what.unwrap_or_default()));
                (last_seq, epoch) = (0, String::new());
                ended.clear();
                continue 'connection;
            }
            if v["type"] == "error" && v["requestId"] == "r" {
                // The resume was refused (a pod between Redis connections, a budget): try again on a fresh
                // socket, as a client must, or this session would never hear of its turn.
                tally.resume_refused.fetch_add(1, Ordering::Relaxed);
                let wait = v["data"]["details"]["retryAfterMs"].as_u64().unwrap_or(500);
                tokio::time::sleep(Duration::from_millis(wait.min(5_000))).await;
                continue 'connection;
            }
            if let Some(seq) = v["seq"].as_u64() {
                let e = v["epoch"].as_str().unwrap_or_default();
                if !epoch.is_empty() && e != epoch {
                    tally.epoch_changes.fetch_add(1, Ordering::Relaxed);
                    last_seq = seq.saturating_sub(1);
                }
                epoch = e.to_string();
                if seq <= last_seq {
                    continue;
                }
                if seq > last_seq + 1 {
                    tally.violation(&tally.seq_gaps, format!("client {n}: seq {last_seq} then {seq}"));
                }
                last_seq = seq;
            }
            let rid = v["requestId"].as_str().unwrap_or_default();
            let kind = v["type"].as_str().unwrap_or_default();
            let code = v["data"]["error"]["code"].as_str().or(v["error"]["code"].as_str()).unwrap_or(kind);
            if let Some((first, at)) =
                ended.get(rid).filter(|_| matches!(kind, "eventual_response" | "error" | "cancelled"))
            {
                if at.is_some() && v["seq"].is_null() && kind == "error" {
                    tally.duplicates_refused.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                let sid = sid.as_deref().unwrap_or_default();
                let seq = v["seq"].as_u64();
                tally.violation(
                    &tally.two_endings,
                    format!("{rid} (session {sid}): {first} at seq {at:?}, then {code} at seq {seq:?}"),
                );
                continue;
            }
            if let Some(t) = turn.as_mut().filter(|t| t.trail.len() < 60) {
                let seq = v["seq"].as_u64().map(|s| format!("@{s}")).unwrap_or_default();
                let whose = if t.rid == rid { "" } else { "other:" };
                t.trail.push(format!("{whose}{code}{seq}"));
            }
            let Some(t) = turn.as_mut().filter(|t| t.rid == rid) else { continue };
            t.last_event = Instant::now();
            t.accepted = true;
            if kind == "error" && v["data"]["error"]["code"] == "TURN_IN_PROGRESS" {
                // The message sent again after a reconnect: the first one was taken after all.
                continue;
            }
            match kind {
                "stream_token" => {
                    t.answer = None;
                    t.tokens.push_str(v["token"].as_str().unwrap_or_default());
                }
                // The answer was applied once the call's result shows (its call chunk comes with the question,
                // before the answer is even read).
                "stream_chunk" if msg.contains("\"toolResult\"") => t.answer = None,
                "turn_resumed" => {
                    tally.resumed.fetch_add(1, Ordering::Relaxed);
                }
                "write_confirmation_required" => {
                    let a = json!({"action": "confirm_tool_action", "requestId": format!("a-{rid}"), "sessionId": sid, "approved": true});
                    tally.approvals.fetch_add(1, Ordering::Relaxed);
                    t.answer = Some(a.clone());
                    if ws.send(Message::text(a.to_string())).await.is_err() {
                        continue 'connection;
                    }
                }
                "interaction_required" => {
                    let iid = v["data"]["data"]["interactionId"].as_str().unwrap_or_default();
                    let a = json!({"action": "submit_interaction", "requestId": format!("a-{rid}"), "sessionId": sid,
                                   "interactionId": iid, "values": {"email": "chaos@example.com"}});
                    tally.cards.fetch_add(1, Ordering::Relaxed);
                    t.answer = Some(a.clone());
                    if ws.send(Message::text(a.to_string())).await.is_err() {
                        continue 'connection;
                    }
                }
                "eventual_response" => {
                    let said = v["data"]["data"]["response"]["responseParts"][0].as_str().unwrap_or_default();
                    if said != t.tokens {
                        tally.violation(
                            &tally.text_mismatch,
                            format!(
                                "{rid} (session {}): tokens {:?} but reply {said:?}; saw {}",
                                sid.as_deref().unwrap_or_default(),
                                t.tokens,
                                t.trail.join(" ")
                            ),
                        );
                    }
                    tally.completed.fetch_add(1, Ordering::Relaxed);
                    ended.insert(rid.to_string(), (kind.to_string(), v["seq"].as_u64()));
                    turn = None;
                }
                "error" | "cancelled" => {
                    *tally.errors.lock().entry(code.to_string()).or_default() += 1;
                    ended.insert(rid.to_string(), (code.to_string(), v["seq"].as_u64()));
                    turn = None;
                }
                _ => {}
            }
        }
    }
}

/// How a pod a fault took away comes back.
#[derive(Clone, Copy)]
enum Revive {
    /// Killed: started again on its port.
    Restart,
    /// Frozen: SIGCONT.
    Wake,
}

/// Brings back every pod in `due` whose time is at or before `now`; the others stay in `due`.
fn revive_due(pods: &mut [Pod], due: &mut Vec<(Instant, usize, Revive)>, now: Instant, start: &impl Fn(u16) -> Child) {
    due.retain(|&(at, i, how)| {
        if at > now {
            return true;
        }
        match how {
            Revive::Restart => pods[i].child = Some(start(pods[i].port)),
            Revive::Wake => {
                pods[i].signal("-CONT");
                pods[i].stopped = false;
            }
        }
        false
    });
}

/// Faults injected so far, by kind.
#[derive(Default)]
struct Faults {
    kills: u64,
    freezes: u64,
    redis_restarts: u64,
    failovers: u64,
    /// Failovers not forced because the last one had not settled yet ([`settled`]).
    deferred: u64,
}

/// Whether the last failover has settled: Sentinel's master has the other node as a replica, linked and synced.
/// Forcing a failover before that promotes a node that has not re-synced (the old master, still holding what it
/// took after it was replaced): no client of Redis can keep its writes then, so the program does not ask it to.
fn settled(s: &RedisSentinel) -> bool {
    let Some(port) = s.current_master_port() else { return false };
    let (master, replica) =
        if port == s.master().port() { (s.master(), s.replica()) } else { (s.replica(), s.master()) };
    let (m, r) = (master.info("replication"), replica.info("replication"));
    m.contains("role:master")
        && r.contains("role:slave")
        && r.contains(&format!("master_port:{port}"))
        && r.contains("master_link_status:up")
        && r.contains("master_sync_in_progress:0")
}

async fn wait_ready(port: u16) {
    let web = reqwest::Client::new();
    for _ in 0..100 {
        if web.get(format!("http://127.0.0.1:{port}/readyz")).send().await.is_ok_and(|r| r.status() == 200) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// One mode's run: pods on `store`, clients, faults until the deadline, then a quiet period for late endings.
async fn run(mode: &str, seconds: u64, clients: usize, every_s: u64) {
    let bin = std::env::var("SWITCHBOARD_BIN").unwrap_or_else(|_| "target/release/switchboard".into());
    let tally = Arc::new(Tally::default());
    let model = fake_model_and_tools(tally.clone()).await;
    let aof = ["--appendonly", "yes", "--appendfsync", "always"];
    let mut store = match mode {
        "sentinel" => Store::Sentinel(RedisSentinel::start()),
        _ => Store::Single(RedisServer::start_with_args(&aof)),
    };
    let sentinel = matches!(store, Store::Sentinel(_));
    let url = store.url();
    let mut pods: Vec<Pod> = (0..3).map(|_| Pod { port: free_port(), child: None, stopped: false }).collect();
    for p in &mut pods {
        p.child = Some(spawn_pod(&bin, p.port, &url, model, sentinel));
    }
    for p in &pods {
        wait_ready(p.port).await;
    }
    let ports = Arc::new(pods.iter().map(|p| p.port).collect::<Vec<_>>());
    let started = Instant::now();
    let until = started + Duration::from_secs(seconds);
    let tasks: Vec<_> = (0..clients).map(|n| tokio::spawn(client(n, ports.clone(), tally.clone(), until))).collect();

    let mut faults = Faults::default();
    let start = |port: u16| spawn_pod(&bin, port, &url, model, sentinel);
    let mut revive: Vec<(Instant, usize, Revive)> = Vec::new();
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(250)).await;
        revive_due(&mut pods, &mut revive, Instant::now(), &start);
        if rand::random::<u64>() % (every_s * 4).max(1) != 0 {
            continue;
        }
        let alive: Vec<usize> = (0..pods.len()).filter(|&i| pods[i].alive()).collect();
        match rand::random::<u32>() % 6 {
            0 | 1 if alive.len() >= 2 => {
                let i = alive[rand::random::<usize>() % alive.len()];
                pods[i].kill();
                faults.kills += 1;
                let back = Instant::now() + Duration::from_millis(1_000 + rand::random::<u64>() % 3_000);
                revive.push((back, i, Revive::Restart));
            }
            2 | 3 if alive.len() >= 2 => {
                let i = alive[rand::random::<usize>() % alive.len()];
                pods[i].signal("-STOP");
                pods[i].stopped = true;
                faults.freezes += 1;
                let past_lease = LEASE_MS + 500 + rand::random::<u64>() % 3_000;
                revive.push((Instant::now() + Duration::from_millis(past_lease), i, Revive::Wake));
            }
            4 | 5 => match &mut store {
                Store::Single(r) => {
                    r.restart();
                    faults.redis_restarts += 1;
                }
                Store::Sentinel(s) if settled(s) => {
                    let _ = s.sentinel_cli(&["SENTINEL", "FAILOVER", redis::SENTINEL_MASTER_NAME]);
                    faults.failovers += 1;
                }
                Store::Sentinel(_) => faults.deferred += 1,
            },
            _ => {}
        }
    }
    // Every pod back before the quiet period, whatever its time.
    revive_due(&mut pods, &mut revive, Instant::now() + Duration::from_secs(3_600), &start);
    // Every client ends its turn within the quiet limit (or counts it as a violation); one bound for all of them,
    // so clients that never got going cannot hold the table back one by one.
    let all = futures_util::future::join_all(tasks);
    if tokio::time::timeout(QUIET_LIMIT + Duration::from_secs(30), all).await.is_err() {
        println!("some clients were still running {:?} after the run", QUIET_LIMIT + Duration::from_secs(30));
    }
    print_table(mode, seconds, clients, &tally, &faults);
    let port = match &store {
        Store::Single(r) => Some(r.port()),
        Store::Sentinel(s) => s.current_master_port(),
    };
    let stuck: Vec<(String, u64)> = tally.stuck.lock().iter().take(10).cloned().collect();
    for (sid, client_seq) in &stuck {
        let get = |args: &[&str]| {
            let port = port.unwrap_or_default().to_string();
            let out = Command::new("redis-cli").args(["-p", &port]).args(args).output();
            out.map(|o| String::from_utf8_lossy(&o.stdout).trim().replace('\n', " ")).unwrap_or_default()
        };
        let seq = get(&["GET", &format!("sb:{{{sid}}}:seq")]);
        let lease = get(&["GET", &format!("sb:{{{sid}}}:lease")]);
        let record = get(&["GET", &format!("sb:{{{sid}}}:turn")]);
        println!("  stuck session {sid}: client at seq {client_seq}, log at {seq}; lease {lease:?}; record {record:?}");
        // What each pod answers now: readiness, and the events a fresh socket gets on a resume from there.
        for p in &pods {
            let ready = reqwest::get(format!("http://127.0.0.1:{}/readyz", p.port)).await.map(|r| r.status().as_u16());
            let mut heard = 0;
            if let Some(mut ws) = connect(p.port).await {
                let resume =
                    json!({"action": "resume_session", "requestId": "x", "sessionId": sid, "afterSeq": client_seq});
                let _ = ws.send(Message::text(resume.to_string())).await;
                while let Ok(Some(Ok(Message::Text(t)))) =
                    tokio::time::timeout(Duration::from_millis(700), ws.next()).await
                {
                    heard += usize::from(t.contains("\"seq\""));
                }
            }
            println!("    pod {}: readyz {ready:?}, a fresh resume got {heard} events", p.port);
        }
    }
}

fn print_table(mode: &str, seconds: u64, clients: usize, t: &Tally, f: &Faults) {
    let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
    let errors: Vec<String> = t.errors.lock().iter().map(|(k, v)| format!("{k} {v}")).collect();
    let unsafe_repeats = t.repeated_unsafe_calls();
    let calls: u64 = t.tool_calls.lock().values().sum();
    println!("\nchaos, Redis {mode}: {seconds} s, {clients} clients, 3 pods");
    println!(
        "faults: {} pod SIGKILLs (restarted), {} SIGSTOPs past the lease, {} Redis restarts, {} Sentinel failovers \
         ({} deferred: the last one had not settled)",
        f.kills, f.freezes, f.redis_restarts, f.failovers, f.deferred
    );
    println!("| turns | eventual_response | other endings | taken over (turn_resumed) | approvals | cards | reconnects | tool calls |");
    println!(
        "| {} | {} | {} | {} | {} | {} | {} | {} |",
        get(&t.turns),
        get(&t.completed),
        if errors.is_empty() { "0".to_string() } else { errors.join(", ") },
        get(&t.resumed),
        get(&t.approvals),
        get(&t.cards),
        get(&t.reconnects),
        calls
    );
    println!("| violation | count |\n|---|---|");
    for (what, n) in [
        ("turn without an ending", get(&t.no_ending)),
        ("turn with two endings", get(&t.two_endings)),
        ("session lost after it was created", get(&t.sessions_lost)),
        ("reply text ≠ tokens received", get(&t.text_mismatch)),
        ("seq gap", get(&t.seq_gaps)),
        ("non-idempotent tool call repeated", unsafe_repeats),
    ] {
        println!("| {what} | {n} |");
    }
    println!(
        "(epoch changes seen: {}; resumes refused and retried: {}; session creations refused and retried: {}; a \
         resent message refused after its request's logged ending: {})",
        get(&t.epoch_changes),
        get(&t.resume_refused),
        get(&t.create_refused),
        get(&t.duplicates_refused)
    );
    for e in t.examples.lock().iter() {
        println!("  e.g. {e}");
    }
}

#[tokio::main]
async fn main() {
    let seconds = env_or::<u64>("CHAOS_SECONDS", 300);
    let clients = env_or::<usize>("CHAOS_CLIENTS", 200);
    let every = env_or::<u64>("CHAOS_FAULT_EVERY_S", 4);
    let modes = std::env::var("CHAOS_MODES").unwrap_or_else(|_| "single,sentinel".into());
    for mode in modes.split(',').map(str::trim).filter(|m| !m.is_empty()) {
        run(mode, seconds, clients, every).await;
    }
}
