//! The OTP gate (§10): a gated tool parks until `verify_otp`; codes are sent by the delivery webhook, checked
//! by the server, attempt-limited and rate-limited; the tool then runs without the person asking again.

use super::interactions::create_with;
use super::*;

/// The test config with the OTP gate ([`with_otp_gate`]).
fn otp_config(llm: &FakeLlm, tools: &FakeTools) -> switchboard::config::Config {
    let mut cfg = config(llm, tools);
    with_otp_gate(&mut cfg, tools);
    cfg
}

/// Sends a turn that calls `pay_invoice` and reads up to the gate; returns the code the webhook received.
async fn gate(c: &mut support::ws::Client, llm: &FakeLlm, tools: &FakeTools, sid: &str, rid: &str) -> String {
    let before = tools.calls("otp").len();
    llm.push(Reply::tool_call(&format!("call-{rid}"), "pay_invoice", &json!({"invoice": "42"})));
    send_message(c, sid, rid, "pay invoice 42").await;
    let frames = c.recv_until(|v| v["type"] == "stream_chunk").await;
    assert_v1(&frames);
    assert_eq!(types(&frames), ["immediate_response", "otp_verification_required", "otp_sent", "stream_chunk"]);
    assert_eq!(
        frames[1]["data"]["data"],
        json!({"toolId": "pay_invoice", "actionDescription": "Verify your identity to continue.",
               "availableChannels": ["email"], "authLevel": "end_user"})
    );
    assert_eq!(frames[2]["data"]["data"], json!({"channel": "email", "maskedDestination": "a***@example.com"}));
    let calls = tools.wait_for_calls("otp", before + 1, Duration::from_secs(5)).await;
    let call = calls.last().expect("delivery");
    assert_eq!(call.body["sessionId"], sid);
    assert_eq!(
        (call.body["channel"].as_str(), call.body["destination"].as_str()),
        (Some("email"), Some("ada@example.com"))
    );
    assert_eq!(call.idempotency_key.as_deref(), Some(format!("otp-{sid}-call-{rid}").as_str()));
    assert!(call.body["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{}", call.body);
    assert!(tools.calls("pay_invoice").is_empty() || rid != "r-1", "the gated tool waits");
    call.body["code"].as_str().expect("code").to_string()
}

async fn verify(c: &mut support::ws::Client, sid: &str, code: &str) -> Value {
    c.send(&json!({"action": "verify_otp", "requestId": "v", "sessionId": sid, "code": code})).await;
    let r = c.recv().await;
    assert_v1(std::slice::from_ref(&r));
    r
}

fn wrong(code: &str) -> String {
    code.chars().map(|d| if d == '9' { '0' } else { char::from(d as u8 + 1) }).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_gated_tool_waits_for_the_code_then_runs_without_asking_again() {
    let (llm, tools) = setup().await;
    let pod = pod(otp_config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let (sid, _) = create_with(&mut c, None, json!({"userEmail": "ada@example.com"})).await;
    let code = gate(&mut c, &llm, &tools, &sid, "r-1").await;
    assert_eq!(code.len(), 6);
    // Bad input keeps the socket and the park.
    let r = verify(&mut c, &sid, "").await;
    assert_eq!(r["error"]["code"], "VALIDATION_ERROR");
    let r = verify(&mut c, &sid, &"9".repeat(10_000)).await;
    assert_eq!(r["error"]["code"], "VALIDATION_ERROR");
    let r = verify(&mut c, "00000000-0000-0000-0000-000000000000", &code).await;
    assert_eq!(r["error"]["code"], "SESSION_NOT_FOUND");
    // The code is this session's: on another session of the same person it opens nothing.
    let (other, _) = create_with(&mut c, None, json!({"userEmail": "ada@example.com"})).await;
    let r = verify(&mut c, &other, &code).await;
    assert_eq!(r["data"]["data"]["error"], "NOT_FOUND", "{r}");
    let r = verify(&mut c, &sid, &wrong(&code)).await;
    assert_eq!(
        r["data"]["data"],
        json!({"error": "INVALID_CODE", "attemptsRemaining": 2, "message": "Invalid code. 2 attempt(s) remaining."})
    );
    assert!(tools.calls("pay_invoice").is_empty());
    llm.push(Reply::text(&["Paid."]));
    c.send(&json!({"action": "verify_otp", "requestId": "v-ok", "sessionId": sid, "code": code})).await;
    let frames = until_terminal(&mut c, "r-1").await;
    assert_v1(&frames);
    assert_eq!(types(&frames), ["otp_verified", "stream_chunk", "stream_token", "eventual_response"], "{frames:?}");
    assert_eq!(frames[0]["requestId"], "v-ok");
    assert_eq!(frames[0]["data"]["data"]["message"], "Identity verified successfully.");
    assert_eq!(frames[1]["data"]["state"]["rawResponse"]["toolResult"]["result"], "paid");
    assert_eq!(tools.calls("pay_invoice").len(), 1, "the parked call ran once, without a new request");
    // The host learns whose data it may touch: the contact the person proved, never a model-chosen argument.
    assert_eq!(tools.calls("pay_invoice")[0].body["contact"], json!({"email": "ada@example.com", "verified": true}));
    // Verified: the next gated call runs at once; the code is used up.
    llm.push(Reply::tool_call("call-2", "pay_invoice", &json!({"invoice": "43"})));
    llm.push(Reply::text(&["Paid again."]));
    send_message(&mut c, &sid, "r-2", "and 43").await;
    let frames = until_terminal(&mut c, "r-2").await;
    assert!(!types(&frames).contains(&"otp_verification_required".to_string()), "{frames:?}");
    assert_eq!(tools.calls("pay_invoice").len(), 2);
    let r = verify(&mut c, &sid, &code).await;
    assert_eq!(
        (r["data"]["data"]["error"].as_str(), r["data"]["data"]["attemptsRemaining"].as_u64()),
        (Some("NOT_FOUND"), Some(0))
    );
    // An admin tool is refused on a public agent.
    llm.push(Reply::tool_call("call-3", "admin_reset", &json!({})));
    llm.push(Reply::text(&["I can't."]));
    send_message(&mut c, &sid, "r-3", "reset everything").await;
    let frames = until_terminal(&mut c, "r-3").await;
    let result =
        frames.iter().find_map(|f| f["data"]["state"]["rawResponse"].get("toolResult").cloned()).expect("result");
    assert_eq!(result["isError"], true);
    assert!(tools.calls("admin_reset").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_codes_lock_the_gate_and_the_turn_goes_on_without_the_tool() {
    crate::support::one_budget_window().await;
    let (llm, tools) = setup().await;
    let mut cfg = otp_config(&llm, &tools);
    cfg.otp.verify_per_minute = 6;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let (sid, _) = create_with(&mut c, None, json!({"userEmail": "ada@example.com"})).await;
    let code = gate(&mut c, &llm, &tools, &sid, "r-1").await;
    let bad = wrong(&code);
    for left in [2, 1] {
        assert_eq!(verify(&mut c, &sid, &bad).await["data"]["data"]["attemptsRemaining"], left);
    }
    llm.push(Reply::text(&["Sorry, I could not verify you."]));
    c.send(&json!({"action": "verify_otp", "requestId": "v3", "sessionId": sid, "code": bad})).await;
    let frames = until_terminal(&mut c, "r-1").await;
    assert_eq!(frames[0]["type"], "otp_invalid");
    assert_eq!(frames[0]["data"]["data"]["error"], "MAX_ATTEMPTS");
    assert_eq!(frames[0]["data"]["data"]["attemptsRemaining"], 0);
    let result = &frames[1]["data"]["state"]["rawResponse"]["toolResult"];
    assert_eq!(result["isError"], true, "{frames:?}");
    assert_eq!(frames.last().expect("end")["type"], "eventual_response");
    // Even the right code is refused now.
    assert_eq!(verify(&mut c, &sid, &code).await["data"]["data"]["error"], "NOT_FOUND");
    assert!(tools.calls("pay_invoice").is_empty());
    // Verify attempts are rate-limited per session (6 a minute here: 4 used above).
    let mut codes = Vec::new();
    for _ in 0..4 {
        let r = verify(&mut c, &sid, "000000").await;
        codes.push(r["error"]["code"].as_str().unwrap_or(r["type"].as_str().unwrap_or("")).to_string());
    }
    assert_eq!(codes, ["otp_invalid", "otp_invalid", "RATE_LIMITED", "RATE_LIMITED"]);
    still_open(&mut c).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_contact_a_failed_delivery_and_an_expired_code_each_end_the_gate_cleanly() {
    let (llm, tools) = setup().await;
    let mut cfg = otp_config(&llm, &tools);
    cfg.otp.ttl_s = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    // No contact: the model is told to ask for an email; nothing parks, no code is sent.
    let (sid, _) = create_with(&mut c, None, json!({})).await;
    llm.push(Reply::tool_call("call-n", "pay_invoice", &json!({})));
    llm.push(Reply::text(&["What is your email?"]));
    send_message(&mut c, &sid, "r-n", "pay").await;
    let frames = until_terminal(&mut c, "r-n").await;
    assert!(!types(&frames).iter().any(|t| t.starts_with("otp_")), "{frames:?}");
    let result = frames.iter().find_map(|f| f["data"]["state"]["rawResponse"].get("toolResult").cloned()).expect("r");
    assert!(result["result"].as_str().unwrap_or("").contains("ask for their email address"), "{result}");
    assert!(tools.calls("otp").is_empty());
    // An email arrives through the fallback submit_interaction; the delivery webhook fails.
    tools.set("otp", Behaviour::Status(500));
    llm.push(Reply::tool_call(
        "call-s",
        "submit_interaction",
        &json!({"kind": "identity_intake", "values": {"email": "ada@example.com"}}),
    ));
    llm.push(Reply::tool_call("call-f", "pay_invoice", &json!({})));
    llm.push(Reply::text(&["The code could not be sent."]));
    send_message(&mut c, &sid, "r-f", "it's ada@example.com").await;
    // The OTP_SEND_FAILED error is not the turn's end (§10): read on to the eventual_response.
    let frames = c.recv_until(|v| v["type"] == "eventual_response").await;
    assert_v1(&frames);
    let err = frames.iter().find(|f| f["type"] == "error").expect("OTP_SEND_FAILED");
    assert_eq!((err["error"]["code"].as_str(), err["requestId"].as_str()), (Some("OTP_SEND_FAILED"), Some("r-f")));
    assert_eq!(frames.last().expect("end")["type"], "eventual_response", "the turn goes on");
    assert_eq!(tools.calls("otp").len(), 1);
    assert_eq!(verify(&mut c, &sid, "123456").await["data"]["data"]["error"], "NOT_FOUND", "no code was left");
    // A code that expires: the park times out (the tool is refused), a late verify is told EXPIRED.
    tools.set("otp", Behaviour::Ok(json!("sent")));
    let code = gate(&mut c, &llm, &tools, &sid, "r-e").await;
    llm.push(Reply::text(&["Too late."]));
    let frames = until_terminal(&mut c, "r-e").await;
    let result = frames.iter().find_map(|f| f["data"]["state"]["rawResponse"].get("toolResult").cloned()).expect("r");
    assert_eq!(result["isError"], true);
    assert_eq!(verify(&mut c, &sid, &code).await["data"]["data"]["error"], "EXPIRED");
    assert!(tools.calls("pay_invoice").is_empty());
    // Cancel while waiting for a code: the turn ends cancelled, and that code verifies nothing afterwards.
    let code = gate(&mut c, &llm, &tools, &sid, "r-x").await;
    c.send(&json!({"action": "cancel", "requestId": "r-x", "sessionId": sid})).await;
    assert_eq!(until_terminal(&mut c, "r-x").await.last().expect("end")["type"], "cancelled");
    assert_eq!(verify(&mut c, &sid, &code).await["data"]["data"]["error"], "NOT_FOUND");
    // Cancel while the code is still being delivered (the turn is still running, its park already written):
    // the code goes with the park all the same.
    tools.set("otp", Behaviour::Delay(1_500, json!("sent")));
    let before = tools.calls("otp").len();
    llm.push(Reply::tool_call("call-r-y", "pay_invoice", &json!({"invoice": "43"})));
    send_message(&mut c, &sid, "r-y", "pay invoice 43").await;
    c.recv_until(|v| v["type"] == "otp_verification_required").await;
    let call = tools.wait_for_calls("otp", before + 1, Duration::from_secs(5)).await.pop().expect("delivery");
    c.send(&json!({"action": "cancel", "requestId": "r-y", "sessionId": sid})).await;
    assert_eq!(until_terminal(&mut c, "r-y").await.last().expect("end")["type"], "cancelled");
    let code = call.body["code"].as_str().expect("code").to_string();
    assert_eq!(verify(&mut c, &sid, &code).await["data"]["data"]["error"], "NOT_FOUND", "a cancelled call's code");
}
