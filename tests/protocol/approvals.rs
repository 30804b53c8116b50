//! Parked turns: approve, deny, time out, cancel.

use super::*;

async fn park(c: &mut support::ws::Client, llm: &FakeLlm, sid: &str, rid: &str) -> Vec<Value> {
    llm.push(Reply::tool_call(&format!("call-{rid}"), "delete_record", &json!({"id": "7"})));
    send_message(c, sid, rid, "delete record 7").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_eq!(types(&frames), ["immediate_response", "write_confirmation_required", "stream_chunk"], "{frames:?}");
    assert_eq!(frames[1]["data"]["data"]["toolId"], "delete_record");
    // A public agent's untitled tool is asked about in the visitor's words, never by its internal name.
    assert_eq!(frames[1]["data"]["data"]["actionDescription"], "The next step needs your approval. Allow?");
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
