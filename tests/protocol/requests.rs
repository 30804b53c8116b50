//! Request handling: bad input, history and listing, identity, rate limits.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_inputs_get_documented_errors_and_the_socket_lives() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    let cases: Vec<(String, &str, Option<&str>)> = vec![
        ("this is not json".into(), "VALIDATION_ERROR", None),
        (json!({"requestId": "r-noaction", "message": "hi"}).to_string(), "VALIDATION_ERROR", Some("r-noaction")),
        (json!({"action": "frobnicate", "requestId": "r-bad"}).to_string(), "UNSUPPORTED_ACTION", Some("r-bad")),
        (json!({"action": "submit_interaction", "requestId": "r-si", "sessionId": sid}).to_string(), "NO_PENDING_INTERACTION", Some("r-si")),
        (json!({"action": "verify_otp", "requestId": "r-otp", "sessionId": sid, "code": ""}).to_string(), "VALIDATION_ERROR", Some("r-otp")),
        (json!({"action": "send_message", "requestId": "r-type", "sessionId": 42, "message": "x"}).to_string(), "VALIDATION_ERROR", Some("r-type")),
        (json!({"action": "send_message", "requestId": "r-empty", "sessionId": sid, "message": ""}).to_string(), "VALIDATION_ERROR", Some("r-empty")),
        (json!({"action": "send_message", "requestId": "r-long", "sessionId": sid, "message": "x".repeat(10_001)}).to_string(), "VALIDATION_ERROR", Some("r-long")),
        (json!({"action": "send_message", "requestId": "r-orphan", "sessionId": "00000000-0000-0000-0000-000000000000", "message": "anyone?"}).to_string(), "SESSION_NOT_FOUND", Some("r-orphan")),
        (json!({"action": "get_session", "requestId": "r-gs", "sessionId": "nope"}).to_string(), "SESSION_NOT_FOUND", Some("r-gs")),
        (json!({"action": "get_conversation_messages", "requestId": "r-lim", "sessionId": sid, "limit": 0}).to_string(), "VALIDATION_ERROR", Some("r-lim")),
        (json!({"action": "get_conversation_messages", "requestId": "r-cur", "sessionId": sid, "cursor": "garbage"}).to_string(), "VALIDATION_ERROR", Some("r-cur")),
        (json!({"action": "create_conversation_session", "requestId": "r-agent", "agentId": "nobody"}).to_string(), "AGENT_NOT_FOUND", Some("r-agent")),
        (json!({"action": "send_message", "requestId": "r-model", "sessionId": sid, "message": "x", "model": "not-offered"}).to_string(), "VALIDATION_ERROR", Some("r-model")),
        (json!({"action": "send_message", "requestId": "r-skill", "sessionId": sid, "message": "x", "skill": "sql"}).to_string(), "SKILL_NOT_FOUND", Some("r-skill")),
        (json!({"action": "rename_conversation", "requestId": "r-ren", "conversationId": "nope", "title": "x"}).to_string(), "CONVERSATION_NOT_FOUND", Some("r-ren")),
        (json!({"action": "resume_session", "requestId": "r-res", "sessionId": sid, "afterSeq": 0}).to_string(), "UNSUPPORTED_ACTION", Some("r-res")),
    ];
    for (frame, code, rid) in cases {
        c.send_text(&frame).await;
        let e = c.recv().await;
        assert_v1(std::slice::from_ref(&e));
        assert_eq!(e["type"], "error", "{frame} → {e}");
        assert_eq!(e["error"]["code"], code, "{frame} → {e}");
        assert_eq!(e["data"]["error"], e["error"]);
        assert_eq!(e["requestId"].as_str(), rid, "{frame} → {e}");
        assert!(e.get("status").is_none());
    }
    still_open(&mut c).await;
    // A second turn while one runs.
    llm.push(Reply::Slow { chunks: vec!["x".into(); 5], delay_ms: 100, usage: None });
    send_message(&mut c, &sid, "r-a", "one").await;
    send_message(&mut c, &sid, "r-b", "two").await;
    let first = c.recv().await;
    assert_eq!((first["requestId"].as_str(), first["status"].as_u64()), (Some("r-a"), Some(202)));
    let frames = until_terminal(&mut c, "r-a").await;
    let busy = frames.iter().find(|f| f["requestId"] == "r-b").expect("r-b answered");
    assert_eq!(busy["error"]["code"], "TURN_IN_PROGRESS");
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    still_open(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_paging_listing_and_rename() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    for i in 0..3 {
        llm.push(Reply::text(&[format!("answer {i}")]));
        send_message(&mut c, &sid, &format!("r{i}"), &format!("question {i}")).await;
        until_terminal(&mut c, &format!("r{i}")).await;
    }
    // The model saw the history of earlier turns.
    let third = &llm.requests()[2];
    let texts: Vec<&str> =
        third["messages"].as_array().expect("m").iter().filter_map(|m| m["content"].as_str()).collect();
    assert!(texts.contains(&"question 0") && texts.contains(&"answer 1"), "{texts:?}");
    c.send(&json!({"action": "get_conversation_messages", "requestId": "h1", "sessionId": sid, "limit": 4})).await;
    let p1 = c.recv().await;
    assert_v1(std::slice::from_ref(&p1));
    let texts: Vec<&str> = p1["data"]["messages"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["content"]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, ["answer 2", "question 2", "answer 1", "question 1"]);
    assert_eq!(p1["data"]["messages"][0]["direction"], "outbound");
    assert_eq!(p1["data"]["hasMore"], true);
    let cursor = p1["data"]["nextCursor"].as_str().expect("cursor").to_string();
    c.send(&json!({"action": "get_conversation_messages", "requestId": "h2", "sessionId": sid, "limit": 4, "cursor": cursor})).await;
    let p2 = c.recv().await;
    let texts: Vec<&str> = p2["data"]["messages"]
        .as_array()
        .expect("m")
        .iter()
        .map(|m| m["content"]["text"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(texts, ["answer 0", "question 0"]);
    assert_eq!((p2["data"]["hasMore"].as_bool(), p2["data"]["nextCursor"].is_null()), (Some(false), true));
    c.send(&json!({"action": "list_conversations", "requestId": "l"})).await;
    let l = c.recv().await;
    let conv = &l["data"]["conversations"][0];
    assert_eq!((conv["title"].as_str(), conv["messageCount"].as_u64()), (Some("question 0"), Some(6)));
    let cid = conv["conversationId"].as_str().expect("cid").to_string();
    c.send(&json!({"action": "rename_conversation", "requestId": "rn", "conversationId": cid, "title": "Orders"}))
        .await;
    assert_eq!(c.recv().await["data"], json!({"conversationId": cid, "title": "Orders"}));
    // A new session can continue the same conversation.
    c.send(
        &json!({"action": "create_conversation_session", "requestId": "c2", "agentId": AGENT, "conversationId": cid}),
    )
    .await;
    let created = c.recv().await;
    assert_eq!(created["data"]["conversationId"], cid.as_str());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_identity_and_cross_user_access() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.auth.mode = switchboard::config::AuthMode::Jwt;
    cfg.auth.jwt_hs256_secret = "test-secret-of-32-bytes-0123456789".into();
    let pod = pod(cfg).await;
    let now = chrono::Utc::now().timestamp();
    let token = |sub: &str, exp: i64| {
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": exp, "org": "acme"}),
            &EncodingKey::from_secret(b"test-secret-of-32-bytes-0123456789"),
        )
        .expect("jwt")
    };
    let url = ws_url(&pod);
    assert_eq!(support::ws::Client::connect_err_status(&url, None).await, Some(401));
    assert_eq!(support::ws::Client::connect_err_status(&url, Some("garbage")).await, Some(401));
    assert_eq!(support::ws::Client::connect_err_status(&url, Some(&token("alice", now - 600))).await, Some(401));
    let mut alice =
        support::ws::Client::connect_with(&url, None, Some(&token("alice", now + 600))).await.expect("alice");
    let sid = create_session(&mut alice).await;
    let mut bob = support::ws::Client::connect(&format!("{url}?token={}", token("bob", now + 600))).await;
    for frame in [
        json!({"action": "get_session", "requestId": "x1", "sessionId": sid}),
        json!({"action": "send_message", "requestId": "x2", "sessionId": sid, "message": "hi"}),
        json!({"action": "get_conversation_messages", "requestId": "x4", "sessionId": sid}),
        json!({"action": "cancel", "requestId": "x5", "sessionId": sid}),
        json!({"action": "verify_otp", "requestId": "x6", "sessionId": sid, "code": "123456"}),
    ] {
        bob.send(&frame).await;
        let e = bob.recv().await;
        assert_eq!(e["error"]["code"], "SESSION_NOT_FOUND", "{frame} → {e}");
        assert_eq!(e["error"]["message"], format!("session '{sid}' not found"));
    }
    // Answers to a park on someone else's session: "nothing pending" (§2), which reveals nothing either.
    for (frame, code) in [
        (
            json!({"action": "confirm_tool_action", "requestId": "x3", "sessionId": sid, "approved": true}),
            "NO_PENDING_CONFIRMATION",
        ),
        (
            json!({"action": "submit_interaction", "requestId": "x7", "sessionId": sid, "interactionId": "i", "values": {}}),
            "NO_PENDING_INTERACTION",
        ),
    ] {
        bob.send(&frame).await;
        let e = bob.recv().await;
        assert_eq!(e["error"]["code"], code, "{frame} → {e}");
        assert!(!e["error"]["message"].as_str().unwrap_or("").contains("not found"), "{e}");
    }
    bob.send(&json!({"action": "list_conversations", "requestId": "l"})).await;
    assert_eq!(bob.recv().await["data"]["conversations"], json!([]));
    // A token that expires mid-connection closes the socket with 4401.
    let mut brief = support::ws::Client::connect_with(&url, None, Some(&token("carol", now + 2))).await.expect("carol");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
    loop {
        assert!(tokio::time::Instant::now() < deadline, "no 4401 close");
        match brief.recv_raw().await {
            Frame::Close(code) => {
                assert_eq!(code, Some(4401));
                break;
            }
            Frame::Text(_) => continue,
            other => panic!("expected 4401, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn send_rate_is_limited_per_connection() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.messages_per_minute = 2;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    for i in 0..2 {
        llm.push(Reply::text(&["ok"]));
        let rid = format!("r{i}");
        send_message(&mut c, &sid, &rid, "hi").await;
        assert_eq!(until_terminal(&mut c, &rid).await.last().expect("end")["type"], "eventual_response");
    }
    send_message(&mut c, &sid, "r-over", "hi").await;
    let e = c.recv().await;
    assert_eq!((e["error"]["code"].as_str(), e["requestId"].as_str()), (Some("RATE_LIMITED"), Some("r-over")));
    assert_eq!(llm.request_count(), 2, "a refused message never reaches the model");
    still_open(&mut c).await;
}

/// One connection follows at most `limits.sessions_per_connection` sessions: one more is refused (and not
/// created), the socket stays open, and the sessions it has keep working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_per_connection_are_bounded() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.sessions_per_connection = 3;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, true).await;
    let mut sids = Vec::new();
    for _ in 0..3 {
        sids.push(create_session(&mut c).await);
    }
    c.send(&json!({"action": "create_conversation_session", "requestId": "fourth", "agentId": AGENT})).await;
    let e = c.recv_until(|v| v["requestId"] == "fourth").await;
    let e = e.last().expect("reply");
    assert_eq!(e["error"]["code"], "RATE_LIMITED", "{e}");
    assert!(e["error"]["message"].as_str().is_some_and(|m| m.contains("sessions_per_connection")), "{e}");
    c.send(&json!({"action": "list_conversations", "requestId": "list"})).await;
    let list = c.recv_until(|v| v["requestId"] == "list").await;
    let shown = list.last().expect("list")["data"]["conversations"].as_array().map(Vec::len);
    assert_eq!(shown, Some(3), "the refused create made no conversation: {list:?}");
    // Resuming a session it already follows is not a new one.
    c.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sids[0], "afterSeq": 0})).await;
    assert_eq!(c.recv_until(|v| v["requestId"] == "res").await.last().expect("ack")["status"], 200);
    llm.push(Reply::text(&["still here"]));
    send_message(&mut c, &sids[2], "r-1", "hi").await;
    assert_eq!(tokens(&until_terminal(&mut c, "r-1").await), "still here");
}

/// A send refused with TURN_IN_PROGRESS did nothing, so it does not use up the sender's budget: a client
/// retrying until the turn ends still gets its real message through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_refused_while_a_turn_runs_do_not_use_up_the_rate_budget() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.messages_per_minute = 3;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    llm.push(Reply::Hang);
    send_message(&mut c, &sid, "r-1", "long one").await;
    c.recv_until(|v| v["type"] == "stream_token").await;
    for i in 0..10 {
        let rid = format!("busy-{i}");
        send_message(&mut c, &sid, &rid, "again?").await;
        let e = c.recv_until(|v| v["requestId"] == rid.as_str()).await;
        assert_eq!(e.last().expect("reply")["error"]["code"], "TURN_IN_PROGRESS", "{e:?}");
    }
    c.send(&json!({"action": "cancel", "requestId": "stop", "sessionId": sid})).await;
    until_terminal(&mut c, "r-1").await;
    llm.push(Reply::text(&["ok"]));
    send_message(&mut c, &sid, "r-2", "the real one").await;
    let frames = until_terminal(&mut c, "r-2").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response", "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_sub_in_two_orgs_is_two_users() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.auth.mode = switchboard::config::AuthMode::Jwt;
    cfg.auth.jwt_hs256_secret = "test-secret-of-32-bytes-0123456789".into();
    let pod = pod(cfg).await;
    let exp = chrono::Utc::now().timestamp() + 600;
    let token = |org: &str| {
        encode(
            &Header::default(),
            &json!({"sub": "sam", "exp": exp, "org": org}),
            &EncodingKey::from_secret(b"test-secret-of-32-bytes-0123456789"),
        )
        .expect("jwt")
    };
    let mut acme = support::ws::Client::connect_with(&ws_url(&pod), None, Some(&token("acme"))).await.expect("ws");
    let mut globex = support::ws::Client::connect_with(&ws_url(&pod), None, Some(&token("globex"))).await.expect("ws");
    let sid = create_session(&mut acme).await;
    create_session(&mut globex).await;
    // A user event for sam of acme reaches acme's socket only.
    let r = reqwest::Client::new()
        .post(http_url(&pod, "/admin/publish"))
        .bearer_auth("publish-key-0123456789")
        .json(
            &json!({"target": {"type": "user", "id": "sam", "org": "acme"}, "event": {"type": "note", "for": "acme"}}),
        )
        .send()
        .await
        .expect("publish");
    assert_eq!(r.status(), 202);
    assert_eq!(acme.recv().await["for"], "acme");
    globex.expect_silence(Duration::from_millis(300)).await;
    // Each sees its own conversation list, and not the other's session.
    for c in [&mut acme, &mut globex] {
        c.send(&json!({"action": "list_conversations", "requestId": "l"})).await;
        let listed = c.recv().await;
        assert_eq!(listed["data"]["conversations"].as_array().map(Vec::len), Some(1), "{listed}");
    }
    globex.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    assert_eq!(globex.recv().await["error"]["code"], "SESSION_NOT_FOUND");
}

/// Conversations are kept `session.conversation_ttl_s` after their last message, then are gone from the list.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_expire_after_their_retention() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.session.conversation_ttl_s = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    create_session(&mut c).await;
    let count = |v: &Value| v["data"]["conversations"].as_array().map(Vec::len);
    c.send(&json!({"action": "list_conversations", "requestId": "l1"})).await;
    assert_eq!(count(c.recv_until(|v| v["requestId"] == "l1").await.last().expect("list")), Some(1));
    sleep_ms(1_200).await;
    c.send(&json!({"action": "list_conversations", "requestId": "l2"})).await;
    assert_eq!(count(c.recv_until(|v| v["requestId"] == "l2").await.last().expect("list")), Some(0));
}
