//! The seed protocol's parks across pods on one Redis: an interaction card and an OTP gate parked on pod A
//! are answered on pod B after A was killed; two answers racing on two pods, one wins; the verified flag set
//! on one pod is seen by another.

use super::*;

async fn create_with(c: &mut Client, extra: serde_json::Value) -> String {
    let mut frame = json!({"action": "create_conversation_session", "requestId": "create", "agentId": AGENT});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        frame[k] = v;
    }
    c.send(&frame).await;
    let r = c.recv().await;
    assert_eq!(r["status"], 200, "{r}");
    r["data"]["sessionId"].as_str().expect("sid").to_string()
}

async fn raise_card(c: &mut Client, llm: &FakeLlm, sid: &str, rid: &str) -> String {
    let args = json!({"fields": ["email"], "reason": "to send you the quote"});
    llm.push(Reply::tool_call(&format!("call-{rid}"), "request_identity_intake", &args));
    send_message(c, sid, rid, "a quote please").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    let card = frames.iter().find(|f| f["type"] == "interaction_required").expect("card");
    card["data"]["data"]["interactionId"].as_str().expect("id").to_string()
}

fn submit(sid: &str, iid: &str, rid: &str, email: &str) -> serde_json::Value {
    json!({"action": "submit_interaction", "requestId": rid, "sessionId": sid, "interactionId": iid,
           "values": {"email": email}})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn interaction_parks_are_answered_on_any_pod_once() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut p = pods(3, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_with(&mut a, json!({"supports": ["identity_form"]})).await;
    // Two answers racing on pods B and C: exactly one is acknowledged, the other finds nothing pending.
    let iid = raise_card(&mut a, &llm, &sid, "r-1").await;
    let mut b = connect(&p[1], true).await;
    let mut c = connect(&p[2], true).await;
    llm.push(Reply::text(&["Thanks!"]));
    b.send(&submit(&sid, &iid, "s-b", "b@example.com")).await;
    c.send(&submit(&sid, &iid, "s-c", "c@example.com")).await;
    // Each socket's own answer (the winner's socket is attached to the session and sees its events too).
    let (rb, rc) = tokio::join!(b.recv_until(|v| v["requestId"] == "s-b"), c.recv_until(|v| v["requestId"] == "s-c"));
    let (rb, rc) = (rb.last().cloned().expect("b"), rc.last().cloned().expect("c"));
    let acks = [&rb, &rc].iter().filter(|r| r["type"] == "immediate_response").count();
    let refused = [&rb, &rc].iter().filter(|r| r["error"]["code"] == "NO_PENDING_INTERACTION").count();
    assert_eq!((acks, refused), (1, 1), "{rb}\n{rc}");
    let frames = until_terminal(&mut a, "r-1").await;
    let results: Vec<_> =
        frames.iter().filter(|f| f["data"]["state"]["rawResponse"].get("toolResult").is_some()).collect();
    assert_eq!(results.len(), 1, "the turn resumed once: {frames:?}");
    // Parked on A, A killed, answered on B: the turn resumes on B.
    let iid = raise_card(&mut a, &llm, &sid, "r-2").await;
    p.remove(0).kill();
    let mut b2 = connect(&p[0], true).await;
    b2.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    assert_eq!(b2.recv().await["data"]["pendingInteraction"]["interactionId"], iid.as_str());
    llm.push(Reply::text(&["Got it, Ada."]));
    b2.send(&submit(&sid, &iid, "s-2", "ada@example.com")).await;
    let frames = until_terminal(&mut b2, "r-2").await;
    assert_eq!(frames[0]["data"]["values"], json!({"email": "ada@example.com"}));
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    assert_eq!(tokens(&frames), "Got it, Ada.");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_otp_park_is_verified_on_another_pod_and_every_pod_sees_the_flag() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    with_otp_gate(&mut cfg, &tools);
    let redis = RedisServer::start();
    let mut p = pods(3, cfg, &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_with(&mut a, json!({"userEmail": "ada@example.com"})).await;
    llm.push(Reply::tool_call("call-1", "pay_invoice", &json!({})));
    send_message(&mut a, &sid, "r-1", "pay it").await;
    a.recv_until(|v| v["type"] == "stream_chunk").await;
    let code = tools.wait_for_calls("otp", 1, Duration::from_secs(5)).await[0].body["code"]
        .as_str()
        .expect("code")
        .to_string();
    p.remove(0).kill();
    // Wrong guesses on two pods share one attempt budget.
    let mut b = connect(&p[0], true).await;
    let mut c = connect(&p[1], true).await;
    let mut left = Vec::new();
    for client in [&mut b, &mut c] {
        client.send(&json!({"action": "verify_otp", "requestId": "v", "sessionId": sid, "code": "x"})).await;
        left.push(client.recv().await["data"]["data"]["attemptsRemaining"].as_u64().expect("left"));
    }
    assert_eq!(left, [2, 1]);
    llm.push(Reply::text(&["Paid."]));
    b.send(&json!({"action": "verify_otp", "requestId": "v-ok", "sessionId": sid, "code": code})).await;
    let frames = until_terminal(&mut b, "r-1").await;
    assert_eq!(frames[0]["type"], "otp_verified", "{frames:?}");
    assert_eq!(tools.calls("pay_invoice").len(), 1);
    // Pod C reads the verified flag: the next gated call runs there without a code.
    llm.push(Reply::tool_call("call-2", "pay_invoice", &json!({})));
    llm.push(Reply::text(&["Paid again."]));
    send_message(&mut c, &sid, "r-2", "again").await;
    let frames = until_terminal(&mut c, "r-2").await;
    assert!(!frames.iter().any(|f| f["type"] == "otp_verification_required"), "{frames:?}");
    assert_eq!(tools.calls("pay_invoice").len(), 2);
    assert_eq!(tools.calls("otp").len(), 1);
}
