//! Several pods sharing one store: memory (in one process) and a real Redis (single, cluster, sentinel).
//! Sessions move between pods, turns are parked on one pod and approved on another, pods are killed
//! mid-turn and drained under live traffic.

use crate::{harness, support};

mod faults;
mod gaps;
mod process;
mod seed;
mod takeover;
mod turn_faults;

use std::time::{Duration, Instant};

use harness::*;
use serde_json::json;
use support::llm::{FakeLlm, Reply};
use support::redis::{RedisCluster, RedisSentinel, RedisServer};
use support::tools::{Behaviour, FakeTools};
use support::ws::{Client, Frame};

async fn setup() -> (FakeLlm, FakeTools) {
    (FakeLlm::start().await, FakeTools::start().await)
}

fn seqs(frames: &[serde_json::Value]) -> Vec<u64> {
    frames.iter().filter_map(|f| f["seq"].as_u64()).collect()
}

async fn resume(c: &mut Client, sid: &str, after: u64) -> serde_json::Value {
    c.send(&json!({"action": "resume_session", "requestId": "resume", "sessionId": sid, "afterSeq": after})).await;
    let ack = c.recv().await;
    assert_eq!(ack["type"], "immediate_response", "{ack}");
    ack
}

/// Session created on A is served on B; events reach sockets on both pods; a second turn from another pod
/// is refused.
async fn session_moves_between_pods(store: Store) {
    let (llm, tools) = setup().await;
    let p = pods(2, config(&llm, &tools), &store).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    let mut b = connect(&p[1], true).await;
    b.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    assert_eq!(b.recv().await["data"]["sessionId"], sid.as_str());
    llm.push(Reply::Slow { chunks: (0..8).map(|i| format!("w{i} ")).collect(), delay_ms: 40, usage: Some((3, 8)) });
    send_message(&mut b, &sid, "r-b", "from pod B").await;
    let accepted = b.recv().await;
    assert_eq!(accepted["status"], 202, "{accepted}");
    // A second turn from the other pod while the first runs.
    send_message(&mut a, &sid, "r-a", "me too").await;
    let on_a = until_terminal(&mut a, "r-b").await;
    assert!(on_a.iter().any(|f| f["requestId"] == "r-a" && f["error"]["code"] == "TURN_IN_PROGRESS"), "{on_a:?}");
    let on_b = until_terminal(&mut b, "r-b").await;
    let a_events: Vec<_> = on_a.into_iter().filter(|f| f["requestId"] == "r-b").collect();
    assert_eq!(tokens(&a_events), (0..8).map(|i| format!("w{i} ")).collect::<String>());
    assert_eq!(seqs(&a_events), seqs(&on_b), "both pods deliver the same ordered events");
    assert_eq!(seqs(&on_b), (1..=9).collect::<Vec<_>>());
}

/// A client that drops mid-stream on A resumes on B and gets every token exactly once.
async fn drop_on_a_resume_on_b(store: Store) {
    let (llm, tools) = setup().await;
    let p = pods(2, config(&llm, &tools), &store).await;
    let chunks: Vec<String> = (0..30).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks: chunks.clone(), delay_ms: 20, usage: None });
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    send_message(&mut a, &sid, "r-1", "stream").await;
    let got = a.recv_until(|v| v["seq"].as_u64() == Some(5)).await;
    let mut text = tokens(&got);
    a.close().await;
    let mut b = connect(&p[1], true).await;
    assert_eq!(resume(&mut b, &sid, 5).await["data"]["recovered"], true);
    let rest = until_terminal(&mut b, "r-1").await;
    text.push_str(&tokens(&rest));
    assert_eq!(text, chunks.concat());
    let s = seqs(&rest);
    assert_eq!(s, (6..6 + s.len() as u64).collect::<Vec<_>>(), "no gap, no duplicate");
}

/// Parked on A, approved from C; then A killed while parked, approved on B: the tool runs once each time.
/// `switchboard_pending_confirmations` as a pod reports it.
async fn pending_gauge(pod: &switchboard::server::Running) -> i64 {
    scrape(pod).await.value("switchboard_pending_confirmations", &[]) as i64
}

async fn approvals_across_pods(store: Store) {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("gone")));
    let mut p = pods(3, config(&llm, &tools), &store).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::tool_call("call-1", "delete_record", &json!({"id": "1"})));
    send_message(&mut a, &sid, "r-1", "delete 1").await;
    a.recv_until(|v| v["type"] == "stream_chunk").await;
    // The gauge is cluster-wide: a pod that never saw the turn reports it.
    assert_eq!(pending_gauge(&p[2]).await, 1);
    let mut c = connect(&p[2], true).await;
    llm.push(Reply::text(&["ok"]));
    c.send(&json!({"action": "confirm_tool_action", "requestId": "yes", "sessionId": sid, "approved": true})).await;
    let on_c = until_terminal(&mut c, "r-1").await;
    assert_eq!(on_c[0]["data"]["approved"], true);
    assert_eq!(on_c[1]["data"]["state"]["rawResponse"]["toolResult"]["result"], "gone");
    until_terminal(&mut a, "r-1").await;
    assert_eq!(tools.calls("delete_record").len(), 1);
    assert_eq!(pending_gauge(&p[0]).await, 0);

    llm.push(Reply::tool_call("call-2", "delete_record", &json!({"id": "2"})));
    send_message(&mut a, &sid, "r-2", "delete 2").await;
    let parked = a.recv_until(|v| v["type"] == "stream_chunk").await;
    let last_seq = parked.last().and_then(|f| f["seq"].as_u64()).expect("seq");
    p.remove(0).kill();
    let mut b = connect(&p[0], true).await;
    // The pending confirmation is visible from any pod.
    b.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    let s = b.recv().await;
    assert_eq!(s["data"]["pendingConfirmation"]["toolCallId"], "call-2", "{s}");
    resume(&mut b, &sid, last_seq).await;
    llm.push(Reply::text(&["done"]));
    b.send(&json!({"action": "confirm_tool_action", "requestId": "yes2", "sessionId": sid, "approved": true})).await;
    let frames = until_terminal(&mut b, "r-2").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    assert_eq!(tools.calls("delete_record").len(), 2, "the approved tool ran exactly once more");
    assert_eq!(tools.calls("delete_record")[1].idempotency_key.as_deref(), Some("call-2"));
}

/// A killed mid-stream: B takes the turn over within the lease bound and finishes the reply after the token
/// already sent; the session works again.
async fn killed_mid_stream(store: Store) {
    let (end, _) = kill_mid_stream(store, true).await;
    assert_eq!(end.iter().filter(|f| f["type"] == "turn_resumed").count(), 1, "{end:?}");
    let e = end.last().expect("end");
    assert_eq!(e["type"], "eventual_response", "{e}");
    assert_eq!(e["data"]["data"]["response"]["responseParts"][0], "…taken over", "{e}");
}

/// With `turn.takeover` off, a killed pod's turn ends with `TURN_INTERRUPTED` within the lease bound.
async fn killed_mid_stream_without_takeover(store: Store) {
    let (end, llm_requests) = kill_mid_stream(store, false).await;
    let e = end.last().expect("end");
    assert_eq!(e["error"]["code"], "TURN_INTERRUPTED", "{e}");
    assert_eq!(llm_requests, 1, "the turn was not run again");
}

/// Kills A while its turn streams and returns what a socket resumed on B saw until the turn's ending, and the
/// model calls made until then; then runs a turn on B.
async fn kill_mid_stream(store: Store, takeover: bool) -> (Vec<serde_json::Value>, usize) {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.turn.lease_ms = 1_500;
    cfg.turn.takeover = takeover;
    let mut p = pods(2, cfg, &store).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::Hang);
    // The pod that takes the turn over gets this; with no takeover, a second call would show.
    llm.set_default(Reply::text(&["taken over"]));
    send_message(&mut a, &sid, "r-dead", "hang").await;
    let got = a.recv_until(|v| v["type"] == "stream_token").await;
    let last = got.last().and_then(|f| f["seq"].as_u64()).expect("seq");
    let killed_at = Instant::now();
    p.remove(0).kill();
    let mut b = connect(&p[0], true).await;
    resume(&mut b, &sid, last).await;
    let end = until_terminal(&mut b, "r-dead").await;
    assert!(killed_at.elapsed() < Duration::from_millis(1_500 + 1_000 + 1_500), "took {:?}", killed_at.elapsed());
    let requests = llm.request_count();
    llm.set_default(Reply::text(&["back"]));
    send_message(&mut b, &sid, "r-again", "hello").await;
    assert_eq!(tokens(&until_terminal(&mut b, "r-again").await), "back");
    (end, requests)
}

/// Publish on C reaches a socket on A once; without a key → 401.
async fn publish_reaches_other_pods(store: Store) {
    let (llm, tools) = setup().await;
    let p = pods(3, config(&llm, &tools), &store).await;
    let mut a = connect(&p[0], true).await;
    let mut a2 = connect(&p[0], false).await;
    let sid = create_session(&mut a).await;
    let http = reqwest::Client::new();
    let url = http_url(&p[2], "/admin/publish");
    let no_key = http
        .post(&url)
        .json(&json!({"target": {"type": "user", "id": "anonymous"}, "event": {"type": "x"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(no_key.status(), 401);
    for (target, id) in [("user", "anonymous"), ("org", "default"), ("agent", AGENT), ("session", sid.as_str())] {
        let r = http
            .post(&url)
            .bearer_auth("publish-key-0123456789")
            .json(&json!({"target": {"type": target, "id": id}, "event": {"type": "note", "to": target}}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 202);
        let got = a.recv().await;
        assert_eq!((got["type"].as_str(), got["to"].as_str()), (Some("note"), Some(target)), "{got}");
        if target == "session" {
            assert_eq!(got["seq"], 1);
        }
    }
    // The v1 socket (not attached to the session or agent) got the user and org events once each.
    assert_eq!(a2.recv().await["to"], "user");
    assert_eq!(a2.recv().await["to"], "org");
    a.expect_silence(Duration::from_millis(300)).await;
    a2.expect_silence(Duration::from_millis(100)).await;
    // Connection target, found through the registry.
    let conns: serde_json::Value = http
        .get(http_url(&p[1], &format!("/admin/connections?session={sid}")))
        .bearer_auth("publish-key-0123456789")
        .send()
        .await
        .expect("get")
        .json()
        .await
        .expect("json");
    let cid = conns["connections"][0]["connectionId"].as_str().expect("connection id").to_string();
    assert_eq!(conns["connections"][0]["podId"], p[0].pod_id());
    let r = http
        .post(&url)
        .bearer_auth("publish-key-0123456789")
        .json(&json!({"target": {"type": "connection", "id": cid}, "event": {"type": "just_you"}}))
        .send()
        .await
        .expect("post");
    assert_eq!(r.status(), 202);
    assert_eq!(a.recv().await["type"], "just_you");
    a2.expect_silence(Duration::from_millis(200)).await;
}

/// SIGTERM (drain) on A mid-turn: clients get reconnect + 1012, resume on B, and get the rest with no gap.
async fn drain_mid_turn(store: Store) {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.drain.timeout_s = 10;
    let p = pods(2, cfg, &store).await;
    let chunks: Vec<String> = (0..25).map(|i| format!("d{i} ")).collect();
    llm.push(Reply::Slow { chunks: chunks.clone(), delay_ms: 40, usage: None });
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    send_message(&mut a, &sid, "r-drain", "stream").await;
    let mut got = a.recv_until(|v| v["seq"].as_u64() == Some(3)).await;
    p[0].drain();
    let mut saw_reconnect = false;
    loop {
        match a.recv_raw().await {
            Frame::Text(v) if v["type"] == "reconnect" => saw_reconnect = true,
            Frame::Text(v) => got.push(v),
            Frame::Close(code) => {
                assert_eq!(code, Some(1012));
                break;
            }
            other => panic!("expected reconnect + 1012, got {other:?}"),
        }
    }
    assert!(saw_reconnect);
    let last = seqs(&got).into_iter().max().expect("seq");
    let mut b = connect(&p[1], true).await;
    resume(&mut b, &sid, last).await;
    let rest = until_terminal(&mut b, "r-drain").await;
    let mut text = tokens(&got);
    text.push_str(&tokens(&rest));
    assert_eq!(text, chunks.concat(), "the turn kept streaming on the draining pod");
    assert_eq!(rest.last().expect("end")["type"], "eventual_response");
}

/// A turn longer than the drain: when `drain.timeout_s` runs out, the draining pod hands the turn over at once
/// (not after `turn.lease_ms`) and B finishes it; a client on B sees `turn_resumed`, the rest of the reply after
/// the tokens already sent, and one ending. (In memory there is no other pod to take it: it ends there.)
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_outlasting_the_drain_moves_to_another_pod() {
    let redis = RedisServer::start();
    let store = Store::Redis(redis.url());
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.drain.pre_stop_s = 0;
    cfg.drain.timeout_s = 1;
    let p = pods(2, cfg, &store).await;
    let chunks: Vec<String> = (0..100).map(|i| format!("d{i} ")).collect();
    llm.push(Reply::Slow { chunks, delay_ms: 50, usage: None });
    llm.push(Reply::text(&["the rest."]));
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    let mut b = connect(&p[1], true).await;
    resume(&mut b, &sid, 0).await;
    send_message(&mut a, &sid, "r-long", "stream").await;
    let mut frames = b.recv_until(|v| v["token"] == "d2 ").await;
    let drained_at = Instant::now();
    p[0].drain();
    frames.extend(until_terminal(&mut b, "r-long").await);
    // The drain's second, then the sweeper's half second: well inside the 10 s lease a dead pod's turn waits.
    assert!(drained_at.elapsed() < Duration::from_secs(5), "took {:?}", drained_at.elapsed());
    assert_eq!(frames.iter().filter(|f| f["type"] == "turn_resumed").count(), 1, "{frames:?}");
    let end = frames.last().expect("end");
    assert_eq!(end["type"], "eventual_response", "{end}");
    let text = end["data"]["data"]["response"]["responseParts"][0].as_str().unwrap_or_default();
    assert!(text.starts_with("d0 d1 d2 ") && text.ends_with("the rest."), "{text}");
    assert_eq!(tokens(&frames), text, "no token lost or repeated");
    let s = seqs(&frames);
    assert!(s.windows(2).all(|w| w[1] == w[0] + 1), "{s:?}");
}

/// A turn running on A is cancelled from a socket on B (through A's control channel).
async fn cancel_from_another_pod(store: Store) {
    let (llm, tools) = setup().await;
    let p = pods(2, config(&llm, &tools), &store).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::Hang);
    send_message(&mut a, &sid, "r-hang", "hang").await;
    a.recv_until(|v| v["type"] == "stream_token").await;
    let mut b = connect(&p[1], true).await;
    b.send(&json!({"action": "cancel", "requestId": "r-hang", "sessionId": sid})).await;
    let end = until_terminal(&mut a, "r-hang").await;
    let last = end.last().expect("end");
    assert_eq!((last["type"].as_str(), last["status"].as_u64()), (Some("cancelled"), Some(499)));
    llm.wait_for_dropped_streams(1, Duration::from_secs(5)).await;
    llm.push(Reply::text(&["next"]));
    send_message(&mut b, &sid, "r-next", "again").await;
    assert_eq!(tokens(&until_terminal(&mut b, "r-next").await), "next");
}

macro_rules! on_memory_and_redis {
    ($($name:ident),*) => {
        mod memory {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let (llm, tools) = setup().await;
                    super::$name(memory_store(&config(&llm, &tools))).await;
                }
            )*
        }
        mod redis {
            use super::*;
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
                async fn $name() {
                    let server = RedisServer::start();
                    super::$name(Store::Redis(server.url())).await;
                    drop(server);
                }
            )*
        }
    };
}

on_memory_and_redis!(
    session_moves_between_pods,
    drop_on_a_resume_on_b,
    approvals_across_pods,
    killed_mid_stream,
    killed_mid_stream_without_takeover,
    publish_reaches_other_pods,
    drain_mid_turn,
    cancel_from_another_pod
);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn cluster_flows() {
    let cluster = RedisCluster::start();
    session_moves_between_pods(Store::Redis(cluster.url())).await;
    approvals_across_pods(Store::Redis(cluster.url())).await;
    publish_reaches_other_pods(Store::Redis(cluster.url())).await;
    drop_on_a_resume_on_b(Store::Redis(cluster.url())).await;
}

/// `limits.messages_per_user_per_minute` counts one user's messages across sockets on different pods.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_per_user_message_budget_spans_pods() {
    crate::support::one_budget_window().await;
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.messages_per_user_per_minute = 3;
    let redis = RedisServer::start();
    let p = pods(2, cfg, &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], false).await;
    let mut b = connect(&p[1], false).await;
    let (sa, sb) = (create_session(&mut a).await, create_session(&mut b).await);
    for (on_a, rid) in [(true, "a1"), (false, "b1"), (true, "a2")] {
        let (c, sid) = if on_a { (&mut a, &sa) } else { (&mut b, &sb) };
        llm.push(Reply::text(&["ok"]));
        send_message(c, sid, rid, "hi").await;
        assert_eq!(until_terminal(c, rid).await.last().expect("end")["type"], "eventual_response");
    }
    send_message(&mut b, &sb, "b2", "one more").await;
    let refused = b.recv_until(|v| v["requestId"] == "b2").await;
    let refused = refused.last().expect("reply");
    assert_eq!(refused["error"]["code"], "RATE_LIMITED", "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("messages_per_user_per_minute")));
    assert_eq!(llm.request_count(), 3, "the refused message never reached the model");
}

/// `limits.sockets_per_user` counts one user's open sockets on every pod: one more upgrade gets 429; closing
/// one makes room.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sockets_per_user_span_pods() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.sockets_per_user = 2;
    let redis = RedisServer::start();
    let p = pods(2, cfg, &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], false).await;
    let _b = connect(&p[1], false).await;
    // Each socket registers as its task starts, just after the handshake.
    let registered = Instant::now() + Duration::from_secs(5);
    let all = switchboard::backend::SocketFilter::default();
    while p[0].backends().registry.list(&all, 10).await.expect("list").len() < 2 {
        assert!(Instant::now() < registered, "the two sockets never registered");
        sleep_ms(50).await;
    }
    assert_eq!(Client::connect_err_status(&ws_url(&p[0]), None).await, Some(429), "a third socket, on either pod");
    a.close().await;
    let deadline = Instant::now() + Duration::from_secs(5);
    while Client::connect_err_status(&ws_url(&p[1]), None).await == Some(429) {
        assert!(Instant::now() < deadline, "closing a socket did not make room");
        sleep_ms(100).await;
    }
}

/// `limits.turns_per_user` counts one user's running turns on every pod: a third at once is refused, a turn
/// that ended (or parked) makes room, and a pod that dies frees its places when the lease lapses.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn running_turns_per_user_span_pods() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.turns_per_user = 2;
    let redis = RedisServer::start();
    let mut p = pods(2, cfg, &Store::Redis(redis.url())).await;
    let (mut a, mut b) = (connect(&p[0], false).await, connect(&p[1], false).await);
    let (sa, sb, sc) = (create_session(&mut a).await, create_session(&mut b).await, create_session(&mut b).await);
    let slow = || Reply::Slow { chunks: vec!["x ".into(); 20], delay_ms: 100, usage: None };
    llm.push(slow());
    llm.push(slow());
    send_message(&mut a, &sa, "a1", "one").await;
    send_message(&mut b, &sb, "b1", "two").await;
    llm.wait_for_requests(2, Duration::from_secs(5)).await;
    send_message(&mut b, &sc, "c1", "three").await;
    let refused = b.recv_until(|v| v["requestId"] == "c1").await;
    let refused = refused.last().expect("reply");
    assert_eq!(refused["error"]["code"], "RATE_LIMITED", "{refused}");
    assert!(refused["error"]["message"].as_str().is_some_and(|m| m.contains("turns_per_user")));
    // One ends: room for the next.
    until_terminal(&mut a, "a1").await;
    llm.push(Reply::text(&["ok"]));
    send_message(&mut b, &sc, "c2", "three again").await;
    // Both of b's turns end (in either order), each with its answer.
    let mut ended = std::collections::BTreeSet::new();
    while ended.len() < 2 {
        let f = b.recv().await;
        if matches!(f["type"].as_str(), Some("eventual_response" | "error" | "cancelled")) {
            assert_eq!(f["type"], "eventual_response", "{f}");
            ended.insert(f["requestId"].as_str().unwrap_or("").to_string());
        }
    }
    assert_eq!(ended.into_iter().collect::<Vec<_>>(), ["b1", "c2"]);
    // A pod killed mid-turn: its place lapses with the lease (2 s here), then the user may run two again.
    llm.push(Reply::Hang);
    send_message(&mut a, &sa, "a2", "hang").await;
    llm.wait_for_requests(4, Duration::from_secs(5)).await;
    p.remove(0).kill();
    sleep_ms(2_500).await;
    let mut c = connect(&p[0], false).await;
    let sd = create_session(&mut c).await;
    llm.push(slow());
    llm.push(Reply::text(&["ok"]));
    send_message(&mut c, &sd, "d1", "slow").await;
    send_message(&mut b, &sb, "b2", "and another").await;
    assert_eq!(until_terminal(&mut b, "b2").await.last().expect("end")["type"], "eventual_response");
    assert_eq!(until_terminal(&mut c, "d1").await.last().expect("end")["type"], "eventual_response");
}

/// Without `auth.resume_secret` the pods share a key through Redis: a resume token from one pod opens the
/// session on another, and on a pod that starts later (a rolling deploy); a configured secret replaces it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_holds_on_every_pod_and_after_a_restart() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut cfg = config(&llm, &tools);
    cfg.agents[0].widget_secret = "shared-widget-secret-of-32-bytes!!".into();
    let p = pods(2, cfg, &Store::Redis(redis.url())).await;
    let mut a = Client::connect_with(&ws_url(&p[0]), Some("switchboard"), None).await.expect("ws");
    a.send(&json!({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT})).await;
    let ack = a.recv().await;
    let sid = ack["data"]["sessionId"].as_str().expect("sid").to_string();
    let token = ack["data"]["resumeToken"].as_str().expect("token").to_string();
    let open_with = |url: String, token: String, sid: String| async move {
        let mut c = Client::connect_with(&url, Some("switchboard"), None).await.expect("ws");
        let f = json!({"action": "resume_session", "requestId": "r", "sessionId": sid, "afterSeq": 0, "resumeToken": token});
        c.send(&f).await;
        c.recv_until(|v| v["requestId"] == "r").await.pop().expect("ack")
    };
    let on_b = open_with(ws_url(&p[1]), token.clone(), sid.clone()).await;
    assert_eq!(on_b["status"], 200, "another pod checks the token: {on_b}");
    // A pod that starts later on the same Redis (a rolling deploy) knows the same key.
    let mut later_cfg = p[0].config().clone();
    later_cfg.bind = "127.0.0.1:0".into();
    let later = switchboard::server::start(later_cfg.clone()).await.expect("a later pod");
    let on_later = open_with(ws_url(&later), token.clone(), sid.clone()).await;
    assert_eq!(on_later["status"], 200, "{on_later}");
    // A deployment that sets auth.resume_secret signs with it instead: the shared key's tokens stop holding.
    later_cfg.auth.resume_secret = "an-operator-chosen-resume-secret-0123".into();
    let rotated = switchboard::server::start(later_cfg).await.expect("a pod with a configured secret");
    let refused = open_with(ws_url(&rotated), token, sid).await;
    assert_eq!(refused["error"]["code"], "SESSION_NOT_FOUND", "{refused}");
}
