//! Turns: streaming, tools, model failures, options, the demo model, coalesced appends.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_turn_has_v1_shapes_and_order() {
    let (llm, tools) = setup().await;
    llm.push(Reply::text_with_usage(&["Hel", "lo ", "there."], 11, 3));
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    assert_eq!(c.selected_protocol(), None);
    c.send(&json!({"action": "create_conversation_session", "requestId": "r-create", "agentId": AGENT, "userName": "Alice"})).await;
    let created = c.recv().await;
    assert_v1(std::slice::from_ref(&created));
    assert_eq!(created["requestId"], "r-create");
    assert_eq!(created["data"]["agentName"], "Aria");
    for k in ["sessionId", "conversationId", "agentId", "userParticipantId", "agentParticipantId"] {
        assert!(created["data"][k].is_string(), "{k} missing: {created}");
    }
    let sid = created["data"]["sessionId"].as_str().expect("sid").to_string();
    send_message(&mut c, &sid, "r-1", "hi").await;
    let frames = until_terminal(&mut c, "r-1").await;
    assert_v1(&frames);
    assert_eq!(
        types(&frames),
        ["immediate_response", "stream_token", "stream_token", "stream_token", "eventual_response"]
    );
    assert_eq!(frames[0]["status"], 202);
    assert_eq!(frames[0]["data"], json!({}));
    assert_eq!(tokens(&frames), "Hello there.");
    let end = frames.last().expect("end");
    assert_eq!(end["status"], 200);
    assert_eq!(end["data"]["data"]["response"]["responseParts"], json!(["Hello there."]));
    // The model has no price (`llm.prices`): no cost, left out rather than a made-up 0.
    assert_eq!(end["data"]["data"]["usage"], json!({"promptTokens": 11, "completionTokens": 3}));
    for f in &frames {
        assert_eq!(f["requestId"], "r-1");
    }
    // The model got a real OpenAI request.
    let req = &llm.requests()[0];
    assert_eq!(req["stream"], true);
    assert_eq!(req["stream_options"]["include_usage"], true);
    assert_eq!(req["model"], "gpt-4o-mini");
    assert_eq!(req["messages"][0]["role"], "system");
    assert_eq!(req["messages"].as_array().expect("msgs").last().expect("last")["content"], "hi");
    // The agent's three tools, the two interaction raise tools and the fallback `submit_interaction` (this
    // client declared no card capabilities).
    let names: Vec<&str> =
        req["tools"].as_array().expect("tools").iter().filter_map(|t| t["function"]["name"].as_str()).collect();
    assert_eq!(
        names,
        [
            "lookup_order",
            "delete_record",
            "issue_refund",
            "request_identity_intake",
            "request_choices",
            "submit_interaction"
        ]
    );
    assert_eq!(llm.auth_headers()[0].as_deref(), Some("Bearer sk-test"));
    // get_session and ping are v1 too.
    c.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    let s = c.recv().await;
    assert_v1(std::slice::from_ref(&s));
    assert_eq!(
        (s["data"]["status"].as_str(), s["data"]["threadId"].as_str()),
        (Some("active"), created["data"]["conversationId"].as_str())
    );
    assert!(s["data"].get("pendingConfirmation").is_none());
    still_open(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extended_frames_differ_only_by_extensions() {
    let (llm, tools) = setup().await;
    llm.push(Reply::text(&["a", "b"]));
    llm.push(Reply::text(&["c"]));
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, true).await;
    assert_eq!(c.selected_protocol().as_deref(), Some("switchboard"));
    let sid = create_session(&mut c).await;
    send_message(&mut c, &sid, "r-1", "one").await;
    let mut frames = until_terminal(&mut c, "r-1").await;
    send_message(&mut c, &sid, "r-2", "two").await;
    frames.extend(until_terminal(&mut c, "r-2").await);
    let mut seqs = Vec::new();
    let mut epochs = std::collections::HashSet::new();
    for f in &frames {
        let mut v1 = f.clone();
        let obj = v1.as_object_mut().expect("object");
        if f["type"] == "immediate_response" {
            assert!(f.get("seq").is_none() && f.get("sessionId").is_none(), "acks are not logged: {f}");
        } else {
            assert_eq!(obj.remove("sessionId"), Some(json!(sid)));
            seqs.push(obj.remove("seq").and_then(|s| s.as_u64()).expect("seq"));
            epochs.insert(obj.remove("epoch").and_then(|e| e.as_str().map(str::to_string)).expect("epoch"));
        }
        check_v1_frame(&v1).unwrap_or_else(|e| panic!("{e}: {f}"));
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free seq from 1");
    assert_eq!(epochs.len(), 1, "one log, one epoch: {epochs:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn webhook_tools_run_and_report() {
    let (llm, tools) = setup().await;
    tools.set("lookup_order", Behaviour::Ok(json!({"status": "shipped"})));
    llm.push(Reply::ToolCalls {
        calls: vec![
            ("call_a".into(), "lookup_order".into(), r#"{"id":"A1"}"#.into()),
            ("call_b".into(), "lookup_order".into(), r#"{"id":"B2"}"#.into()),
        ],
        usage: Some((5, 2)),
    });
    llm.push(Reply::text_with_usage(&["Both shipped."], 7, 3));
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    send_message(&mut c, &sid, "r-t", "where are my orders").await;
    let frames = until_terminal(&mut c, "r-t").await;
    assert_v1(&frames);
    assert_eq!(
        types(&frames),
        [
            "immediate_response",
            "stream_chunk",
            "stream_chunk",
            "stream_chunk",
            "stream_chunk",
            "stream_token",
            "eventual_response"
        ]
    );
    assert_eq!(frames[1]["node"], "lookup_order");
    assert_eq!(
        frames[1]["data"]["state"]["rawResponse"]["toolCall"],
        json!({"id": "call_a", "name": "lookup_order", "arguments": r#"{"id":"A1"}"#, "title": "Working on your request"}),
        "a public agent's untitled tool is shown as a generic step"
    );
    let result = &frames[2]["data"]["state"]["rawResponse"]["toolResult"];
    assert_eq!(result["isError"], false);
    assert_eq!(result["result"], r#"{"status":"shipped"}"#);
    assert_eq!(result["id"], "call_a", "a step's result names its call");
    assert_eq!(frames[3]["data"]["state"]["rawResponse"]["toolCall"]["arguments"], r#"{"id":"B2"}"#);
    assert_eq!(
        frames.last().expect("end")["data"]["data"]["usage"],
        json!({"promptTokens": 12, "completionTokens": 5})
    );
    let calls = tools.calls("lookup_order");
    assert_eq!(calls.len(), 2);
    assert_eq!(calls[0].idempotency_key.as_deref(), Some("call_a"));
    assert_eq!(calls[0].body["arguments"], json!({"id": "A1"}));
    assert_eq!(
        (calls[0].body["sessionId"].as_str(), calls[0].body["agentId"].as_str()),
        (Some(sid.as_str()), Some(AGENT))
    );
    assert_eq!(calls[0].body["toolCallId"], "call_a");
    // The second model call saw the assistant tool calls and both results.
    let second = &llm.requests()[1];
    let msgs = second["messages"].as_array().expect("messages");
    let tool_msgs: Vec<&Value> = msgs.iter().filter(|m| m["role"] == "tool").collect();
    assert_eq!(tool_msgs.len(), 2);
    assert_eq!(tool_msgs[0]["tool_call_id"], "call_a");
    assert!(msgs.iter().any(|m| m["role"] == "assistant" && m["tool_calls"].as_array().is_some_and(|t| t.len() == 2)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_failures_become_error_results() {
    let (llm, tools) = setup().await;
    tools.set("lookup_order", Behaviour::Status(500));
    let mut cfg = config(&llm, &tools);
    cfg.agents[0].tools.push(switchboard::config::ToolConfig {
        name: "dead_tool".into(),
        description: String::new(),
        parameters: json!({"type": "object"}),
        url: "http://127.0.0.1:9/never".into(),
        auth_level: switchboard::config::AuthLevel::None,
        title: None,
        idempotent: false,
    });
    let cases: Vec<(&str, Option<Behaviour>, &str)> = vec![
        ("lookup_order", None, "HTTP 500"),
        ("lookup_order", Some(Behaviour::Delay(3_000, json!("late"))), "timed out"),
        ("lookup_order", Some(Behaviour::BadJson), "invalid JSON"),
        ("lookup_order", Some(Behaviour::Huge(10_000)), "exceeds"),
        ("lookup_order", Some(Behaviour::ToolError("order locked".into())), "order locked"),
        ("dead_tool", None, "unreachable"),
        ("no_such_tool", None, "unknown tool"),
    ];
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    for (i, (tool, behaviour, expect)) in cases.into_iter().enumerate() {
        if let Some(b) = behaviour {
            tools.set(tool, b);
        }
        llm.push(Reply::tool_call(&format!("c{i}"), tool, &json!({"id": "1"})));
        llm.push(Reply::text(&["sorry"]));
        let rid = format!("r-{i}");
        send_message(&mut c, &sid, &rid, "go").await;
        let frames = until_terminal(&mut c, &rid).await;
        assert_v1(&frames);
        let result = frames
            .iter()
            .find_map(|f| f["data"]["state"]["rawResponse"].get("toolResult"))
            .unwrap_or_else(|| panic!("no tool result for {tool}: {frames:?}"));
        assert_eq!(result["isError"], true, "{tool}: {result}");
        assert!(result["result"].as_str().unwrap_or("").contains(expect), "{tool}: expected '{expect}' in {result}");
        assert_eq!(frames.last().expect("end")["type"], "eventual_response", "a tool failure never fails the turn");
    }
    still_open(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn model_down_ends_the_turn_with_llm_unavailable() {
    let (llm, tools) = setup().await;
    let pod_ = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod_, false).await;
    let sid = create_session(&mut c).await;
    // 500 twice (one retry configured) → LLM_UNAVAILABLE after the 202.
    llm.push(Reply::Status(500));
    llm.push(Reply::Status(500));
    send_message(&mut c, &sid, "r-down", "hi").await;
    let frames = until_terminal(&mut c, "r-down").await;
    assert_v1(&frames);
    assert_eq!(types(&frames), ["immediate_response", "error"]);
    assert_eq!(frames[1]["error"]["code"], "LLM_UNAVAILABLE");
    assert_eq!(frames[1]["requestId"], "r-down");
    // One 429 then success: retried before the first token.
    llm.push(Reply::Status(429));
    llm.push(Reply::text(&["fine"]));
    send_message(&mut c, &sid, "r-retry", "hi").await;
    let frames = until_terminal(&mut c, "r-retry").await;
    assert_eq!(tokens(&frames), "fine");
    still_open(&mut c).await;
    // Unreachable endpoint.
    let mut cfg = config(&llm, &tools);
    cfg.llm.base_url = "http://127.0.0.1:9/v1".into();
    let dead = pod(cfg).await;
    let mut d = connect(&dead, false).await;
    let sid = create_session(&mut d).await;
    send_message(&mut d, &sid, "r-x", "hi").await;
    let frames = until_terminal(&mut d, "r-x").await;
    assert_eq!(frames.last().expect("end")["error"]["code"], "LLM_UNAVAILABLE");
    still_open(&mut d).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_iterations_end_with_agent_error() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.turn.max_iterations = 2;
    let pod = pod(cfg).await;
    for i in 0..3 {
        llm.push(Reply::tool_call(&format!("loop{i}"), "lookup_order", &json!({"id": "1"})));
    }
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    send_message(&mut c, &sid, "r-loop", "loop").await;
    let frames = until_terminal(&mut c, "r-loop").await;
    assert_eq!(frames.last().expect("end")["error"]["code"], "AGENT_ERROR");
    assert_eq!(llm.request_count(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_false_and_model_choice_and_images() {
    let (llm, tools) = setup().await;
    llm.push(Reply::text(&["quiet ", "reply"]));
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    c.send(&json!({"action": "send_message", "requestId": "r-q", "sessionId": sid, "message": "look",
        "stream": false, "model": "gpt-4o", "images": [{"url": "https://x/cat.png", "detail": "low"}]}))
        .await;
    let frames = until_terminal(&mut c, "r-q").await;
    assert_eq!(types(&frames), ["immediate_response", "eventual_response"]);
    assert_eq!(frames[1]["data"]["data"]["response"]["responseParts"], json!(["quiet reply"]));
    let req = &llm.requests()[0];
    assert_eq!(req["model"], "gpt-4o");
    let user = req["messages"].as_array().expect("m").last().cloned().expect("user");
    assert_eq!(
        user["content"][1],
        json!({"type": "image_url", "image_url": {"url": "https://x/cat.png", "detail": "low"}})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_demo_model_streams_and_exercises_approval() {
    let cfg = switchboard::config::Config { bind: "127.0.0.1:0".into(), ..Default::default() };
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    send_message(&mut c, &sid, "r-hi", "hello").await;
    let frames = until_terminal(&mut c, "r-hi").await;
    assert_v1(&frames);
    assert!(tokens(&frames).starts_with("[demo model]"));
    send_message(&mut c, &sid, "r-del", "please delete record 7").await;
    let parked = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_eq!(parked[1]["data"]["data"]["toolId"], "delete_record");
    c.send(&json!({"action": "confirm_tool_action", "requestId": "ok", "sessionId": sid, "approved": true})).await;
    let frames = until_terminal(&mut c, "r-del").await;
    let result = frames.iter().find_map(|f| f["data"]["state"]["rawResponse"].get("toolResult")).expect("result");
    assert!(result["result"].as_str().unwrap_or("").contains("record 7 deleted"));
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
}

/// Bus messages published for `sid` while `c` runs one slow-streamed turn; returns them and the turn's frames.
async fn turn_bus_messages(
    llm: &FakeLlm,
    coalesce_ms: u64,
    tools: &FakeTools,
) -> (Vec<String>, Vec<Value>, Vec<String>) {
    use switchboard::backend::memory::MemoryBackend;
    use switchboard::backend::Channel;
    let mut cfg = config(llm, tools);
    cfg.turn.coalesce_ms = coalesce_ms;
    let mem = MemoryBackend::new(&cfg);
    let pod = switchboard::server::start_with(cfg, mem.backends()).await.expect("pod starts");
    let observer = mem.backends();
    let mut c = connect(&pod, true).await;
    let sid = create_session(&mut c).await;
    observer.bus.subscribe(&Channel::Session(sid.clone())).await.expect("subscribe");
    let mut rx = observer.bus.receiver();
    let chunks: Vec<String> = (0..12).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks: chunks.clone(), delay_ms: 10, usage: None });
    send_message(&mut c, &sid, "r-1", "go").await;
    let frames = until_terminal(&mut c, "r-1").await;
    let mut messages = Vec::new();
    while let Ok(Ok(ev)) = tokio::time::timeout(Duration::from_millis(100), rx.recv()).await {
        if let Some((Channel::Session(s), payload)) = ev.raw() {
            if s == sid {
                messages.push(payload.to_string());
            }
        }
    }
    (messages, frames, chunks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streamed_events_are_coalesced_into_few_appends_but_stay_one_frame_each() {
    let (llm, tools) = setup().await;
    let (messages, frames, chunks) = turn_bus_messages(&llm, 300, &tools).await;
    // Each token is still its own frame with its own consecutive seq, in order.
    assert_eq!(tokens(&frames), chunks.concat());
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "{frames:?}");
    // The first token goes out alone (time to first token); the other eleven (110 ms of streaming) are read in
    // 300 ms windows on the pod's grid, so they share one append, or two if a window ends among them (three if
    // a loaded machine stretches the 110 ms past a whole window); the terminal event goes with the last of them.
    // A message is a header line, then its events.
    let events: Vec<usize> = messages.iter().map(|m| m.lines().count() - 1).collect();
    assert_eq!(events.iter().sum::<usize>(), 13, "{messages:?}");
    assert!((2..=4).contains(&events.len()), "{messages:?}");
    assert!(messages.last().is_some_and(|m| m.contains("eventual_response")), "{messages:?}");

    // Without coalescing, tokens 10 ms apart are appended one by one.
    let (messages, frames, chunks) = turn_bus_messages(&llm, 0, &tools).await;
    assert_eq!(tokens(&frames), chunks.concat());
    assert!(messages.len() >= 12, "{messages:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_webhooks_are_signed_say_who_asks_and_get_only_safe_attachments() {
    let (llm, tools) = setup().await;
    let secret = "webhook-signing-secret-0123456789abcdef";
    let mut cfg = config(&llm, &tools);
    cfg.tools.signing_secret = secret.into();
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    // An image the model would fetch from inside a network is refused before any turn.
    c.send(&json!({"action": "send_message", "requestId": "img", "sessionId": sid, "message": "look",
                   "images": [{"url": "http://10.0.0.1/admin.png"}]}))
        .await;
    let refused = c.recv().await;
    assert_eq!(
        (refused["type"].as_str(), refused["error"]["code"].as_str()),
        (Some("error"), Some("VALIDATION_ERROR"))
    );

    llm.push(Reply::tool_call("call_s", "lookup_order", &json!({"id": "A1"})));
    llm.push(Reply::text(&["ok"]));
    c.send(&json!({"action": "send_message", "requestId": "r-s", "sessionId": sid, "message": "check",
                   "files": [{"name": "a.pdf", "url": "https://x/a.pdf", "mimeType": "application/pdf",
                              "token": "do-not-forward", "nested": {"deep": true}}]}))
        .await;
    until_terminal(&mut c, "r-s").await;
    let calls = tools.calls("lookup_order");
    let call = calls.first().expect("one call");
    assert_eq!((call.body["userId"].as_str(), call.body["orgId"].as_str()), (Some("anonymous"), Some("default")));
    assert_eq!(call.body["files"], json!([{"name": "a.pdf", "url": "https://x/a.pdf", "mimeType": "application/pdf"}]));
    // The host checks the signature: HMAC-SHA256 over "<t>.<body>" with the shared secret.
    let sig = call.signature.as_deref().expect("signed");
    let (t, v1) = sig.split_once(",v1=").and_then(|(t, v)| Some((t.strip_prefix("t=")?, v))).expect("t=…,v1=…");
    let age = chrono::Utc::now().timestamp() - t.parse::<i64>().expect("unix time");
    assert!((0..60).contains(&age), "fresh timestamp");
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    let signed = [t.as_bytes(), b".", call.raw.as_slice()].concat();
    let tag: Vec<u8> = (0..v1.len() / 2).filter_map(|i| u8::from_str_radix(&v1[2 * i..2 * i + 2], 16).ok()).collect();
    assert!(ring::hmac::verify(&key, &signed, &tag).is_ok(), "the signature verifies");
    let forged = [t.as_bytes(), b".", br#"{"tool":"other"}"#].concat();
    assert!(ring::hmac::verify(&key, &forged, &tag).is_err(), "and binds the body");
}

/// Turn bounds: tool calls per model response, the whole-turn deadline, turns running at once on a pod.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turns_are_bounded_in_tool_calls_time_and_number() {
    let (llm, tools) = setup().await;
    tools.set("lookup_order", Behaviour::Ok(json!("found")));
    let mut cfg = config(&llm, &tools);
    cfg.turn.max_tool_calls = 2;
    cfg.turn.deadline_s = 1;
    cfg.turn.max_per_pod = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;

    // Three calls in one response, two allowed: the turn ends and none of them runs.
    let call = |i: u32| (format!("call-{i}"), "lookup_order".to_string(), json!({"id": i.to_string()}).to_string());
    llm.push(Reply::ToolCalls { calls: (1..=3).map(call).collect(), usage: None });
    send_message(&mut c, &sid, "r-many", "look up three").await;
    let end = until_terminal(&mut c, "r-many").await;
    let end = end.last().expect("end");
    assert_eq!(end["error"]["code"], "AGENT_ERROR", "{end}");
    assert!(end["error"]["message"].as_str().is_some_and(|m| m.contains("turn.max_tool_calls")), "{end}");
    assert!(tools.calls("lookup_order").is_empty(), "no call of an oversized response runs");

    // A model that never finishes: the turn ends at its deadline, and meanwhile the pod's one turn slot is
    // taken, so a turn in another session is refused.
    llm.push(Reply::Hang);
    send_message(&mut c, &sid, "r-hang", "wait").await;
    c.recv_until(|v| v["type"] == "stream_token").await;
    let other = create_session(&mut c).await;
    send_message(&mut c, &other, "r-other", "me too").await;
    let refused = c.recv_until(|v| v["requestId"] == "r-other").await;
    assert_eq!(refused.last().expect("reply")["error"]["code"], "RATE_LIMITED", "{refused:?}");
    let end = until_terminal(&mut c, "r-hang").await;
    let end = end.last().expect("end");
    assert_eq!(end["error"]["code"], "AGENT_ERROR", "{end}");
    assert!(end["error"]["message"].as_str().is_some_and(|m| m.contains("turn.deadline_s")), "{end}");
    llm.push(Reply::text(&["now"]));
    send_message(&mut c, &other, "r-after", "now?").await;
    assert_eq!(tokens(&until_terminal(&mut c, "r-after").await), "now");
}

/// The offline demo shows the seed protocol: a cited answer from the bundled documents, an identity card, and
/// the OTP gate with codes written to the log (`otp.delivery` auto = log with anonymous auth).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_demo_cites_raises_a_card_and_gates_a_tool() {
    let cfg = switchboard::config::Config { bind: "127.0.0.1:0".into(), ..Default::default() };
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    c.send(&json!({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT,
                   "supports": ["identity_form"], "userEmail": "ada@example.com"}))
        .await;
    let sid = c.recv().await["data"]["sessionId"].as_str().expect("sid").to_string();
    send_message(&mut c, &sid, "r-ret", "what is your return policy").await;
    let frames = until_terminal(&mut c, "r-ret").await;
    assert_v1(&frames);
    assert!(tokens(&frames).contains("30 days"), "{}", tokens(&frames));
    let cited = &frames.last().expect("end")["data"]["data"]["citations"];
    assert_eq!(cited[0]["id"], "demo/returns-policy.md", "{cited}");
    send_message(&mut c, &sid, "r-q", "I'd like a quote").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_eq!(frames[1]["type"], "interaction_required", "{frames:?}");
    let iid = frames[1]["data"]["data"]["interactionId"].as_str().expect("id").to_string();
    c.send(&json!({"action": "submit_interaction", "requestId": "s", "sessionId": sid, "interactionId": iid,
                   "values": {"email": "ada@example.com", "name": "Ada"}}))
        .await;
    let frames = until_terminal(&mut c, "r-q").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    send_message(&mut c, &sid, "r-b", "what is my balance").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_eq!(types(&frames), ["immediate_response", "otp_verification_required", "otp_sent", "stream_chunk"]);
    assert_eq!(frames[2]["data"]["data"]["maskedDestination"], "a***@example.com");
}

/// What a visitor reads for a tool step: the tool's `title`; on a public agent a generic step for a tool without
/// one (never its internal name); on an internal agent no title (the name is fine there).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tool_steps_carry_a_title_a_visitor_can_read() {
    let (llm, tools) = setup().await;
    tools.set("lookup_order", Behaviour::Ok(json!({"status": "shipped"})));
    let titles = |frames: &[Value]| -> Vec<Value> {
        frames
            .iter()
            .filter(|f| f["type"] == "stream_chunk")
            .map(|f| {
                let raw = &f["data"]["state"]["rawResponse"];
                raw.get("toolCall").or(raw.get("toolResult")).map(|s| s["title"].clone()).unwrap_or(Value::Null)
            })
            .collect()
    };
    let run = |cfg: switchboard::config::Config| {
        let llm = &llm;
        async move {
            llm.push(Reply::tool_call("call_t", "lookup_order", &json!({"id": "A1"})));
            llm.push(Reply::text(&["Shipped."]));
            let pod = pod(cfg).await;
            let mut c = connect(&pod, false).await;
            let sid = create_session(&mut c).await;
            send_message(&mut c, &sid, "r-title", "where is my order").await;
            let frames = until_terminal(&mut c, "r-title").await;
            assert_v1(&frames);
            frames
        }
    };
    let mut titled = config(&llm, &tools);
    if let Some(t) = titled.agents[0].tools.iter_mut().find(|t| t.name == "lookup_order") {
        t.title = Some("Looking up your order".into());
    }
    assert_eq!(titles(&run(titled).await), [json!("Looking up your order"), json!("Looking up your order")]);
    let public = config(&llm, &tools);
    assert_eq!(titles(&run(public).await), [json!("Working on your request"), json!("Working on your request")]);
    let mut internal = config(&llm, &tools);
    internal.agents[0].visibility = switchboard::config::Visibility::Internal;
    assert_eq!(titles(&run(internal).await), [Value::Null, Value::Null], "an internal agent shows the name");
}

/// `turn.history_tokens` bounds what the model is given of the conversation: the oldest messages past the
/// budget are left out, the newest kept (estimated at a token per 4 bytes plus 4 per message).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_history_given_to_the_model_fits_its_token_budget() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.turn.history_tokens = 60;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    let long = "x".repeat(160); // 44 estimated tokens
    for (i, text) in [long.as_str(), "short one", "short two"].iter().enumerate() {
        llm.push(Reply::text(&[format!("answer {i}")]));
        send_message(&mut c, &sid, &format!("h{i}"), text).await;
        until_terminal(&mut c, &format!("h{i}")).await;
    }
    let sent = llm.requests().last().cloned().expect("the last request");
    let texts: Vec<&str> = sent["messages"]
        .as_array()
        .expect("messages")
        .iter()
        .filter(|m| m["role"] != "system")
        .filter_map(|m| m["content"].as_str())
        .collect();
    // History before "short two": long, answer 0, short one, answer 1 = 44 + 6 + 7 + 6 tokens: the long one goes.
    assert_eq!(texts, ["answer 0", "short one", "answer 1", "short two"]);
}

/// With `turn.summarize`, what the history budget leaves out is summarised by the model once, stored in the
/// conversation (the admin API shows it), given to the model before the history, and reused by later turns
/// while it still covers what is left out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_left_out_are_summarised_once_and_reused() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.turn.history_tokens = 60;
    cfg.turn.summarize = true;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    c.send(&json!({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT})).await;
    let created = c.recv().await;
    let sid = created["data"]["sessionId"].as_str().expect("sid").to_string();
    let cid = created["data"]["conversationId"].as_str().expect("cid").to_string();
    let long = format!("my order number is 4242 {}", "x".repeat(140)); // 45 estimated tokens
    for (i, text) in [long.as_str(), "short one"].iter().enumerate() {
        llm.push(Reply::text(&[format!("answer {i}")]));
        send_message(&mut c, &sid, &format!("s{i}"), text).await;
        until_terminal(&mut c, &format!("s{i}")).await;
    }
    // The third turn leaves the long message out: first a summary call, then the answer.
    let before = llm.requests().len();
    llm.push(Reply::text(&["The user gave order number 4242."]));
    llm.push(Reply::text(&["answer 2"]));
    send_message(&mut c, &sid, "s2", "short two").await;
    until_terminal(&mut c, "s2").await;
    let reqs = llm.requests();
    assert_eq!(reqs.len(), before + 2, "one summary call, then the turn's");
    let summary_call = &reqs[before];
    assert!(summary_call["messages"][0]["content"].as_str().is_some_and(|t| t.starts_with("Summarise")));
    assert!(summary_call["messages"][1]["content"].as_str().is_some_and(|t| t.contains("4242")), "{summary_call}");
    assert!(summary_call.get("tools").is_none_or(|t| t.as_array().is_none_or(Vec::is_empty)), "no tools offered");
    let told = |req: &Value| -> Vec<String> {
        req["messages"]
            .as_array()
            .expect("messages")
            .iter()
            .filter_map(|m| m["content"].as_str().map(str::to_string))
            .collect()
    };
    let turn = told(&reqs[before + 1]);
    assert_eq!(turn[1], "Summary of the earlier conversation: The user gave order number 4242.", "{turn:?}");
    assert!(!turn.iter().any(|t| t.contains("xxxx")), "the long message itself is left out");
    // Shown in the admin API.
    let admin: Value = reqwest::get(http_url(&pod, &format!("/admin/conversations/{cid}/messages")))
        .await
        .expect("admin")
        .json()
        .await
        .expect("json");
    assert_eq!(admin["summary"]["text"], "The user gave order number 4242.", "{admin}");
    assert_eq!(admin["summary"]["upto"], 1);
    // The next turn leaves out the same message: the stored summary is reused, no second summary call.
    llm.push(Reply::text(&["answer 3"]));
    send_message(&mut c, &sid, "s3", "short three").await;
    until_terminal(&mut c, "s3").await;
    let reqs = llm.requests();
    assert_eq!(reqs.len(), before + 3);
    assert_eq!(told(&reqs[before + 2])[1], "Summary of the earlier conversation: The user gave order number 4242.");
}
