//! One per-user message budget (`limits.messages_per_user_per_minute`) across every door: REST, the orra socket
//! and the smooth-operator socket take from the same count, so a user cannot get more by switching dialects.

use support::ws::Client;

use super::*;

/// Two messages a minute per user.
fn budget_of_two(llm: &FakeLlm, tools: &FakeTools) -> Config {
    let mut c = keyed(llm, tools);
    c.limits.messages_per_user_per_minute = 2;
    c
}

async fn socket(pod: &switchboard::server::Running, key: &str) -> Client {
    Client::connect_with(&format!("{}?token={key}", ws_url(pod)), None, None).await.expect("ws")
}

/// A REST turn: status and body.
async fn rest_chat(pod: &switchboard::server::Running, key: &str, ns: &str) -> (u16, Value) {
    post(pod, "/api/chat", Some(key), json!({"message": "hi", "namespace": ns})).await
}

/// An orra `chat`: the frame that ends it (`response` or `error`).
async fn orra_chat(c: &mut Client, ns: &str) -> Value {
    c.send(&json!({"type": "chat", "message": "hi", "namespace": ns})).await;
    let frames = c.recv_until(|v| matches!(v["type"].as_str(), Some("response" | "error"))).await;
    frames.last().expect("an end").clone()
}

/// A smooth-operator `send_message`: the frame that answers it (the 202, or the error).
async fn socket_send(c: &mut Client, sid: &str, rid: &str) -> Value {
    send_message(c, sid, rid, "hi").await;
    let rid = rid.to_string();
    let frames = c
        .recv_until(move |v| {
            v["requestId"] == rid.as_str() && matches!(v["type"].as_str(), Some("immediate_response" | "error"))
        })
        .await;
    let answer = frames.last().expect("an answer").clone();
    if answer["type"] == "immediate_response" {
        until_terminal(c, answer["requestId"].as_str().expect("rid")).await;
    }
    answer
}

fn refused_on_socket(frame: &Value) -> bool {
    frame["type"] == "error" && frame["error"]["code"] == "RATE_LIMITED"
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_third_message_is_refused_on_every_door_and_the_count_is_shared() {
    crate::support::one_budget_window().await;
    let (llm, tools) = setup().await;
    for _ in 0..12 {
        llm.push(Reply::text(&["ok"]));
    }

    // REST: two turns, then 429 rate_limited.
    let pod_a = pod(budget_of_two(&llm, &tools)).await;
    for _ in 0..2 {
        let (status, body) = rest_chat(&pod_a, KEY_A, "budget-rest").await;
        assert_eq!(status, 200, "{body}");
    }
    let (status, body) = rest_chat(&pod_a, KEY_A, "budget-rest").await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert!(body["error"].as_str().is_some_and(|e| e.contains("limits.messages_per_user_per_minute")), "{body}");
    // The same user on the other doors: already spent.
    let mut orra = socket(&pod_a, KEY_A).await;
    let end = orra_chat(&mut orra, "budget-orra").await;
    assert_eq!(end["type"], "error", "{end}");
    assert!(end["error"].as_str().is_some_and(|e| e.contains("messages per minute")), "{end}");
    let mut so = socket(&pod_a, KEY_A).await;
    let sid = create_session(&mut so).await;
    assert!(refused_on_socket(&socket_send(&mut so, &sid, "so-1").await));

    // The orra socket: another user's own two, then an orra `error` (the socket stays open).
    let mut orra_b = socket(&pod_a, KEY_B).await;
    for _ in 0..2 {
        let end = orra_chat(&mut orra_b, "budget-orra-b").await;
        assert_eq!(end["type"], "response", "{end}");
    }
    let end = orra_chat(&mut orra_b, "budget-orra-b").await;
    assert_eq!(end["type"], "error", "{end}");
    assert!(end["error"].as_str().is_some_and(|e| e.contains("messages per minute")), "{end}");
    orra_b.send(&json!({"type": "ping"})).await;
    assert_eq!(orra_b.recv().await, json!({"type": "pong"}), "the socket stays open");

    // The smooth-operator socket (a fresh deployment): two turns, then RATE_LIMITED; then REST is refused too.
    let pod_b = pod(budget_of_two(&llm, &tools)).await;
    let mut so = socket(&pod_b, KEY_A).await;
    let sid = create_session(&mut so).await;
    for rid in ["so-a", "so-b"] {
        let answer = socket_send(&mut so, &sid, rid).await;
        assert_eq!((answer["type"].as_str(), answer["status"].as_u64()), (Some("immediate_response"), Some(202)));
    }
    let answer = socket_send(&mut so, &sid, "so-c").await;
    assert!(refused_on_socket(&answer), "{answer}");
    let (status, body) = rest_chat(&pod_b, KEY_A, "budget-rest").await;
    assert_eq!((status, body["code"].as_str()), (429, Some("rate_limited")), "{body}");
    assert_eq!(llm.requests().len(), 6, "six turns ran: two per user and deployment");
}
