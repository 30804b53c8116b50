//! Tenancy and abuse over real sockets: widget identities scoped to the agent that vouched, conversations that
//! belong to their agent, resume tokens for sockets without a JWT, budgets on session creation, reads, frames
//! and sockets (an anonymous caller counted per client address), and an agent's origins on every action.

use super::*;
use support::ws::Client;

const SECRET_A: &str = "agent-a-widget-secret-of-32-bytes!!";
const SECRET_B: &str = "agent-b-widget-secret-of-32-bytes!!";
const AGENT_B: &str = "22222222-2222-2222-2222-222222222222";

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

/// What a host's server sends its page: `userId` signed for `agent` with `secret`, now.
fn auth_context(secret: &str, agent: &str, user: &str) -> Value {
    let ts = now_s();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let sig: String = ring::hmac::sign(&key, format!("{agent}:{user}:{ts}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"userId": user, "timestamp": ts, "signature": sig})
}

/// Two agents, each with its own widget secret.
fn two_agents(llm: &FakeLlm, tools: &FakeTools) -> switchboard::config::Config {
    let mut cfg = config(llm, tools);
    cfg.agents[0].widget_secret = SECRET_A.into();
    let mut b = cfg.agents[0].clone();
    b.id = AGENT_B.into();
    b.name = "Bea".into();
    b.widget_secret = SECRET_B.into();
    cfg.agents.push(b);
    cfg
}

/// The headers of an extended socket from client `ip`, through the trusted proxy (the test's 127.0.0.1).
fn from(ip: &'static str) -> [(&'static str, &'static str); 2] {
    [("X-Forwarded-For", ip), ("Sec-WebSocket-Protocol", "switchboard")]
}

async fn ask(c: &mut Client, frame: Value) -> Value {
    let rid = frame["requestId"].as_str().expect("requestId").to_string();
    c.send(&frame).await;
    c.recv_until(move |v| v["requestId"] == rid.as_str() && v["type"] != "stream_token").await.pop().expect("reply")
}

fn create(agent: &str, rid: &str) -> Value {
    json!({"action": "create_conversation_session", "requestId": rid, "agentId": agent})
}

fn with(mut frame: Value, key: &str, value: Value) -> Value {
    frame[key] = value;
    frame
}

/// The review's scenario, exactly: Alice, vouched for by agent A, tells it a secret; a socket presenting `alice`
/// signed with agent B's secret can neither list, open nor continue her conversation.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_agents_secret_cannot_act_for_another_agents_user() {
    let (llm, tools) = setup().await;
    let pod = pod(two_agents(&llm, &tools)).await;
    let mut alice = connect(&pod, true).await;
    let ack = ask(&mut alice, with(create(AGENT, "c"), "authContext", auth_context(SECRET_A, AGENT, "alice"))).await;
    assert_eq!(ack["status"], 200, "{ack}");
    let (sid, cid) =
        (ack["data"]["sessionId"].as_str().expect("sid"), ack["data"]["conversationId"].as_str().expect("cid"));
    send_message(&mut alice, sid, "m", "my secret order number is 4242").await;
    until_terminal(&mut alice, "m").await;

    let mut mallory = connect(&pod, true).await;
    let ack =
        ask(&mut mallory, with(create(AGENT_B, "c"), "authContext", auth_context(SECRET_B, AGENT_B, "alice"))).await;
    assert_eq!(ack["status"], 200, "agent B may vouch for its own alice: {ack}");
    let listed = ask(&mut mallory, json!({"action": "list_conversations", "requestId": "l"})).await;
    assert!(!listed.to_string().contains(cid), "agent B's alice does not list agent A's: {listed}");
    let opened = ask(&mut mallory, json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    assert_eq!(opened["error"]["code"], "SESSION_NOT_FOUND", "{opened}");
    let history =
        ask(&mut mallory, json!({"action": "get_conversation_messages", "requestId": "h", "sessionId": sid})).await;
    assert_eq!(history["error"]["code"], "SESSION_NOT_FOUND");
    let reopened = ask(&mut mallory, with(create(AGENT_B, "c2"), "conversationId", json!(cid))).await;
    assert_eq!(reopened["error"]["code"], "CONVERSATION_NOT_FOUND", "{reopened}");
    assert!(!reopened.to_string().contains("4242"));
    // Alice herself cannot carry her agent-A conversation to agent B either: a conversation belongs to its agent.
    let moved = ask(&mut alice, with(create(AGENT_B, "c3"), "conversationId", json!(cid))).await;
    assert_eq!(moved["error"]["code"], "CONVERSATION_NOT_FOUND", "{moved}");
    // The ids of other kinds of caller can never be signed.
    let mut forger = connect(&pod, true).await;
    for user in ["api-key:billing", "anonymous", &format!("widget:{AGENT}:alice")] {
        let r = ask(&mut forger, with(create(AGENT, "f"), "authContext", auth_context(SECRET_A, AGENT, user))).await;
        assert_eq!(r["error"]["code"], "AUTH_CONTEXT_INVALID", "{user}: {r}");
    }
    still_open(&mut forger).await;
}

/// A widget socket that reconnects (a drain, a blip, a reload) is anonymous again: the create ack's resume token,
/// or a fresh authContext, makes it the session's owner; anything else is not found.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_token_or_a_fresh_auth_context_reopens_the_session_on_a_new_socket() {
    let (llm, tools) = setup().await;
    let pod = pod(two_agents(&llm, &tools)).await;
    let mut first = connect(&pod, true).await;
    let ack = ask(&mut first, with(create(AGENT, "c"), "authContext", auth_context(SECRET_A, AGENT, "ann"))).await;
    let sid = ack["data"]["sessionId"].as_str().expect("sid").to_string();
    let token = ack["data"]["resumeToken"].as_str().expect("a resume token for an extended client").to_string();
    send_message(&mut first, &sid, "m1", "hello").await;
    until_terminal(&mut first, "m1").await;
    let mut v1 = connect(&pod, false).await;
    let plain = ask(&mut v1, create(AGENT, "v")).await;
    assert!(plain["data"].get("resumeToken").is_none(), "v1's ack keeps its shape: {plain}");
    first.close().await;

    let resume = |proof: (&str, Value)| {
        let mut f = json!({"action": "resume_session", "requestId": "r", "sessionId": sid, "afterSeq": 0});
        f[proof.0] = proof.1;
        f
    };
    let mut stranger = connect(&pod, true).await;
    for (key, bad) in [
        ("resumeToken", json!("123.abc")),
        ("resumeToken", json!(token.replacen('.', "0.", 1))),
        ("authContext", auth_context(SECRET_A, AGENT, "bob")),
        ("authContext", auth_context(SECRET_B, AGENT, "ann")),
    ] {
        let r = ask(&mut stranger, resume((key, bad.clone()))).await;
        assert_eq!(r["error"]["code"], "SESSION_NOT_FOUND", "{key} {bad}: {r}");
    }
    let r = ask(&mut stranger, resume(("resumeToken", json!("x".repeat(300))))).await;
    assert_eq!(r["error"]["code"], "VALIDATION_ERROR");
    let anon = ask(&mut stranger, json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    assert_eq!(anon["error"]["code"], "SESSION_NOT_FOUND", "a failed proof leaves the socket anonymous");

    let mut back = connect(&pod, true).await;
    back.send(&resume(("resumeToken", json!(token)))).await;
    let frames = back.recv_until(|v| v["type"] == "eventual_response").await;
    let ack = frames.iter().find(|f| f["requestId"] == "r").expect("resume ack");
    assert_eq!(ack["data"]["recovered"], true, "{ack}");
    assert!(ack["data"]["resumeToken"].is_string(), "a renewed token");
    let mine = ask(&mut back, json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    assert_eq!(mine["status"], 200, "the socket acts as ann now: {mine}");
    send_message(&mut back, &sid, "m2", "again").await;
    let turn = until_terminal(&mut back, "m2").await;
    assert_eq!(turn.last().expect("end")["type"], "eventual_response");

    let mut fresh = connect(&pod, true).await;
    let r = ask(&mut fresh, resume(("authContext", auth_context(SECRET_A, AGENT, "ann")))).await;
    let r = if r["type"] == "immediate_response" { r } else { panic!("{r}") };
    assert_eq!(r["status"], 200, "a fresh authContext of the owner works too: {r}");
}

/// Session creation is budgeted per caller on every door (socket and REST) across pods; an anonymous caller
/// counts per client address (X-Forwarded-For from a trusted proxy), so one address cannot spend another's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn session_creation_is_budgeted_per_caller_across_pods_and_doors() {
    crate::support::one_budget_window().await;
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.sessions_per_user_per_minute = 5;
    cfg.http.trusted_proxies = vec!["127.0.0.1".into()];
    let store = memory_store(&cfg);
    let p = pods(2, cfg, &store).await;
    let mut one = Client::connect_with_headers(&ws_url(&p[0]), &from("198.51.100.1")).await.expect("ws");
    let mut other_pod = Client::connect_with_headers(&ws_url(&p[1]), &from("198.51.100.1")).await.expect("ws");
    let mut created = 0;
    for i in 0..4 {
        let c = if i % 2 == 0 { &mut one } else { &mut other_pod };
        assert_eq!(ask(c, create(AGENT, &format!("c{i}"))).await["status"], 200);
        created += 1;
    }
    // The REST door spends the same budget (a new namespace is a new session).
    let http = reqwest::Client::new();
    let rest = http
        .post(http_url(&p[1], "/api/chat"))
        .header("X-Forwarded-For", "198.51.100.1")
        .json(&json!({"message": "hi", "namespace": "n1"}))
        .send()
        .await
        .expect("rest");
    assert_eq!(rest.status(), 200);
    created += 1;
    assert_eq!(created, 5);
    let refused = ask(&mut one, create(AGENT, "over")).await;
    assert_eq!(refused["error"]["code"], "RATE_LIMITED", "{refused}");
    let wait = refused["data"]["details"]["retryAfterMs"].as_u64().expect("retryAfterMs");
    assert!((1..=60_000).contains(&wait), "{wait}");
    let rest = http
        .post(http_url(&p[0], "/api/chat"))
        .header("X-Forwarded-For", "198.51.100.1")
        .json(&json!({"message": "hi", "namespace": "n2"}))
        .send()
        .await
        .expect("rest");
    assert_eq!(rest.status(), 429);
    assert!(rest.headers().contains_key("retry-after"));
    still_open(&mut one).await;
    // Another visitor is unaffected.
    let mut neighbour = Client::connect_with_headers(&ws_url(&p[0]), &from("203.0.113.7")).await.expect("ws");
    assert_eq!(ask(&mut neighbour, create(AGENT, "n")).await["status"], 200);
}

/// Every frame passes the connection's token bucket: a flood is answered `RATE_LIMITED` with the wait and is
/// not handled, the socket stays open, and history reads have a per-caller budget of their own.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_and_reads_are_budgeted_and_the_socket_stays_open() {
    crate::support::one_budget_window().await;
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.frames_per_connection_per_s = 5;
    cfg.limits.frames_burst = 10;
    cfg.limits.reads_per_user_per_minute = 3;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    for i in 0..30 {
        c.send(&json!({"action": "ping", "requestId": format!("p{i}")})).await;
    }
    let mut pongs = 0;
    let mut limited = 0;
    for _ in 0..30 {
        let f = c.recv().await;
        match f["type"].as_str() {
            Some("pong") => pongs += 1,
            Some("error") => {
                assert_eq!(f["error"]["code"], "RATE_LIMITED", "{f}");
                assert!(f["data"]["details"]["retryAfterMs"].as_u64().is_some_and(|ms| ms <= 1_000), "{f}");
                assert!(f["requestId"].as_str().is_some_and(|r| r.starts_with('p')), "answered by its id: {f}");
                check_v1_frame(&f).expect("a v1 error frame");
                limited += 1;
            }
            _ => panic!("{f}"),
        }
    }
    assert!((10..=12).contains(&pongs), "the burst passes, then the rate: {pongs} pongs");
    assert_eq!(pongs + limited, 30);
    sleep_ms(1_100).await;
    still_open(&mut c).await;

    let mut reader = connect(&pod, false).await;
    for i in 0..3 {
        let r = ask(&mut reader, json!({"action": "list_conversations", "requestId": format!("l{i}")})).await;
        assert_eq!(r["status"], 200, "{r}");
    }
    let r = ask(&mut reader, json!({"action": "list_conversations", "requestId": "l3"})).await;
    assert_eq!(r["error"]["code"], "RATE_LIMITED", "{r}");
    still_open(&mut reader).await;
}

/// Anonymous sockets count per client address, not as one shared user; a socket that takes a widget identity
/// counts for that user from then on and frees its place at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anonymous_sockets_count_per_address_and_move_with_their_identity() {
    let (llm, tools) = setup().await;
    let mut cfg = two_agents(&llm, &tools);
    cfg.limits.sockets_per_user = 2;
    cfg.http.trusted_proxies = vec!["127.0.0.0/8".into()];
    let pod = pod(cfg).await;
    let url = ws_url(&pod);
    let mut a1 = Client::connect_with_headers(&url, &from("198.51.100.1")).await.expect("1st");
    let _a2 = Client::connect_with_headers(&url, &from("198.51.100.1")).await.expect("2nd");
    let third = Client::connect_with_headers(&url, &from("198.51.100.1")).await.err().expect("3rd refused");
    assert_eq!(third.status, Some(429));
    // Not one shared "anonymous" user: other visitors get in.
    for ip in ["198.51.100.2", "198.51.100.3", "198.51.100.4"] {
        Client::connect_with_headers(&url, &from(ip)).await.expect("another visitor");
    }
    // One of the address's sockets becomes a widget user: the address has a place again, at once.
    let ack = ask(&mut a1, with(create(AGENT, "c"), "authContext", auth_context(SECRET_A, AGENT, "zoe"))).await;
    assert_eq!(ack["status"], 200, "{ack}");
    Client::connect_with_headers(&url, &from("198.51.100.1")).await.expect("the address's place was freed");
}

/// An agent's `allowed_origins` holds for every action on its sessions, not only create: a page on another
/// origin (same user, another tab) can neither send nor read.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_origins_hold_for_every_action_of_its_sessions() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.auth.api_keys = vec![switchboard::config::ApiKeyConfig {
        name: "web".into(),
        org: "default".into(),
        key: "web-key-0123456789abcdef".into(),
    }];
    cfg.agents[0].allowed_origins = vec!["https://shop.example".into()];
    let pod = pod(cfg).await;
    let key = [("Authorization", "Bearer web-key-0123456789abcdef")];
    let mut shop =
        Client::connect_with_headers(&ws_url(&pod), &[key[0], ("Origin", "https://shop.example")]).await.expect("ws");
    let sid = create_session(&mut shop).await;
    let mut evil =
        Client::connect_with_headers(&ws_url(&pod), &[key[0], ("Origin", "https://evil.example")]).await.expect("ws");
    for frame in [
        json!({"action": "send_message", "requestId": "s", "sessionId": sid, "message": "hi"}),
        json!({"action": "get_session", "requestId": "g", "sessionId": sid}),
        json!({"action": "get_conversation_messages", "requestId": "h", "sessionId": sid}),
    ] {
        let r = ask(&mut evil, frame.clone()).await;
        assert_eq!(r["error"]["code"], "ORIGIN_NOT_ALLOWED", "{frame}: {r}");
    }
    // The same caller without a browser's Origin (a server) is not a page: allowed.
    let mut server = Client::connect_with_headers(&ws_url(&pod), &key).await.expect("ws");
    assert_eq!(
        ask(&mut server, json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await["status"],
        200
    );
}
