//! A turn survives its pod: the pod running a turn is SIGKILLed (during the model's stream, during a tool call,
//! between steps, during a takeover) and another pod takes the turn over from its last durable step. The
//! client watching from another pod sees one reply: the tokens already sent, then the rest, the same
//! requestId, no seq gap, `turn_resumed`, exactly one ending. A logged tool result is never run again; a call
//! cut mid-run runs again only for an idempotent tool.

use super::process::*;
use super::*;
use serde_json::Value;
use switchboard::config::{AuthLevel, Config, ToolConfig};
use switchboard::server::Running;

/// One in-process pod (`p`, the watcher's, which also sweeps) and `n` pods as processes sharing its Redis.
async fn cluster(cfg: &Config, redis: &RedisServer, n: usize) -> (Running, Vec<ProcessPod>) {
    let p = pods(1, cfg.clone(), &Store::Redis(redis.url())).await.remove(0);
    let mut procs = Vec::new();
    for _ in 0..n {
        procs.push(ProcessPod::start(shared(cfg, &p)).await);
    }
    (p, procs)
}

fn base(llm: &FakeLlm, tools: &FakeTools) -> Config {
    let mut cfg = config(llm, tools);
    cfg.turn.lease_ms = 1_500;
    cfg
}

fn slow(n: usize, delay_ms: u64) -> Reply {
    Reply::Slow { chunks: (0..n).map(|i| format!("t{i} ")).collect(), delay_ms, usage: None }
}

/// A socket on `pod` that follows the session from its start.
async fn watch(url: &str, sid: &str) -> Client {
    let mut c = Client::connect_with(url, Some("switchboard"), None).await.expect("connect");
    c.send(&json!({"action": "resume_session", "requestId": "watch", "sessionId": sid, "afterSeq": 0})).await;
    c
}

/// Starts turn `r-1` on the process pod `at` and returns the session.
async fn start_turn(at: &ProcessPod, text: &str) -> (Client, String) {
    let mut a = Client::connect(&at.ws_url()).await;
    let sid = create_session(&mut a).await;
    send_message(&mut a, &sid, "r-1", text).await;
    (a, sid)
}

/// Whether `seqs` run without a gap.
fn gap_free(frames: &[serde_json::Value]) {
    let s = seqs(frames);
    assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "seq without a gap: {s:?}");
}

/// The one reply of `r-1` as a watcher saw it: exactly one ending, an `eventual_response` whose text is every
/// token the client got, in order, none twice, after a `turn_resumed`.
fn one_reply(frames: &[serde_json::Value]) -> String {
    let mine: Vec<_> = frames.iter().filter(|f| f["requestId"] == "r-1").cloned().collect();
    let ending = single_ending(&mine);
    assert_eq!(ending["type"], "eventual_response", "{ending}");
    assert!(mine.iter().any(|f| f["type"] == "turn_resumed" && f["fromSeq"].as_u64().is_some()), "{mine:?}");
    gap_free(frames);
    let text = reply_text(&ending);
    assert_eq!(tokens(&mine), text, "the tokens the client got are the reply");
    text
}

/// The model request made by the pod that took the turn over (the last one).
fn last_request(llm: &FakeLlm) -> serde_json::Value {
    llm.requests().last().cloned().expect("a model request")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_the_model_stream_continues_the_reply_on_another_pod() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let (p, mut procs) = cluster(&base(&llm, &tools), &redis, 1).await;
    llm.push(slow(60, 100));
    llm.push(Reply::text(&["and the rest."]));
    let (_a, sid) = start_turn(&procs[0], "tell me").await;
    let mut w = watch(&harness::ws_url(&p), &sid).await;
    let seen = w.recv_until(|v| v["type"] == "stream_token" && v["token"] == "t4 ").await;
    procs[0].kill();

    let mut frames = seen;
    frames.extend(until_terminal(&mut w, "r-1").await);
    let text = one_reply(&frames);
    assert!(text.starts_with("t0 t1 t2 t3 t4 ") && text.ends_with("and the rest."), "{text}");
    // The model was asked to go on from what the client already had.
    let sent = text.strip_suffix("and the rest.").unwrap_or_default();
    let req = last_request(&llm);
    let msgs = req["messages"].as_array().expect("messages");
    let n = msgs.len();
    assert_eq!(msgs[n - 2]["role"], "assistant", "{req}");
    assert_eq!(msgs[n - 2]["content"], sent, "the partial reply goes back to the model: {req}");
    assert_eq!(msgs[n - 1]["role"], "system");
    assert!(msgs[n - 1]["content"].as_str().unwrap_or_default().contains("cut off"), "{req}");
    assert!(req.get("continue_final_message").is_none(), "not asked of an endpoint that was not said to do it");
    assert_eq!(scrape(&p).await.value("switchboard_turn_takeovers_total", &[]), 1.0);

    // The session goes on: a new turn runs on the surviving pod.
    llm.push(Reply::text(&["again"]));
    send_message(&mut w, &sid, "r-2", "again").await;
    let frames = until_terminal(&mut w, "r-2").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response", "{frames:?}");
}

/// Runs turn `r-1` on a process pod of `cfg` whose model asks for `tool` (call `call`) and then says `reply`;
/// kills that pod while the (slow) call runs and returns what a watcher on the in-process pod saw.
async fn killed_during_call(
    cfg: &Config,
    llm: &FakeLlm,
    tools: &FakeTools,
    (call, tool, args): (&str, &str, Value),
    reply: &str,
) -> Vec<Value> {
    slow_tool(tools, tool);
    let redis = RedisServer::start();
    let (p, mut procs) = cluster(cfg, &redis, 1).await;
    llm.push(Reply::tool_call(call, tool, &args));
    llm.push(Reply::text(&[reply]));
    let (_a, sid) = start_turn(&procs[0], "do it").await;
    let mut w = watch(&harness::ws_url(&p), &sid).await;
    tools.wait_for_calls(tool, 1, Duration::from_secs(10)).await;
    procs[0].kill();
    until_terminal(&mut w, "r-1").await
}

/// A tool that is slow to answer: the test kills its caller while the call runs.
fn slow_tool(tools: &FakeTools, name: &str) {
    // Under the harness's `tools.timeout_ms` (1 s), so the call run again by the takeover answers.
    tools.set(name, Behaviour::Delay(800, json!("shipped")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_an_idempotent_tool_call_runs_it_again_with_the_same_key() {
    let (llm, tools) = setup().await;
    let call = ("call-1", "lookup_order", json!({"id": "7"}));
    let frames = killed_during_call(&base(&llm, &tools), &llm, &tools, call, "It shipped.").await;
    assert_eq!(one_reply(&frames), "It shipped.");
    let calls = tools.calls("lookup_order");
    assert_eq!(calls.len(), 2, "the idempotent call cut by the kill runs again");
    assert!(calls.iter().all(|c| c.idempotency_key.as_deref() == Some("call-1")), "same Idempotency-Key");
    let req = last_request(&llm);
    let result = req["messages"].as_array().expect("messages").iter().find(|m| m["role"] == "tool").cloned();
    assert!(result.is_some_and(|m| m["content"].to_string().contains("shipped")), "{req}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_during_a_non_idempotent_tool_call_never_runs_it_twice() {
    let (llm, tools) = setup().await;
    let mut cfg = base(&llm, &tools);
    cfg.agents[0].tools.push(ToolConfig {
        name: "send_email".into(),
        description: "sends an email".into(),
        parameters: json!({"type": "object"}),
        url: tools.url("send_email"),
        auth_level: AuthLevel::None,
        title: None,
        idempotent: false,
    });
    let call = ("call-9", "send_email", json!({"to": "a@b.c"}));
    let frames = killed_during_call(&cfg, &llm, &tools, call, "I could not tell whether it went.").await;
    assert_eq!(one_reply(&frames), "I could not tell whether it went.");
    sleep_ms(3_000).await;
    assert_eq!(tools.calls("send_email").len(), 1, "a call that may have run is never run again");
    let req = last_request(&llm);
    let msgs = req["messages"].as_array().expect("messages");
    let result = msgs.iter().find(|m| m["role"] == "tool").expect("the call's result");
    assert_eq!(result["tool_call_id"], "call-9");
    assert!(result["content"].as_str().unwrap_or_default().contains("interrupted: the call may have run"), "{req}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sigkill_between_steps_reuses_the_logged_tool_result() {
    let (llm, tools) = setup().await;
    tools.set("lookup_order", Behaviour::Ok(json!("delivered")));
    let redis = RedisServer::start();
    let (p, mut procs) = cluster(&base(&llm, &tools), &redis, 1).await;
    llm.push(Reply::tool_call("call-1", "lookup_order", &json!({"id": "7"})));
    llm.push(Reply::Hang);
    llm.push(Reply::text(&["It was delivered."]));
    let (_a, sid) = start_turn(&procs[0], "where is 7?").await;
    let mut w = watch(&harness::ws_url(&p), &sid).await;
    // The tool ran and the next model call is under way: its result is durable.
    llm.wait_for_requests(2, Duration::from_secs(10)).await;
    procs[0].kill();

    let frames = until_terminal(&mut w, "r-1").await;
    let text = one_reply(&frames);
    assert!(text.ends_with("It was delivered."), "{text}");
    assert_eq!(tools.calls("lookup_order").len(), 1, "a logged tool result is never run again");
    let req = last_request(&llm);
    let msgs = req["messages"].as_array().expect("messages");
    let result = msgs.iter().find(|m| m["role"] == "tool").expect("the logged result");
    assert!(result["content"].to_string().contains("delivered"), "{req}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_taken_over_twice_still_ends_once() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut cfg = base(&llm, &tools);
    cfg.llm.continue_final_message = true;
    // Three process pods and no other: every takeover is by a pod this test can kill.
    cfg.redis_url = redis.url();
    cfg.redis_key_prefix = support::unique_id("sb");
    let mut procs = Vec::new();
    for _ in 0..3 {
        procs.push(ProcessPod::start(cfg.clone()).await);
    }
    llm.push(slow(40, 100));
    llm.push(slow(40, 100));
    llm.push(Reply::text(&["end."]));
    let (_a, sid) = start_turn(&procs[0], "tell me").await;
    let mut w = watch(&procs[2].ws_url(), &sid).await;
    let mut frames = w.recv_until(|v| v["type"] == "stream_token" && v["token"] == "t3 ").await;
    procs[0].kill();

    // The first takeover streams the second reply; then its pod is killed too.
    frames.extend(w.recv_until(|v| v["type"] == "turn_resumed").await);
    frames.extend(w.recv_until(|v| v["type"] == "stream_token" && v["token"] == "t2 ").await);
    let taker = if procs[1].takeovers().await == 1 { 1 } else { 2 };
    assert_eq!(procs[1].takeovers().await + procs[2].takeovers().await, 1, "one pod took the turn over");
    procs[taker].kill();
    if taker == 2 {
        // The watcher's own pod died: it resumes from its last seq on the survivor.
        let last = seqs(&frames).last().copied().expect("a seq");
        w = Client::connect_with(&procs[1].ws_url(), Some("switchboard"), None).await.expect("connect");
        w.send(&json!({"action": "resume_session", "requestId": "again", "sessionId": sid, "afterSeq": last})).await;
    }
    frames.extend(until_terminal(&mut w, "r-1").await);
    let survivor = 3 - taker;
    assert_eq!(procs[survivor].takeovers().await, 1, "the last pod took it over a second time");
    let text = one_reply(&frames);
    assert!(text.ends_with("end."), "{text}");
    assert_eq!(frames.iter().filter(|f| f["type"] == "turn_resumed").count(), 2, "{frames:?}");
    // An endpoint that continues a final message is asked to, with the whole partial reply.
    let req = last_request(&llm);
    assert_eq!(req["continue_final_message"], true, "{req}");
    let msgs = req["messages"].as_array().expect("messages");
    assert_eq!(msgs.last().expect("last")["content"], text.strip_suffix("end.").unwrap_or_default());

    // The whole log holds one ending.
    let log = logged_at(&procs[survivor].ws_url(), &sid, "r-1").await;
    single_ending(&log);
}
