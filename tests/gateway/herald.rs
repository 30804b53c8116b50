//! What herald's own web UI reads, in herald's shapes (its `src/web/handlers.rs` and `index.html`): the
//! session list as a bare array newest first, renaming, the agents and status it asks for on load; and the
//! parks a REST caller meets besides approvals answered 202 `pending_interaction` / `pending_otp` and then
//! through their own endpoints, never a hang; a mid-turn error that does not end the turn is not its end.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_session_list_and_renaming_are_in_heralds_shapes() {
    let (llm, tools) = setup().await;
    let pod = pod(keyed(&llm, &tools)).await;
    for ns in ["web:first", "web:second"] {
        llm.push(Reply::text(&["ok"]));
        assert_eq!(
            post(&pod, "/api/chat", Some(KEY_A), json!({"message": format!("hello {ns}"), "namespace": ns})).await.0,
            200
        );
    }
    let (status, list) = get(&pod, "/api/sessions", Some(KEY_A)).await;
    assert_eq!(status, 200);
    let list = list.as_array().expect("a bare array: herald's UI calls forEach on it").clone();
    let order: Vec<&str> = list.iter().filter_map(|s| s["namespace"].as_str()).collect();
    assert_eq!(order, ["web:second", "web:first"], "newest first: the UI opens the first");
    let first = &list[1];
    let mut keys: Vec<&str> = first.as_object().expect("object").keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "chaos_mode",
            "created_at",
            "message_count",
            "name",
            "namespace",
            "thread_state",
            "turn_count",
            "updated_at",
            "working_directory"
        ]
    );
    assert_eq!(first["message_count"], 2);
    assert_eq!(first["turn_count"], 1);
    assert_eq!(first["thread_state"], "idle");
    assert!(chrono::DateTime::parse_from_rfc3339(first["created_at"].as_str().expect("time")).is_ok());
    assert_eq!(first["name"], "hello web:first", "the title until it is renamed");

    let rename = |ns: &'static str, name: &'static str| {
        let pod = &pod;
        async move {
            call(
                pod,
                reqwest::Method::PUT,
                &format!("/api/sessions/{ns}/name"),
                Some(KEY_A),
                Some(json!({"name": name})),
            )
            .await
        }
    };
    assert_eq!(
        rename("web:first", "  Trip to Lisbon ").await,
        (200, json!({"success": true, "name": "Trip to Lisbon"}))
    );
    let (_, list) = get(&pod, "/api/sessions", Some(KEY_A)).await;
    assert!(list.as_array().expect("list").iter().any(|s| s["name"] == "Trip to Lisbon"), "{list}");
    assert_eq!(rename("web:nope", "x").await.0, 404);
    let (status, other) =
        call(&pod, reqwest::Method::PUT, "/api/sessions/web:first/name", Some(KEY_B), Some(json!({"name": "mine"})))
            .await;
    assert_eq!((status, other["code"].as_str()), (404, Some("not_found")), "another caller's is not found");
    let (status, bad) =
        call(&pod, reqwest::Method::PUT, "/api/sessions/web:first/name", Some(KEY_A), Some(json!({"title": 1}))).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_request")));

    // What the UI asks for on load.
    let (status, agents) = get(&pod, "/api/agents", Some(KEY_A)).await;
    assert_eq!(status, 200);
    assert_eq!(agents[0]["name"], "Aria");
    assert!(agents[0]["personality"].is_string() && agents[0]["model"].is_string());
    let (status, s) = get(&pod, "/api/status", None).await;
    assert_eq!((status, s["provider_configured"].as_bool()), (200, Some(true)), "no credentials needed");
    assert_eq!(get(&pod, "/api/sessions", None).await.0, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interaction_and_otp_parks_answer_202_and_resume_through_their_endpoints() {
    let (llm, tools) = setup().await;
    let mut cfg = keyed(&llm, &tools);
    with_otp_gate(&mut cfg, &tools);
    let pod = pod(cfg).await;
    // A card: 202 with the card, never a hang.
    llm.push(Reply::tool_call(
        "call-i",
        "request_identity_intake",
        &json!({"fields": ["email"], "reason": "to send the quote"}),
    ));
    llm.push(Reply::text(&["Thanks, quote sent."]));
    let (status, parked) =
        post(&pod, "/api/chat", Some(KEY_A), json!({"message": "a quote", "namespace": "card"})).await;
    assert_eq!(status, 202, "{parked}");
    assert_eq!(parked["status"], "pending_interaction");
    assert_eq!(parked["namespace"], "card");
    let card = &parked["interaction"];
    assert_eq!(card["kind"], "identity_intake");
    let iid = card["interaction_id"].as_str().expect("id").to_string();
    let (_, shown) = get(&pod, "/api/sessions/card", Some(KEY_A)).await;
    assert_eq!(shown["turn"]["state"], "parked");
    let (_, list) = get(&pod, "/api/sessions", Some(KEY_A)).await;
    assert_eq!(list[0]["thread_state"], "awaiting_approval", "herald's name for a turn waiting on a person");
    let path = format!("/api/sessions/card/interactions/{iid}");
    let (status, bad) = post(&pod, &path, Some(KEY_A), json!({"values": {"email": "not-an-email"}})).await;
    assert_eq!((status, bad["code"].as_str()), (400, Some("invalid_request")), "{bad}");
    assert!(bad["details"]["errors"].to_string().contains("email"), "{bad}");
    assert_eq!(
        post(&pod, "/api/sessions/card/interactions/other", Some(KEY_A), json!({"declined": true})).await.0,
        404
    );
    let (status, done) = post(&pod, &path, Some(KEY_A), json!({"values": {"email": "ada@example.com"}})).await;
    assert_eq!((status, done["message"].as_str()), (200, Some("Thanks, quote sent.")), "{done}");
    assert_eq!(done["agent"], "Aria");

    // A code: 202 `pending_otp`; a wrong code is 400 with the attempts left; the right one resumes the turn.
    llm.push(Reply::tool_call("call-p", "pay_invoice", &json!({"invoice": "7"})));
    llm.push(Reply::text(&["Paid."]));
    let (status, parked) =
        post(&pod, "/api/chat", Some(KEY_A), json!({"message": "pay it", "namespace": "card"})).await;
    assert_eq!((status, parked["status"].as_str()), (202, Some("pending_otp")), "{parked}");
    assert_eq!(parked["otp"]["tool_name"], "pay_invoice");
    let code = tools.wait_for_calls("otp", 1, std::time::Duration::from_secs(5)).await[0].body["code"]
        .as_str()
        .expect("code")
        .to_string();
    let wrong: String = code.chars().map(|d| if d == '9' { '0' } else { char::from(d as u8 + 1) }).collect();
    let (status, refused) = post(&pod, "/api/sessions/card/otp", Some(KEY_A), json!({"code": wrong})).await;
    assert_eq!((status, refused["code"].as_str()), (400, Some("invalid_code")), "{refused}");
    assert_eq!(refused["details"]["attempts_remaining"], 2);
    let (status, paid) = post(&pod, "/api/sessions/card/otp", Some(KEY_A), json!({"code": code})).await;
    assert_eq!((status, paid["message"].as_str()), (200, Some("Paid.")), "{paid}");
    assert_eq!(
        post(&pod, "/api/sessions/card/otp", Some(KEY_A), json!({"code": "123456"})).await.0,
        404,
        "nothing waits"
    );
}

/// The OTP gate with a delivery that fails: `OTP_SEND_FAILED` is said mid-turn and the turn goes on; a REST
/// caller gets the turn's real answer, not that error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_mid_turn_error_is_not_the_end_of_the_turn() {
    let (llm, tools) = setup().await;
    let mut cfg = keyed(&llm, &tools);
    with_otp_gate(&mut cfg, &tools);
    let pod = pod(cfg).await;
    tools.set("otp", Behaviour::Status(500));
    llm.push(Reply::tool_call("call-i", "request_identity_intake", &json!({"fields": ["email"]})));
    let (_, parked) = post(&pod, "/api/chat", Some(KEY_A), json!({"message": "hi", "namespace": "fail"})).await;
    let iid = parked["interaction"]["interaction_id"].as_str().expect("card").to_string();
    llm.push(Reply::tool_call("call-p", "pay_invoice", &json!({})));
    llm.push(Reply::text(&["I could not verify you, sorry."]));
    let (status, body) = post(
        &pod,
        &format!("/api/sessions/fail/interactions/{iid}"),
        Some(KEY_A),
        json!({"values": {"email": "a@b.co"}}),
    )
    .await;
    assert_eq!((status, body["message"].as_str()), (200, Some("I could not verify you, sorry.")), "{body}");
}
