//! One pod speaking the protocol over real sockets: an in-test OpenAI-compatible model, in-test webhooks.
//! Every frame a v1 client receives is checked against the v1 shapes.

mod harness;
mod support;

use std::time::Duration;

use harness::*;
use serde_json::{json, Value};
use support::llm::{FakeLlm, Reply};
use support::tools::{Behaviour, FakeTools};
use support::ws::Frame;
use switchboard::protocol::shapes::check_v1_frame;

fn assert_v1(frames: &[Value]) {
    for f in frames {
        check_v1_frame(f).unwrap_or_else(|e| panic!("not a v1 frame: {e}\n{f}"));
    }
}

async fn setup() -> (FakeLlm, FakeTools) {
    (FakeLlm::start().await, FakeTools::start().await)
}

async fn still_open(c: &mut support::ws::Client) {
    c.send(&json!({"action": "ping", "requestId": "alive"})).await;
    let p = c.recv().await;
    assert_eq!((p["type"].as_str(), p["requestId"].as_str()), (Some("pong"), Some("alive")), "{p}");
}

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
    assert_eq!(end["data"]["data"]["usage"], json!({"promptTokens": 11, "completionTokens": 3, "costUsd": 0.0}));
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
    assert_eq!(req["tools"].as_array().expect("tools").len(), 3);
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
    for f in &frames {
        let mut v1 = f.clone();
        let obj = v1.as_object_mut().expect("object");
        if f["type"] == "immediate_response" {
            assert!(f.get("seq").is_none() && f.get("sessionId").is_none(), "acks are not logged: {f}");
        } else {
            assert_eq!(obj.remove("sessionId"), Some(json!(sid)));
            seqs.push(obj.remove("seq").and_then(|s| s.as_u64()).expect("seq"));
        }
        check_v1_frame(&v1).unwrap_or_else(|e| panic!("{e}: {f}"));
    }
    assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free seq from 1");
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
        json!({"name": "lookup_order", "arguments": r#"{"id":"A1"}"#})
    );
    let result = &frames[2]["data"]["state"]["rawResponse"]["toolResult"];
    assert_eq!(result["isError"], false);
    assert_eq!(result["result"], r#"{"status":"shipped"}"#);
    assert_eq!(frames[3]["data"]["state"]["rawResponse"]["toolCall"]["arguments"], r#"{"id":"B2"}"#);
    assert_eq!(
        frames.last().expect("end")["data"]["data"]["usage"],
        json!({"promptTokens": 12, "completionTokens": 5, "costUsd": 0.0})
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

async fn park(c: &mut support::ws::Client, llm: &FakeLlm, sid: &str, rid: &str) -> Vec<Value> {
    llm.push(Reply::tool_call(&format!("call-{rid}"), "delete_record", &json!({"id": "7"})));
    send_message(c, sid, rid, "delete record 7").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_eq!(types(&frames), ["immediate_response", "write_confirmation_required", "stream_chunk"], "{frames:?}");
    assert_eq!(frames[1]["data"]["data"]["toolId"], "delete_record");
    assert_eq!(frames[1]["data"]["data"]["actionDescription"], "Tool 'delete_record' requires confirmation. Allow?");
    assert_eq!(frames[2]["data"]["state"]["rawResponse"]["toolCall"]["name"], "delete_record");
    frames
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approval_with_fresh_request_id_runs_the_tool_once() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("deleted 7")));
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    let parked = park(&mut c, &llm, &sid, "r-2").await;
    assert_v1(&parked);
    c.expect_silence(Duration::from_millis(300)).await;
    assert!(tools.calls("delete_record").is_empty(), "a gated tool waits for approval");
    llm.push(Reply::text(&["Done."]));
    c.send(&json!({"action": "confirm_tool_action", "requestId": "r-ok", "sessionId": sid, "approved": true})).await;
    let frames = until_terminal(&mut c, "r-2").await;
    assert_v1(&frames);
    assert_eq!(types(&frames), ["immediate_response", "stream_chunk", "stream_token", "eventual_response"]);
    assert_eq!(frames[0]["requestId"], "r-ok");
    assert_eq!(frames[0]["data"], json!({"approved": true, "sessionId": sid}));
    let result = &frames[1]["data"]["state"]["rawResponse"]["toolResult"];
    assert_eq!((result["isError"].as_bool(), result["result"].as_str()), (Some(false), Some("deleted 7")));
    assert_eq!(frames[1]["requestId"], "r-2", "resumed events keep the turn's requestId");
    assert_eq!(tools.calls("delete_record").len(), 1);
    // A repeated decision gets the first one's ack; a confirm with nothing pending is an error.
    c.send(&json!({"action": "confirm_tool_action", "requestId": "r-again", "sessionId": sid, "approved": true})).await;
    let e = c.recv().await;
    assert_v1(std::slice::from_ref(&e));
    assert_eq!((e["type"].as_str(), e["error"]["code"].as_str()), (Some("error"), Some("NO_PENDING_CONFIRMATION")));
    assert_eq!(e["requestId"], "r-again");
    assert_eq!(tools.calls("delete_record").len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn denial_with_turn_request_id_tells_the_model() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    park(&mut c, &llm, &sid, "r-3").await;
    llm.push(Reply::text(&["Okay, no."]));
    c.send(&json!({"action": "confirm_tool_action", "requestId": "r-3", "sessionId": sid, "approved": false})).await;
    let frames = until_terminal(&mut c, "r-3").await;
    assert_v1(&frames);
    assert_eq!(frames[0]["type"], "immediate_response");
    assert_eq!(frames[0]["message"], "Tool action rejected");
    assert_eq!(frames[0]["data"]["approved"], false);
    let result = &frames[1]["data"]["state"]["rawResponse"]["toolResult"];
    assert_eq!(result["isError"], true);
    assert!(result["result"].as_str().unwrap_or("").contains("denied"), "{result}");
    assert!(tools.calls("delete_record").is_empty());
    let last = llm.requests().last().cloned().expect("request");
    let tool_msg =
        last["messages"].as_array().expect("m").iter().find(|m| m["role"] == "tool").cloned().expect("tool message");
    assert!(tool_msg["content"].as_str().unwrap_or("").contains("denied"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unanswered_confirmation_is_denied_after_timeout() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.confirm.timeout_s = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    park(&mut c, &llm, &sid, "r-4").await;
    llm.push(Reply::text(&["Timed out."]));
    let frames = until_terminal(&mut c, "r-4").await;
    let result = &frames[0]["data"]["state"]["rawResponse"]["toolResult"];
    assert_eq!(result["isError"], true, "{frames:?}");
    assert!(result["result"].as_str().unwrap_or("").contains("timed out"));
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    assert!(tools.calls("delete_record").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_running_parked_and_nothing() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    // Running: the model hangs mid-stream.
    llm.push(Reply::Hang);
    send_message(&mut c, &sid, "r-run", "talk forever").await;
    c.recv_until(|v| v["type"] == "stream_token").await;
    c.send(&json!({"action": "cancel", "requestId": "r-run"})).await;
    let frames = until_terminal(&mut c, "r-run").await;
    assert_v1(&frames);
    let end = frames.last().expect("end");
    assert_eq!((end["type"].as_str(), end["status"].as_u64()), (Some("cancelled"), Some(499)));
    assert_eq!(end["data"], json!({"requestId": "r-run", "status": 499}));
    // The session takes the next turn.
    llm.push(Reply::text(&["again"]));
    send_message(&mut c, &sid, "r-next", "hello").await;
    assert_eq!(until_terminal(&mut c, "r-next").await.last().expect("end")["type"], "eventual_response");
    // Parked, cancelled by sessionId.
    park(&mut c, &llm, &sid, "r-park").await;
    c.send(&json!({"action": "cancel", "requestId": "r-park", "sessionId": sid})).await;
    let frames = until_terminal(&mut c, "r-park").await;
    assert_eq!(types(&frames), ["cancelled"]);
    c.send(&json!({"action": "confirm_tool_action", "requestId": "r-late", "sessionId": sid, "approved": true})).await;
    assert_eq!(c.recv().await["error"]["code"], "NO_PENDING_CONFIRMATION");
    // Nothing running: no frame at all.
    c.send(&json!({"action": "cancel", "requestId": "r-none"})).await;
    c.expect_silence(Duration::from_millis(400)).await;
    still_open(&mut c).await;
}

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
        (json!({"action": "submit_interaction", "requestId": "r-si", "sessionId": sid}).to_string(), "UNSUPPORTED_ACTION", Some("r-si")),
        (json!({"action": "verify_otp", "requestId": "r-otp", "sessionId": sid, "code": "1"}).to_string(), "UNSUPPORTED_ACTION", Some("r-otp")),
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
async fn oversize_frame_closes_with_1009() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.max_frame_bytes = 2048;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    still_open(&mut c).await;
    c.send_raw_bytes(3000).await;
    loop {
        match c.recv_raw().await {
            Frame::Close(code) => {
                assert_eq!(code, Some(1009));
                break;
            }
            Frame::Text(v) if support::ws::is_keepalive(&v) => continue,
            other => panic!("expected a 1009 close, got {other:?}"),
        }
    }
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
async fn resume_with_and_without_a_gap() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.log_len = 5;
    let pod = pod(cfg).await;
    let mut a = connect(&pod, true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::text(&["1", "2", "3"]));
    send_message(&mut a, &sid, "r-1", "go").await;
    let frames = until_terminal(&mut a, "r-1").await;
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // Resume after seq 2 on a new socket: exactly 3 and 4.
    let mut b = connect(&pod, true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 2})).await;
    let ack = b.recv().await;
    assert_eq!(ack["data"], json!({"sessionId": sid, "seq": 4, "recovered": true}));
    assert_eq!(b.recv().await["seq"], 3);
    assert_eq!(b.recv().await["seq"], 4);
    b.expect_silence(Duration::from_millis(300)).await;
    // Live events follow without duplicates.
    llm.push(Reply::text(&["a", "b", "c", "d"]));
    send_message(&mut a, &sid, "r-2", "more").await;
    let live = until_terminal(&mut b, "r-2").await;
    let seqs: Vec<u64> = live.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (5..=9).collect::<Vec<_>>());
    // The log keeps 5 events (5..=9): asking for 1 → recovered false and a replay from the oldest.
    let mut c = connect(&pod, true).await;
    c.send(&json!({"action": "resume_session", "requestId": "old", "sessionId": sid, "afterSeq": 1})).await;
    let ack = c.recv().await;
    assert_eq!((ack["data"]["recovered"].as_bool(), ack["data"]["seq"].as_u64()), (Some(false), Some(9)));
    assert_eq!(c.recv().await["seq"], 5);
    // A seq from another epoch (newer than the log) is not recovered either.
    let mut d = connect(&pod, true).await;
    d.send(&json!({"action": "resume_session", "requestId": "future", "sessionId": sid, "afterSeq": 100})).await;
    assert_eq!(d.recv().await["data"]["recovered"], false);
    assert_eq!(d.recv().await["seq"], 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_continues_after_disconnect_and_resume_gets_every_token_once() {
    let (llm, tools) = setup().await;
    let chunks: Vec<String> = (0..20).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks: chunks.clone(), delay_ms: 30, usage: None });
    let pod = pod(config(&llm, &tools)).await;
    let mut a = connect(&pod, true).await;
    let sid = create_session(&mut a).await;
    send_message(&mut a, &sid, "r-d", "go").await;
    let got = a.recv_until(|v| v["type"] == "stream_token" && v["seq"].as_u64() == Some(3)).await;
    let last_seq = got.last().and_then(|f| f["seq"].as_u64()).expect("seq");
    let mut seen: String = tokens(&got);
    a.close().await;
    sleep_ms(200).await;
    let mut b = connect(&pod, true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": last_seq})).await;
    assert_eq!(b.recv().await["data"]["recovered"], true);
    let rest = until_terminal(&mut b, "r-d").await;
    seen.push_str(&tokens(&rest));
    assert_eq!(seen, chunks.concat());
    let seqs: Vec<u64> = rest.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, ((last_seq + 1)..=(last_seq + seqs.len() as u64)).collect::<Vec<_>>());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jwt_identity_and_cross_user_access() {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.auth.mode = "jwt".into();
    cfg.auth.jwt_hs256_secret = "test-secret".into();
    let pod = pod(cfg).await;
    let now = chrono::Utc::now().timestamp();
    let token = |sub: &str, exp: i64| {
        encode(
            &Header::default(),
            &json!({"sub": sub, "exp": exp, "org": "acme"}),
            &EncodingKey::from_secret(b"test-secret"),
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
        json!({"action": "confirm_tool_action", "requestId": "x3", "sessionId": sid, "approved": true}),
        json!({"action": "get_conversation_messages", "requestId": "x4", "sessionId": sid}),
        json!({"action": "cancel", "requestId": "x5", "sessionId": sid}),
    ] {
        bob.send(&frame).await;
        let e = bob.recv().await;
        assert_eq!(e["error"]["code"], "SESSION_NOT_FOUND", "{frame} → {e}");
        assert_eq!(e["error"]["message"], format!("session '{sid}' not found"));
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
async fn admin_publish_http_surface_and_metrics() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let http = reqwest::Client::new();
    assert_eq!(http.get(http_url(&pod, "/health")).send().await.expect("health").text().await.expect("t"), "ok");
    let mut ready = false;
    for _ in 0..50 {
        if http.get(http_url(&pod, "/readyz")).send().await.expect("readyz").status() == 200 {
            ready = true;
            break;
        }
        sleep_ms(100).await;
    }
    assert!(ready, "/readyz never became ready");
    let mut v1 = connect(&pod, false).await;
    let mut ext = connect(&pod, true).await;
    let sid = create_session(&mut ext).await;
    let publish = |body: Value, key: Option<&str>| {
        let mut r = http.post(http_url(&pod, "/admin/publish")).json(&body);
        if let Some(k) = key {
            r = r.bearer_auth(k);
        }
        r.send()
    };
    let key = "publish-key-0123456789";
    let body =
        json!({"target": {"type": "user", "id": "anonymous"}, "event": {"type": "order_shipped", "orderId": "A1"}});
    assert_eq!(publish(body.clone(), None).await.expect("send").status(), 401);
    assert_eq!(publish(body.clone(), Some("wrong-key-0123456789")).await.expect("send").status(), 401);
    let r = publish(body, Some(key)).await.expect("send");
    assert_eq!(r.status(), 202);
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"accepted": true}));
    assert_eq!(v1.recv().await, json!({"type": "order_shipped", "orderId": "A1"}));
    assert_eq!(ext.recv().await, json!({"type": "order_shipped", "orderId": "A1"}));
    // Session target: logged with a seq, only attached sockets get it.
    let r = publish(json!({"target": {"type": "session", "id": sid}, "event": {"type": "ticket_updated"}}), Some(key))
        .await
        .expect("send");
    assert_eq!(r.json::<Value>().await.expect("json"), json!({"accepted": true, "seq": 1}));
    assert_eq!(ext.recv().await, json!({"type": "ticket_updated", "sessionId": sid, "seq": 1}));
    v1.expect_silence(Duration::from_millis(200)).await;
    let bad = publish(json!({"target": {"type": "planet", "id": "x"}, "event": {}}), Some(key)).await.expect("send");
    assert_eq!(bad.status(), 400);
    // Registry view.
    let conns: Value = http
        .get(http_url(&pod, &format!("/admin/connections?session={sid}")))
        .bearer_auth(key)
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert_eq!(conns["connections"].as_array().map(Vec::len), Some(1));
    let metrics = http.get(http_url(&pod, "/metrics")).send().await.expect("metrics").text().await.expect("t");
    for m in [
        "switchboard_connections 2",
        "switchboard_events_published_total 1",
        "switchboard_errors_total{code=\"SESSION_NOT_FOUND\"} 0",
    ] {
        assert!(metrics.contains(m), "metrics lack {m}:\n{metrics}");
    }
}

/// A pod whose socket queue holds `queue` frames, and an extended client on it holding a session that then
/// stops reading while far more than the loopback socket buffers absorb (several MiB) is published to it.
/// With `until_slow`, publishing stops as soon as the pod has counted the socket as a slow consumer.
async fn flooded_client(queue: usize, until_slow: bool) -> (switchboard::server::Running, support::ws::Client) {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.outbound_queue = queue;
    let pod = pod(cfg).await;
    let mut ext = connect(&pod, true).await;
    let sid = create_session(&mut ext).await;
    let http = reqwest::Client::new();
    let big = "y".repeat(60_000);
    for i in 0..300 {
        let r = http
            .post(http_url(&pod, "/admin/publish"))
            .bearer_auth("publish-key-0123456789")
            .json(&json!({"target": {"type": "session", "id": sid}, "event": {"type": "blob", "i": i, "pad": big}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 202);
        if until_slow && scrape(&pod).await.value("switchboard_slow_consumers_total", &[]) >= 1.0 {
            return (pod, ext);
        }
    }
    assert!(!until_slow, "300 events of 60 KB never overflowed a queue of {queue}");
    (pod, ext)
}

/// Reads on until the close: a `reconnect` frame with `reason` must come last before it. Returns the close code.
async fn reconnect_then_close(ext: &mut support::ws::Client, reason: &str) -> Option<u16> {
    let mut saw_reconnect = false;
    loop {
        match ext.recv_raw().await {
            Frame::Text(v) if v["type"] == "reconnect" => {
                assert_eq!(v["data"]["reason"], reason);
                saw_reconnect = true;
            }
            Frame::Text(v) => assert!(!saw_reconnect, "nothing after reconnect: {}", v["type"]),
            Frame::Close(code) => {
                assert!(saw_reconnect, "closed without reconnect");
                return code;
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_told_to_reconnect_and_closed() {
    // The queue overflows while the client does not read; the client then starts reading late (later than the
    // 2 s the close handshake once had), and must still find `reconnect` and 4000 behind the buffered frames.
    let (_pod, mut ext) = flooded_client(8, true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reconnect_then_close(&mut ext, "slow consumer: resume to continue").await, Some(4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_while_a_write_is_blocked_still_says_reconnect_and_1012() {
    // The queue never overflows here: the write blocks on the socket, then the pod drains.
    let (pod, mut ext) = flooded_client(100_000, false).await;
    pod.drain();
    assert_eq!(reconnect_then_close(&mut ext, "server draining: reconnect").await, Some(1012));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.keepalive_s = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    match c.recv_raw_timeout(Duration::from_secs(3)).await {
        Some(Frame::Text(v)) => {
            assert_eq!(v["type"], "keepalive");
            check_v1_frame(&v).expect("v1 keepalive");
        }
        other => panic!("expected a keepalive, got {other:?}"),
    }
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_interrupts_running_turns() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.drain.pre_stop_s = 0;
    cfg.drain.timeout_s = 1;
    let pod = pod(cfg).await;
    let mut other = connect(&pod, true).await;
    let sid = create_session(&mut other).await;
    llm.push(Reply::Hang);
    send_message(&mut other, &sid, "r-long", "hang").await;
    let seen = other.recv_until(|v| v["type"] == "stream_token").await;
    let last = seen.last().and_then(|f| f["seq"].as_u64()).expect("seq");
    let log = pod.backends().log.clone();
    let started = std::time::Instant::now();
    pod.drain();
    // The socket is closed at once (1012); the turn runs on until the drain timeout ends it.
    loop {
        match other.recv_raw().await {
            Frame::Close(code) => {
                assert_eq!(code, Some(1012));
                break;
            }
            Frame::Text(_) => continue,
            f => panic!("expected 1012, got {f:?}"),
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let end = loop {
        let events = log.read_after(&sid, last, 100).await.expect("log");
        if let Some((_, e)) = events.iter().find(|(_, e)| e.contains("TURN_INTERRUPTED")) {
            break serde_json::from_str::<Value>(e).expect("json");
        }
        assert!(std::time::Instant::now() < deadline, "no TURN_INTERRUPTED in the log");
        sleep_ms(100).await;
    };
    assert_eq!((end["type"].as_str(), end["requestId"].as_str()), (Some("error"), Some("r-long")));
    assert!(started.elapsed() >= Duration::from_millis(900), "interrupted only after the drain timeout");
}

/// Bus messages published for `sid` while `c` runs one slow-streamed turn; returns them and the turn's frames.
async fn turn_bus_messages(
    llm: &FakeLlm,
    coalesce_ms: u64,
    tools: &FakeTools,
) -> (Vec<String>, Vec<Value>, Vec<String>) {
    use switchboard::backend::memory::MemoryBackend;
    use switchboard::backend::{BusEvent, Channel};
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
        if let BusEvent::Message { channel: Channel::Session(s), payload } = ev {
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
    // a loaded machine stretches the 110 ms past a whole window); then the terminal event.
    let lines: Vec<usize> = messages.iter().map(|m| m.lines().count()).collect();
    assert_eq!(lines.iter().sum::<usize>(), 13, "{messages:?}");
    assert!((3..=5).contains(&lines.len()), "{messages:?}");
    assert!(messages.last().is_some_and(|m| m.contains("eventual_response")), "{messages:?}");

    // Without coalescing, tokens 10 ms apart are appended one by one.
    let (messages, frames, chunks) = turn_bus_messages(&llm, 0, &tools).await;
    assert_eq!(tokens(&frames), chunks.concat());
    assert!(messages.len() >= 12, "{messages:?}");
}

/// The metric names README.md's metrics table lists (first column, between its markers).
fn readme_metric_names() -> Vec<String> {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README.md");
    let table = readme.split("<!-- metrics-table").nth(1).and_then(|t| t.split("<!-- end metrics-table").next());
    let rows = table.expect("README has a metrics table").lines().filter_map(|l| l.trim().strip_prefix("| `"));
    rows.flat_map(|row| {
        let first = row.split(" | ").next().unwrap_or("");
        first.split(", ").map(|n| n.trim_matches('`').split('{').next().unwrap_or("").to_string()).collect::<Vec<_>>()
    })
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_serve_every_metric_the_readme_lists_in_a_parsable_exposition() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    llm.push(Reply::text(&["hi ", "there"]));
    send_message(&mut c, &sid, "r1", "hello").await;
    until_terminal(&mut c, "r1").await;

    let names = readme_metric_names();
    assert!(names.len() >= 20, "the README table lists the metrics: {names:?}");
    let m = scrape(&pod).await;
    for name in &names {
        let served = m.0.samples.iter().any(|s| &s.metric == name);
        assert!(served, "README lists {name}, /metrics does not serve it");
    }
    // Typed values, read through the parser.
    assert_eq!(m.value("switchboard_connections", &[]), 1.0);
    assert_eq!(m.value("switchboard_turns_started_total", &[]), 1.0);
    assert_eq!(m.value("switchboard_turns_total", &[("outcome", "completed")]), 1.0);
    assert_eq!(m.value("switchboard_errors_total", &[("code", "TURN_IN_PROGRESS")]), 0.0);
    assert!(m.value("switchboard_events_published_total", &[]) >= 3.0, "202 is not logged; tokens and the end are");
    assert!(m.value("process_resident_memory_bytes", &[]) > 0.0);
    let ttft = m.0.samples.iter().find(|s| s.metric == "switchboard_llm_time_to_first_token_seconds");
    match ttft.map(|s| &s.value) {
        Some(prometheus_parse::Value::Histogram(buckets)) => {
            assert_eq!(buckets.last().map(|b| b.count), Some(1.0), "one model call observed: {buckets:?}")
        }
        other => panic!("time to first token is not a histogram: {other:?}"),
    }
}
