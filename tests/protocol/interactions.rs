//! Rich interactions (§9): the card path (park, submit, validation, decline, timeout, cancel), the
//! conversational fallback, and every bad submit answered without closing the socket.

use super::*;

/// Creates a session declaring `supports` (None: the key is left out) and returns its id.
pub(super) async fn create_with(
    c: &mut support::ws::Client,
    supports: Option<Value>,
    extra: Value,
) -> (String, String) {
    let mut frame = json!({"action": "create_conversation_session", "requestId": "create", "agentId": AGENT});
    if let Some(s) = supports {
        frame["supports"] = s;
    }
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        frame[k] = v;
    }
    c.send(&frame).await;
    let r = c.recv().await;
    assert_eq!(r["status"], 200, "{r}");
    (r["data"]["sessionId"].as_str().expect("sid").into(), r["data"]["conversationId"].as_str().expect("cid").into())
}

fn identity_call(id: &str) -> Reply {
    Reply::tool_call(
        id,
        "request_identity_intake",
        &json!({"fields": ["email", {"key": "name", "label": "Your name"}], "reason": "to send you the quote"}),
    )
}

/// Raises an identity card and returns the `interaction_required` frame.
async fn raise(c: &mut support::ws::Client, llm: &FakeLlm, sid: &str, rid: &str) -> Value {
    llm.push(identity_call(&format!("call-{rid}")));
    send_message(c, sid, rid, "I'd like a quote").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_v1(&frames);
    assert_eq!(types(&frames), ["immediate_response", "interaction_required", "stream_chunk"], "{frames:?}");
    assert_eq!(frames[2]["data"]["state"]["rawResponse"]["toolCall"]["name"], "request_identity_intake");
    frames[1].clone()
}

async fn submit(c: &mut support::ws::Client, frame: Value) -> Value {
    c.send(&frame).await;
    let r = c.recv().await;
    assert_v1(std::slice::from_ref(&r));
    r
}

fn code(v: &Value) -> &str {
    v["error"]["code"].as_str().unwrap_or("")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_identity_card_parks_refuses_bad_answers_and_resumes_with_the_values() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let (sid, _) = create_with(&mut c, Some(json!(["identity_form", "choice_chips", "hologram"])), json!({})).await;
    let card = raise(&mut c, &llm, &sid, "r-1").await;
    let data = &card["data"]["data"];
    assert_eq!(card["requestId"], "r-1");
    assert_eq!(data["kind"], "identity_intake");
    assert_eq!(data["reason"], "to send you the quote");
    assert_eq!(
        data["spec"],
        json!({"fields": [{"key": "email", "required": true}, {"key": "name", "required": false, "label": "Your name"}]})
    );
    let iid = data["interactionId"].as_str().expect("interactionId").to_string();
    // Both raise tools were offered; the fallback tool was not (the client shows both cards).
    let offered: Vec<String> = llm.requests()[0]["tools"]
        .as_array()
        .expect("tools")
        .iter()
        .map(|t| t["function"]["name"].as_str().unwrap_or("").to_string())
        .collect();
    assert!(offered.contains(&"request_identity_intake".into()) && offered.contains(&"request_choices".into()));
    assert!(!offered.contains(&"submit_interaction".into()), "{offered:?}");

    // An extended client sees the pending card in get_session.
    let mut x = connect(&pod, true).await;
    x.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid})).await;
    let s = x.recv().await;
    assert_eq!(s["data"]["pendingInteraction"]["interactionId"], iid.as_str(), "{s}");
    assert_eq!(s["data"]["pendingInteraction"]["kind"], "identity_intake");

    let base = json!({"action": "submit_interaction", "requestId": "s-1", "sessionId": sid, "interactionId": iid});
    let with = |extra: Value| {
        let mut f = base.clone();
        for (k, v) in extra.as_object().cloned().unwrap_or_default() {
            f[k] = v;
        }
        f
    };
    // Each bad answer gets its code; the park stays.
    let mut no_rid = with(json!({"values": {"email": "a@b.co"}}));
    no_rid.as_object_mut().expect("obj").remove("requestId");
    assert_eq!(code(&submit(&mut c, no_rid).await), "VALIDATION_ERROR");
    let mut no_sid = with(json!({"values": {"email": "a@b.co"}}));
    no_sid.as_object_mut().expect("obj").remove("sessionId");
    assert_eq!(code(&submit(&mut c, no_sid).await), "VALIDATION_ERROR");
    let foreign = with(json!({"sessionId": "00000000-0000-0000-0000-000000000000", "values": {}}));
    assert_eq!(code(&submit(&mut c, foreign).await), "NO_PENDING_INTERACTION");
    let stale = with(json!({"interactionId": "not-this-one", "values": {"email": "a@b.co"}}));
    assert_eq!(code(&submit(&mut c, stale).await), "INTERACTION_MISMATCH");
    let wrong_kind = with(json!({"kind": "choices", "values": {"email": "a@b.co"}}));
    assert_eq!(code(&submit(&mut c, wrong_kind).await), "INTERACTION_MISMATCH");
    assert_eq!(code(&submit(&mut c, with(json!({}))).await), "VALIDATION_ERROR", "no values");
    let many: serde_json::Map<String, Value> = (0..1_000).map(|i| (format!("f{i}"), json!("x"))).collect();
    let invalid_cases = [
        (json!("a string"), "values"),
        (json!(["an", "array"]), "values"),
        (json!({"email": {"nested": [1, {"garbage": null}]}}), "email"),
        (Value::Object(many), "values"),
        (json!({"email": "x".repeat(60_000)}), "values"),
        (json!({"email": " ada@example.com"}), "email"),
        (json!({"name": "Ada"}), "email"),
    ];
    for (values, field) in invalid_cases {
        let r = submit(&mut c, with(json!({"values": values}))).await;
        assert_eq!(r["type"], "interaction_invalid", "{r}");
        assert_eq!(r["requestId"], "s-1");
        assert_eq!(r["data"]["data"]["interactionId"], iid.as_str());
        assert_eq!(r["data"]["data"]["message"], "Some fields need attention.");
        let errors = r["data"]["data"]["errors"].as_array().expect("errors");
        assert!(errors.iter().any(|e| e["field"] == field), "{field}: {r}");
    }
    let r = submit(&mut c, with(json!({"values": {"email": "a b@example.com", "name": ""}}))).await;
    assert_eq!(r["data"]["data"]["errors"], json!([{"field": "email", "message": "must be a valid email address"}]));
    still_open(&mut c).await;

    llm.push(Reply::text(&["Thanks Ada!"]));
    c.send(&with(json!({"values": {"email": "Ada@Example.COM", "name": " Ada "}}))).await;
    let frames = until_terminal(&mut c, "r-1").await;
    assert_v1(&frames);
    assert_eq!(types(&frames), ["immediate_response", "stream_chunk", "stream_token", "eventual_response"]);
    assert_eq!(frames[0]["requestId"], "s-1", "the ack carries the submit's requestId");
    assert_eq!(
        frames[0]["data"],
        json!({"sessionId": sid, "interactionId": iid, "kind": "identity_intake",
               "values": {"email": "Ada@example.com", "name": "Ada"}})
    );
    let result = &frames[1]["data"]["state"]["rawResponse"]["toolResult"];
    let payload: Value = serde_json::from_str(result["result"].as_str().expect("result")).expect("json");
    assert_eq!(payload, json!({"status": "submitted", "values": {"email": "Ada@example.com", "name": "Ada"}}));
    assert_eq!(frames[1]["requestId"], "r-1", "the resumed turn keeps its requestId");
    let second = llm.requests()[1]["messages"].as_array().expect("messages").last().cloned().expect("last");
    assert_eq!((second["role"].as_str(), second["tool_call_id"].as_str()), (Some("tool"), Some("call-r-1")));
    // Answered once: a repeat finds nothing pending.
    let again = submit(&mut c, with(json!({"values": {"email": "ada@example.com"}}))).await;
    assert_eq!(code(&again), "NO_PENDING_INTERACTION");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_choices_card_is_validated_declined_and_times_out() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.interaction.timeout_s = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let (sid, _) = create_with(&mut c, Some(json!(["choice_chips"])), json!({})).await;
    let questions = json!({"questions": [
        {"question": "Which plan?", "header": "Plan", "options": [{"label": "Basic"}, {"label": "Pro", "description": "Teams"}]},
        {"question": "Topics?", "header": "Topics", "options": [{"label": "Sales"}, {"label": "Billing"}], "multiSelect": true}
    ]});
    llm.push(Reply::tool_call("call-c", "request_choices", &questions));
    send_message(&mut c, &sid, "r-c", "help me choose").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    let card = &frames[1]["data"]["data"];
    assert_eq!(card["spec"]["questions"][0]["options"][0], json!({"label": "Basic", "description": ""}));
    assert_eq!(card["spec"]["questions"][0]["multiSelect"], false);
    assert_eq!(card["reason"], "to help you better");
    let iid = card["interactionId"].as_str().expect("id").to_string();
    let sub = |values: Value| {
        json!({"action": "submit_interaction", "requestId": "s-c", "sessionId": sid,
                                     "interactionId": iid, "kind": "choices", "values": values})
    };
    let r = submit(
        &mut c,
        sub(json!({"answers": [{"header": "Plan", "options": ["Basic", "Pro"]},
                                                    {"header": "Topics", "options": ["Gardening"]}]})),
    )
    .await;
    assert_eq!(
        r["data"]["data"]["errors"],
        json!([{"field": "Plan", "message": "this question takes a single answer"},
               {"field": "Topics", "message": "'Gardening' is not one of the offered options"}])
    );
    let r = submit(&mut c, sub(json!({"answers": [{"header": "Plan", "options": ["Pro"]}]}))).await;
    assert_eq!(r["data"]["data"]["errors"], json!([{"field": "Topics", "message": "this question must be answered"}]));
    // Declined: the model is told, the turn goes on.
    llm.push(Reply::text(&["No problem."]));
    c.send(&json!({"action": "submit_interaction", "requestId": "s-d", "sessionId": sid, "interactionId": iid,
                   "declined": true}))
        .await;
    let frames = until_terminal(&mut c, "r-c").await;
    assert_eq!(frames[0]["data"], json!({"sessionId": sid, "interactionId": iid, "declined": true}));
    let result = frames[1]["data"]["state"]["rawResponse"]["toolResult"]["result"].as_str().expect("result");
    assert_eq!(serde_json::from_str::<Value>(result).expect("json")["status"], "declined");
    // Unanswered past interaction.timeout_s: "no response", and the turn goes on.
    llm.push(Reply::tool_call("call-t", "request_choices", &questions));
    llm.push(Reply::text(&["Let me know later."]));
    send_message(&mut c, &sid, "r-t", "again").await;
    let frames = until_terminal(&mut c, "r-t").await;
    assert_eq!(
        types(&frames),
        [
            "immediate_response",
            "interaction_required",
            "stream_chunk",
            "stream_chunk",
            "stream_token",
            "eventual_response"
        ]
    );
    assert_eq!(frames[3]["data"]["state"]["rawResponse"]["toolResult"]["result"], "no response");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_the_capability_the_agent_asks_in_conversation_and_bad_raises_are_tool_errors() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let (sid, _) = create_with(&mut c, None, json!({})).await;
    let bad_questions: Vec<Value> = (0..5)
        .map(|i| json!({"question": "q", "header": format!("H{i}"), "options": [{"label": "a"}, {"label": "b"}]}))
        .collect();
    let one_option = json!({"questions": [{"question": "q", "header": "H", "options": [{"label": "a"}]}]});
    let long_header = json!({"questions": [{"question": "q", "header": "Thirteen-char", "options": [{"label": "a"}, {"label": "b"}]}]});
    let dup = json!({"questions": [{"question": "q", "header": "H", "options": [{"label": "a"}, {"label": "b"}]},
                                    {"question": "r", "header": "H", "options": [{"label": "a"}, {"label": "b"}]}]});
    llm.push(Reply::tool_call("c1", "request_choices", &json!({"questions": bad_questions})));
    llm.push(Reply::tool_call("c2", "request_choices", &one_option));
    llm.push(Reply::tool_call("c3", "request_choices", &long_header));
    llm.push(Reply::tool_call("c4", "request_choices", &dup));
    llm.push(identity_call("c5"));
    llm.push(Reply::tool_call(
        "c6",
        "submit_interaction",
        &json!({"kind": "identity_intake", "values": {"email": "nope", "phone": "555-CALL-NOW"}}),
    ));
    llm.push(Reply::tool_call(
        "c7",
        "submit_interaction",
        &json!({"kind": "identity_intake", "values": {"email": "ada@example.com"}}),
    ));
    llm.push(Reply::text(&["Got it."]));
    send_message(&mut c, &sid, "r-f", "quote please").await;
    let frames = until_terminal(&mut c, "r-f").await;
    assert_v1(&frames);
    assert!(!types(&frames).contains(&"interaction_required".to_string()), "no card without the capability");
    let results: Vec<(bool, String)> = frames
        .iter()
        .filter_map(|f| f["data"]["state"]["rawResponse"].get("toolResult").cloned())
        .map(|r| (r["isError"].as_bool().unwrap_or(false), r["result"].as_str().unwrap_or("").to_string()))
        .collect();
    assert_eq!(results.len(), 7, "{results:?}");
    for (i, (is_error, text)) in results[..4].iter().enumerate() {
        assert!(*is_error, "bad raise {i} is a tool error: {text}");
    }
    assert!(results[0].1.contains("1-4"), "{}", results[0].1);
    assert!(results[2].1.contains("12 characters"), "{}", results[2].1);
    assert!(results[3].1.contains("duplicate header"), "{}", results[3].1);
    let conversational: Value = serde_json::from_str(&results[4].1).expect("json");
    assert_eq!(conversational["mode"], "conversational");
    assert_eq!(conversational["instructions"], "ask for one field at a time, then call submit_interaction");
    assert!(results[5].0);
    assert!(results[5].1.starts_with("validation failed — email: must be a valid email address"), "{}", results[5].1);
    assert!(results[5].1.contains("phone: must be a valid phone number"), "{}", results[5].1);
    assert_eq!(serde_json::from_str::<Value>(&results[6].1).expect("json")["status"], "submitted");
    let offered = llm.requests()[0]["tools"].to_string();
    assert!(offered.contains("\"submit_interaction\""), "the fallback tool is offered: {offered}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capabilities_live_on_the_conversation_and_cancel_removes_a_card() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let mut x = connect(&pod, true).await;
    let (_, cid) = create_with(&mut c, Some(json!(["identity_form"])), json!({})).await;
    // A later session of the conversation that declares nothing inherits the card; cancel removes it.
    let (sid2, _) = create_with(&mut c, None, json!({"conversationId": cid})).await;
    raise(&mut c, &llm, &sid2, "r-i").await;
    c.send(&json!({"action": "cancel", "requestId": "r-i", "sessionId": sid2})).await;
    let frames = until_terminal(&mut c, "r-i").await;
    assert_eq!(frames.last().expect("end")["type"], "cancelled");
    x.send(&json!({"action": "get_session", "requestId": "g", "sessionId": sid2})).await;
    let s = x.recv().await;
    assert_eq!(s["status"], 200, "{s}");
    assert!(s["data"].get("pendingInteraction").is_none(), "{s}");
    // `[]` opts out explicitly: the same conversation now gets the conversational fallback.
    let (sid3, _) = create_with(&mut c, Some(json!([])), json!({"conversationId": cid})).await;
    llm.push(identity_call("c-x"));
    llm.push(Reply::text(&["What is your email?"]));
    send_message(&mut c, &sid3, "r-x", "quote").await;
    let frames = until_terminal(&mut c, "r-x").await;
    assert!(!types(&frames).contains(&"interaction_required".to_string()), "{frames:?}");
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
}
