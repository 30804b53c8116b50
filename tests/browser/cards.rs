//! Every card state of the widget at a desktop (1280 px) and a phone (360 px) width: the approval card, the
//! identity card with a field error, choice chips, the OTP card, and an answer's sources with their link and
//! snippet. At each state no control sticks out of the card or the widget, and a screenshot is kept under
//! `target/browser-screenshots/` (`card_<state>_<width>.png`).

use super::*;

/// The widget's controls (and cards) whose box leaves the widget's box: `[[what, left, right]]`.
async fn outside(b: &Browser) -> Value {
    b.eval(
        &format!(
            "{ROOT} const box = r.querySelector('.box').getBoundingClientRect(); \
             return [...r.querySelectorAll('button, input, a, form.card, .sources')].filter(e => e.offsetParent !== null) \
             .map(e => [e.className || e.tagName, e.getBoundingClientRect()]) \
             .filter(([, b]) => b.left < box.left - 0.5 || b.right > box.right + 0.5) \
             .map(([n, b]) => [n, b.left, b.right]);"
        ),
        vec![],
    )
    .await
}

async fn state(b: &Browser, name: &str, width: u32) {
    assert_eq!(outside(b).await, json!([]), "{name} at {width} px: nothing outside the widget");
    b.screenshot(&format!("card_{name}_{width}")).await;
}

async fn last_card(b: &Browser, what: &str, selector: &str) {
    b.wait_for(what, &format!("{ROOT} return !!r.querySelector('{selector}');"), WAIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_card_state_at_desktop_and_phone_width() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("record 7 deleted")));
    let mut cfg = widget_config(&llm, &tools);
    with_otp_gate(&mut cfg, &tools);
    cfg.knowledge.documents = vec![switchboard::config::KnowledgeDocument {
        id: "returns".into(),
        title: "Returns policy".into(),
        url: Some("https://help.example/returns".into()),
        content: "Items can be returned within 30 days of delivery for a full refund.".into(),
        sets: vec![],
    }];
    let pod = pod(cfg).await;
    for (width, height) in [(1280u32, 800u32), (360, 740)] {
        let b = Browser::start().await;
        b.client.set_window_size(width, height).await.expect("window size");
        open(&b, &http_url(&pod, "/"), None).await;
        let mut replies = 0;

        // Approval.
        llm.push(Reply::tool_call("call-d", "delete_record", &json!({"id": "7"})));
        llm.push(Reply::text(&["Deleted."]));
        say(&b, "delete record 7").await;
        last_card(&b, "the approval card", "form.card button[data-action=approve]").await;
        state(&b, "approval", width).await;
        click(&b, "form.card button[data-action=approve]").await;
        assert_eq!(reply(&b, replies).await, "Deleted.");
        replies += 1;

        // Identity, with a field error.
        llm.push(Reply::tool_call(
            "call-i",
            "request_identity_intake",
            &json!({"fields": ["email"], "reason": "to send the quote"}),
        ));
        llm.push(Reply::text(&["Quote sent."]));
        say(&b, "a quote please").await;
        last_card(&b, "the identity card", "form.card input[name=email]").await;
        let fill = |v: &str| {
            format!("{ROOT} const c = [...r.querySelectorAll('form.card')].pop(); c.querySelector('input[name=email]').value = '{v}'; c.requestSubmit(); return true;")
        };
        b.eval(&fill("ada@example"), vec![]).await;
        b.wait_for(
            "the field error",
            &format!("{ROOT} return [...r.querySelectorAll('.field-error')].some(e => e.textContent);"),
            WAIT,
        )
        .await;
        state(&b, "identity_error", width).await;
        b.eval(&fill("ada@example.com"), vec![]).await;
        assert_eq!(reply(&b, replies).await, "Quote sent.");
        replies += 1;

        // Choices.
        let questions = json!({"questions": [{"question": "Which plan?", "header": "Plan",
            "options": [{"label": "Basic"}, {"label": "Pro"}, {"label": "Enterprise with a rather long name"}]}]});
        llm.push(Reply::tool_call("call-c", "request_choices", &questions));
        llm.push(Reply::text(&["Pro it is."]));
        say(&b, "pick a plan").await;
        b.wait_for("chips", &format!("{ROOT} return r.querySelectorAll('form.card .chip').length === 3;"), WAIT).await;
        state(&b, "choices", width).await;
        b.eval(&format!("{ROOT} const c = [...r.querySelectorAll('form.card')].pop(); c.querySelectorAll('.chip')[1].click(); c.requestSubmit(); return true;"), vec![]).await;
        assert_eq!(reply(&b, replies).await, "Pro it is.");
        replies += 1;

        // The OTP card.
        llm.push(Reply::tool_call("call-p", "pay_invoice", &json!({})));
        llm.push(Reply::text(&["Paid."]));
        say(&b, "pay my invoice").await;
        let calls = tools.wait_for_calls("otp", if width == 1280 { 1 } else { 2 }, WAIT).await;
        let code = calls.last().expect("a code").body["code"].as_str().expect("code").to_string();
        last_card(&b, "the OTP card", "form.card input[name=code]").await;
        state(&b, "otp", width).await;
        b.eval(
            &format!("{ROOT} const c = [...r.querySelectorAll('form.card')].pop(); c.querySelector('input[name=code]').value = arguments[0]; c.requestSubmit(); return true;"),
            vec![Value::String(code)],
        )
        .await;
        assert_eq!(reply(&b, replies).await, "Paid.");
        replies += 1;

        // Sources: the link and the snippet that grounded the answer.
        llm.push(Reply::tool_call("call-k", "knowledge_search", &json!({"query": "return refund days"})));
        llm.push(Reply::text(&["Within 30 days."]));
        say(&b, "how do returns work").await;
        assert_eq!(reply(&b, replies).await, "Within 30 days.");
        let source = b
            .wait_for(
                "the sources",
                &format!("{ROOT} const s = r.querySelector('.sources li'); return s && [s.querySelector('a').href, s.querySelector('.snippet').textContent];"),
                WAIT,
            )
            .await;
        assert_eq!(source[0], "https://help.example/returns");
        assert!(source[1].as_str().is_some_and(|t| t.contains("returned within 30 days")), "{source}");
        state(&b, "sources", width).await;
        b.close().await;
    }
}
