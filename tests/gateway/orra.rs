//! The orra WebSocket dialect: chat, approvals, ping, bad frames; one namespace seen from REST and orra.

use support::ws::Client;

use super::*;

async fn orra_socket(pod: &switchboard::server::Running, key: &str) -> Client {
    Client::connect_with(&format!("{}?token={key}", ws_url(pod)), None, None).await.expect("ws")
}

/// Frames until `type` arrives (included).
async fn until_type(c: &mut Client, kind: &str) -> Vec<Value> {
    let kind = kind.to_string();
    c.recv_until(move |v| v["type"] == kind.as_str()).await
}

fn content(frames: &[Value]) -> String {
    frames.iter().filter(|f| f["type"] == "text_delta").map(|f| f["content"].as_str().unwrap_or("")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_approval_ping_and_bad_frames_on_one_socket() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("gone")));
    let pod = pod(keyed(&llm, &tools)).await;
    let mut c = orra_socket(&pod, KEY_A).await;
    c.send(&json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}));

    llm.push(Reply::text_with_usage(&["Hi ", "you"], 3, 2));
    c.send(&json!({"type": "chat", "message": "hello", "namespace": "o1"})).await;
    let frames = until_type(&mut c, "response").await;
    assert_eq!(content(&frames), "Hi you");
    let end = frames.last().expect("response");
    assert_eq!(end["message"], "Hi you");
    assert_eq!(end["namespace"], "o1");
    assert_eq!(end["usage"]["total_tokens"], 5);
    assert!(frames.iter().all(|f| matches!(f["type"].as_str(), Some("text_delta" | "response"))), "{frames:?}");

    llm.push(Reply::tool_call("call-o", "delete_record", &json!({"id": "1"})));
    llm.push(Reply::text(&["deleted"]));
    c.send(&json!({"type": "chat", "message": "delete 1", "namespace": "o1"})).await;
    let ask = until_type(&mut c, "tool_approval_request").await;
    let ask = ask.last().expect("ask");
    assert_eq!((ask["call_id"].as_str(), ask["tool_name"].as_str()), (Some("call-o"), Some("delete_record")));
    assert_eq!(ask["arguments"], json!({"id": "1"}));
    c.send(&json!({"type": "tool_approval_response", "call_id": "call-o", "approved": true})).await;
    let done = until_type(&mut c, "response").await;
    assert_eq!(done.last().expect("response")["message"], "deleted");
    assert_eq!(tools.calls("delete_record").len(), 1);

    for (frame, says) in [
        (json!({"type": "unknown"}), "unknown type 'unknown'"),
        (json!({"type": "chat"}), "chat needs"),
        (json!({"type": "chat", "action": "ping"}), "either"),
        (json!({"action": "ping", "requestId": "p"}), "orra dialect"),
        (json!({"type": "tool_approval_response", "call_id": "nope", "approved": true}), "no approval"),
    ] {
        c.send(&frame).await;
        let e = c.recv().await;
        assert_eq!(e["type"], "error", "{frame} → {e}");
        assert!(e["error"].as_str().unwrap_or("").contains(says), "{frame} → {e}");
    }
    c.send_text("{not json").await;
    assert_eq!(c.recv().await["type"], "error");
    c.send(&json!({"type": "ping"})).await;
    assert_eq!(c.recv().await, json!({"type": "pong"}), "the socket lives on");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_namespace_driven_over_rest_on_one_pod_streams_to_an_orra_socket_on_another() {
    let (llm, tools) = setup().await;
    let redis = support::redis::RedisServer::start();
    let p = pods(2, keyed(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut watcher = orra_socket(&p[1], KEY_A).await;
    llm.push(Reply::text(&["first"]));
    watcher.send(&json!({"type": "chat", "message": "start", "namespace": "shared"})).await;
    until_type(&mut watcher, "response").await;

    llm.push(Reply::text(&["from ", "rest"]));
    let (status, body) = post(&p[0], "/api/chat", Some(KEY_A), json!({"message": "go", "namespace": "shared"})).await;
    assert_eq!((status, body["message"].as_str()), (200, Some("from rest")));
    let seen = until_type(&mut watcher, "response").await;
    assert_eq!(content(&seen), "from rest");
    assert_eq!(seen.last().expect("response")["namespace"], "shared");
    let (_, shown) = get(&p[1], "/api/sessions/shared", Some(KEY_A)).await;
    assert_eq!(shown["messages"].as_array().map(Vec::len), Some(4), "two turns, from orra and from REST");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_from_another_socket_and_a_namespace_used_again_after_delete() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("gone")));
    let pod = pod(keyed(&llm, &tools)).await;
    let mut asker = orra_socket(&pod, KEY_A).await;
    llm.push(Reply::tool_call("call-x", "delete_record", &json!({"id": "9"})));
    llm.push(Reply::text(&["deleted 9"]));
    asker.send(&json!({"type": "chat", "message": "delete 9", "namespace": "o2"})).await;
    until_type(&mut asker, "tool_approval_request").await;
    // Another socket of the same caller, which never chatted in o2, answers with the call id alone.
    let mut other = orra_socket(&pod, KEY_A).await;
    other.send(&json!({"type": "tool_approval_response", "call_id": "call-x", "approved": true})).await;
    let done = until_type(&mut asker, "response").await;
    assert_eq!(done.last().expect("response")["message"], "deleted 9");
    // A second answer to the same call is told so, on the socket that sent it.
    other.send(&json!({"type": "tool_approval_response", "call_id": "call-x", "approved": true})).await;
    let late = until_type(&mut other, "error").await;
    assert!(late.last().expect("error")["error"].as_str().unwrap_or("").contains("call-x"), "{late:?}");
    // Another caller cannot answer it either way.
    let mut stranger = orra_socket(&pod, KEY_B).await;
    stranger
        .send(&json!({"type": "tool_approval_response", "call_id": "call-x", "approved": false, "namespace": "o2"}))
        .await;
    assert_eq!(stranger.recv().await["type"], "error");

    // Deleted over REST while this socket follows it, then used again: the socket still gets the new turn.
    let (status, _) = call(&pod, reqwest::Method::DELETE, "/api/sessions/o2", Some(KEY_A), None).await;
    assert_eq!(status, 200);
    llm.push(Reply::text(&["fresh start"]));
    asker.send(&json!({"type": "chat", "message": "again", "namespace": "o2"})).await;
    let again = until_type(&mut asker, "response").await;
    assert_eq!(content(&again), "fresh start");
    let (_, shown) = get(&pod, "/api/sessions/o2", Some(KEY_A)).await;
    assert_eq!(shown["messages"].as_array().map(Vec::len), Some(2), "only the new turn's messages");
}
