//! The widget in a real headless Chromium against real server processes: a streamed reply renders; approve and
//! deny from the card; model HTML shows as text and runs nothing; a pod drained mid-reply (two pods, one
//! Redis, a proxy as the load balancer) and the reply completes from the other pod exactly once; interaction
//! and OTP cards; a page on a disallowed origin sees the error. Each test leaves a screenshot under
//! `target/browser-screenshots/`.

#[path = "browser/cards.rs"]
mod cards;
#[path = "harness/mod.rs"]
mod harness;
#[path = "browser/logged_in.rs"]
mod logged_in;
#[path = "support/mod.rs"]
mod support;

use std::time::Duration;

use harness::*;
use serde_json::{json, Value};
use support::browser::Browser;
use support::llm::{FakeLlm, Reply};
use support::tools::{Behaviour, FakeTools};

const WAIT: Duration = Duration::from_secs(15);

/// JS: the widget's shadow root.
const ROOT: &str = "const r = document.querySelector('switchboard-chat').shadowRoot;";

async fn setup() -> (FakeLlm, FakeTools) {
    (FakeLlm::start().await, FakeTools::start().await)
}

fn widget_config(llm: &FakeLlm, tools: &FakeTools) -> switchboard::config::Config {
    let mut cfg = config(llm, tools);
    cfg.widget.enabled = Some(true);
    cfg
}

/// Opens the demo page of `page_pod`, optionally pointing the widget at another endpoint, and waits until it
/// has a session.
async fn open(b: &Browser, page: &str, endpoint: Option<&str>) {
    b.client.goto(page).await.expect("page loads");
    if let Some(ep) = endpoint {
        b.eval(
            "const w = document.querySelector('switchboard-chat'); const n = w.cloneNode(); n.setAttribute('endpoint', arguments[0]); w.replaceWith(n); return true;",
            vec![json!(ep)],
        )
        .await;
    }
    b.wait_for("a session", "return document.querySelector('switchboard-chat').sessionId;", WAIT).await;
}

async fn say(b: &Browser, text: &str) {
    b.eval(
        &format!("{ROOT} r.querySelector('#sb-input').value = arguments[0]; r.querySelector('form.composer').requestSubmit(); return true;"),
        vec![json!(text)],
    )
    .await;
}

/// The text of the n-th assistant message once its turn ended (the stop button hidden again).
async fn reply(b: &Browser, n: usize) -> String {
    let script = format!(
        "{ROOT} const m = r.querySelectorAll('.msg.assistant'); const done = r.querySelector('.stop').hidden; \
         return done && m.length > {n} ? m[{n}].textContent : null;"
    );
    b.wait_for(&format!("assistant message {n}"), &script, WAIT).await.as_str().unwrap_or_default().to_string()
}

async fn click(b: &Browser, selector: &str) {
    b.wait_for(selector, &format!("{ROOT} return !!r.querySelector(arguments[0] || '{selector}');"), WAIT).await;
    b.eval(&format!("{ROOT} r.querySelector('{selector}').click(); return true;"), vec![]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_streams_replies_asks_for_approval_and_never_runs_model_html() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("record 7 deleted")));
    let pod = pod(widget_config(&llm, &tools)).await;
    let b = Browser::start().await;
    open(&b, &http_url(&pod, "/"), None).await;
    let state = b.eval(&format!("{ROOT} return r.querySelector('.state').textContent;"), vec![]).await;
    assert_eq!(state, "Connected");

    llm.push(Reply::text(&["Hello ", "from ", "the ", "widget."]));
    say(&b, "hi").await;
    assert_eq!(reply(&b, 0).await, "Hello from the widget.");

    // HTML from the model is text: no element is made, no handler runs.
    let evil = "<img src=x onerror=\"window.__pwned=1\"><b>bold</b>";
    llm.push(Reply::text(&[evil]));
    say(&b, "show me html").await;
    assert_eq!(reply(&b, 1).await, evil);
    let made = b
        .eval(&format!("{ROOT} return [r.querySelectorAll('img, b').length, window.__pwned === undefined];"), vec![])
        .await;
    assert_eq!(made, json!([0, true]), "model HTML must never become elements");

    // Approve from the card: the tool runs and the reply comes.
    llm.push(Reply::tool_call("call-a", "delete_record", &json!({"id": "7"})));
    llm.push(Reply::text(&["Deleted."]));
    say(&b, "delete record 7").await;
    click(&b, "form.card button[data-action=approve]").await;
    assert_eq!(reply(&b, 2).await, "Deleted.");
    assert_eq!(tools.calls("delete_record").len(), 1);
    // Deny: the model is told and answers; the tool does not run again.
    llm.push(Reply::tool_call("call-d", "delete_record", &json!({"id": "8"})));
    llm.push(Reply::text(&["Okay, I left it."]));
    say(&b, "delete record 8").await;
    b.wait_for("a second card", &format!("{ROOT} return r.querySelectorAll('form.card').length === 2;"), WAIT).await;
    b.eval(&format!("{ROOT} const c = r.querySelectorAll('form.card')[1]; c.querySelector('button[data-action=deny]').click(); return true;"), vec![]).await;
    assert_eq!(reply(&b, 3).await, "Okay, I left it.");
    assert_eq!(tools.calls("delete_record").len(), 1, "a denied tool does not run");
    let steps =
        b.eval(&format!("{ROOT} return [...r.querySelectorAll('.step')].map(s => s.textContent);"), vec![]).await;
    // A public agent's tool without a `title` is a generic step (never its internal name); a denial reads as one.
    assert_eq!(steps, json!(["Working on your request: done", "Working on your request: declined"]));
    b.screenshot("streams_approvals_and_html").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_drained_mid_reply_is_invisible_the_reply_completes_once() {
    let (llm, tools) = setup().await;
    let redis = support::redis::RedisServer::start();
    let p = pods(2, widget_config(&llm, &tools), &Store::Redis(redis.url())).await;
    // The load balancer: every socket goes to pod A until A drains.
    let lb = support::proxy::Proxy::start(p[0].addr).await;
    let b = Browser::start().await;
    open(&b, &http_url(&p[0], "/"), Some(&format!("ws://{}/ws", lb.addr))).await;
    let words: Vec<String> = (0..30).map(|i| format!("w{i} ")).collect();
    let expected: String = words.concat();
    llm.push(Reply::Slow { chunks: words, delay_ms: 60, usage: None });
    say(&b, "tell me a long story").await;
    b.wait_for(
        "the reply to start",
        &format!("{ROOT} const m = r.querySelector('.msg.assistant'); return m && m.textContent.includes('w3 ');"),
        WAIT,
    )
    .await;
    lb.route_to(p[1].addr);
    p[0].drain();
    let text = reply(&b, 0).await;
    assert_eq!(text, expected, "every token once, in order");
    // The socket moved: the widget is connected again (through the proxy, now to pod B) on the same session.
    b.wait_for("reconnected", &format!("{ROOT} return r.querySelector('.state').textContent === 'Connected';"), WAIT)
        .await;
    let streamed = b.eval(&format!("{ROOT} return r.querySelectorAll('.msg.assistant').length;"), vec![]).await;
    assert_eq!(streamed, json!(1), "one reply bubble");
    // And the conversation goes on from pod B.
    llm.push(Reply::text(&["Still here."]));
    say(&b, "are you there").await;
    assert_eq!(reply(&b, 1).await, "Still here.");
    b.screenshot("drain_mid_reply").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn interaction_and_otp_cards_work_from_the_page() {
    let (llm, tools) = setup().await;
    let mut cfg = widget_config(&llm, &tools);
    with_otp_gate(&mut cfg, &tools);
    let pod = pod(cfg).await;
    let b = Browser::start().await;
    open(&b, &http_url(&pod, "/"), None).await;
    // The identity card: a bad email is refused on the card, a good one resumes the turn.
    llm.push(Reply::tool_call(
        "call-i",
        "request_identity_intake",
        &json!({"fields": ["email"], "reason": "to send you the quote"}),
    ));
    llm.push(Reply::text(&["Thanks, quote on its way."]));
    say(&b, "I'd like a quote").await;
    b.wait_for("the identity card", &format!("{ROOT} return !!r.querySelector('form.card input[name=email]');"), WAIT)
        .await;
    let fill = |v: &str| {
        format!("{ROOT} const c = r.querySelector('form.card'); c.querySelector('input[name=email]').value = '{v}'; c.requestSubmit(); return true;")
    };
    // The browser's own check passes "ada@example" (no dot needed); the server's does not.
    b.eval(&fill("ada@example"), vec![]).await;
    let err = b
        .wait_for(
            "the field error",
            &format!("{ROOT} return r.querySelector('form.card .field-error[data-field=email]').textContent;"),
            WAIT,
        )
        .await;
    assert_eq!(err, "must be a valid email address");
    b.eval(&fill("ada@example.com"), vec![]).await;
    assert_eq!(reply(&b, 0).await, "Thanks, quote on its way.");
    // The OTP card: the code from the delivery webhook, typed into the card; the gated tool then runs.
    llm.push(Reply::tool_call("call-p", "pay_invoice", &json!({})));
    llm.push(Reply::text(&["Paid."]));
    say(&b, "pay my invoice").await;
    let code = tools.wait_for_calls("otp", 1, WAIT).await[0].body["code"].as_str().expect("code").to_string();
    b.wait_for(
        "otp_sent",
        &format!(
            "{ROOT} return [...r.querySelectorAll('form.card')].some(c => c.textContent.includes('a***@example.com'));"
        ),
        WAIT,
    )
    .await;
    b.eval(
        &format!("{ROOT} const c = [...r.querySelectorAll('form.card')].pop(); c.querySelector('input[name=code]').value = arguments[0]; c.requestSubmit(); return true;"),
        vec![Value::String(code)],
    )
    .await;
    assert_eq!(reply(&b, 1).await, "Paid.");
    assert_eq!(tools.calls("pay_invoice").len(), 1);
    b.screenshot("interaction_and_otp_cards").await;
    b.close().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_on_a_disallowed_origin_is_told_so() {
    let (llm, tools) = setup().await;
    let mut cfg = widget_config(&llm, &tools);
    cfg.agents[0].allowed_origins = vec!["https://shop.example".into()];
    let pod = pod(cfg).await;
    let b = Browser::start().await;
    b.client.goto(&http_url(&pod, "/")).await.expect("page loads");
    let shown = b
        .wait_for(
            "the origin error",
            &format!("{ROOT} const e = r.querySelector('.error'); return e && e.dataset.code;"),
            WAIT,
        )
        .await;
    assert_eq!(shown, "ORIGIN_NOT_ALLOWED");
    let words = b.eval(&format!("{ROOT} return r.querySelector('.error').textContent;"), vec![]).await;
    assert_eq!(words, "This chat is not available on this site.");
    b.screenshot("disallowed_origin").await;
    b.close().await;
}

/// Real key presses (WebDriver actions) to whatever has the focus.
async fn keys(b: &Browser, text: &str) {
    use fantoccini::actions::{InputSource, KeyAction, KeyActions};
    let mut actions = KeyActions::new("keyboard".into());
    for ch in text.chars() {
        actions = actions.then(KeyAction::Down { value: ch }).then(KeyAction::Up { value: ch });
    }
    b.client.perform_actions(actions).await.expect("key presses");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keyboard_only_send_and_stop_and_choice_chips() {
    use fantoccini::key::Key;
    let (llm, tools) = setup().await;
    let pod = pod(widget_config(&llm, &tools)).await;
    let b = Browser::start().await;
    open(&b, &http_url(&pod, "/"), None).await;
    // Type and send with the keyboard; then Tab to the stop button and press Enter: the reply stops.
    llm.push(Reply::Slow { chunks: (0..40).map(|i| format!("w{i} ")).collect(), delay_ms: 100, usage: None });
    b.eval(&format!("{ROOT} r.querySelector('#sb-input').focus(); return true;"), vec![]).await;
    keys(&b, &format!("a long one{}", char::from(Key::Enter))).await;
    b.wait_for(
        "streaming",
        &format!("{ROOT} const m = r.querySelector('.msg.assistant'); return m && m.textContent.includes('w2 ');"),
        WAIT,
    )
    .await;
    let tab = char::from(Key::Tab);
    keys(&b, &format!("{tab}{tab}")).await;
    let focused = b.eval(&format!("{ROOT} return r.activeElement && r.activeElement.className;"), vec![]).await;
    assert_eq!(focused, "stop", "Tab reaches the stop button");
    keys(&b, &char::from(Key::Enter).to_string()).await;
    b.wait_for("stopped", &format!("{ROOT} return [...r.querySelectorAll('.note')].some(n => n.textContent === 'Stopped.') && r.querySelector('.stop').hidden;"), WAIT).await;
    // Choice chips: a single-select keeps one chip pressed; the answer goes back and the turn goes on.
    let questions = json!({"questions": [{"question": "Which plan?", "header": "Plan",
        "options": [{"label": "Basic"}, {"label": "Pro"}]}]});
    llm.push(Reply::tool_call("call-c", "request_choices", &questions));
    llm.push(Reply::text(&["Pro it is."]));
    b.eval(&format!("{ROOT} r.querySelector('#sb-input').focus(); return true;"), vec![]).await;
    keys(&b, &format!("pick a plan{}", char::from(Key::Enter))).await;
    b.wait_for("chips", &format!("{ROOT} return r.querySelectorAll('form.card .chip').length === 2;"), WAIT).await;
    let pressed = b
        .eval(
            &format!(
                "{ROOT} const c = r.querySelectorAll('form.card .chip'); c[0].click(); c[1].click(); \
                      return [...c].map(x => x.getAttribute('aria-pressed'));"
            ),
            vec![],
        )
        .await;
    assert_eq!(pressed, json!(["false", "true"]), "a single-select question takes one answer");
    b.eval(&format!("{ROOT} r.querySelector('form.card').requestSubmit(); return true;"), vec![]).await;
    assert_eq!(reply(&b, 1).await, "Pro it is.");
    let answer = llm.requests().last().cloned().expect("request")["messages"]
        .as_array()
        .and_then(|m| m.last().cloned())
        .expect("tool message");
    assert_eq!(
        serde_json::from_str::<Value>(answer["content"].as_str().expect("text")).expect("json"),
        json!({"status": "submitted", "values": {"answers": [{"header": "Plan", "options": ["Pro"]}]}})
    );
    b.screenshot("keyboard_stop_and_chips").await;
    b.close().await;
}

/// At a phone width every control of the composer stays inside the widget's box, and Enter while a reply is
/// still streaming says why nothing was sent (the message stays in the box) instead of doing nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_phone_width_nothing_sticks_out_and_enter_while_busy_says_why() {
    use fantoccini::key::Key;
    let (llm, tools) = setup().await;
    let mut cfg = widget_config(&llm, &tools);
    cfg.agents[0].greeting = Some("Hello! Ask me anything about your order.".into());
    let pod = pod(cfg).await;
    let b = Browser::start().await;
    b.client.set_window_size(360, 740).await.expect("phone width");
    open(&b, &http_url(&pod, "/"), None).await;
    let greeting = b
        .wait_for(
            "the greeting",
            &format!("{ROOT} const g = r.querySelector('.msg.greeting'); return g && g.textContent;"),
            WAIT,
        )
        .await;
    assert_eq!(greeting, "Hello! Ask me anything about your order.");
    llm.push(Reply::Slow { chunks: (0..40).map(|i| format!("w{i} ")).collect(), delay_ms: 100, usage: None });
    say(&b, "a long one").await;
    b.wait_for("the stop button", &format!("{ROOT} return !r.querySelector('.stop').hidden;"), WAIT).await;
    // Every visible control of the composer, measured against the widget's box.
    let overflow = b
        .eval(
            &format!(
                "{ROOT} const box = r.querySelector('.box').getBoundingClientRect(); \
                 return [...r.querySelectorAll('form.composer > *')].filter(e => e.offsetParent !== null) \
                 .map(e => [e.className || e.tagName, e.getBoundingClientRect()]) \
                 .filter(([, b]) => b.left < box.left - 0.5 || b.right > box.right + 0.5) \
                 .map(([n, b]) => n + ' ' + Math.round(b.left) + '..' + Math.round(b.right) + ' of ' + \
                      Math.round(box.left) + '..' + Math.round(box.right));"
            ),
            vec![],
        )
        .await;
    assert_eq!(overflow, json!([]), "controls outside the widget at 360 px");
    b.screenshot("phone_width_while_streaming").await;
    // Enter while the reply streams: a hint, and the text is kept.
    b.eval(&format!("{ROOT} r.querySelector('#sb-input').focus(); return true;"), vec![]).await;
    keys(&b, &format!("second question{}", char::from(Key::Enter))).await;
    let hint = b
        .wait_for(
            "a hint",
            &format!("{ROOT} const h = r.querySelector('.hint'); return !h.hidden && h.textContent;"),
            WAIT,
        )
        .await;
    assert!(hint.as_str().is_some_and(|h| h.contains("wait for the reply")), "{hint}");
    let kept = b.eval(&format!("{ROOT} return r.querySelector('#sb-input').value;"), vec![]).await;
    assert_eq!(kept, "second question");
    assert_eq!(llm.request_count(), 1, "nothing was sent while the reply streamed");
    b.screenshot("phone_width_enter_while_busy").await;
    b.close().await;
}

/// A socket the server refuses is explained, not left at "Reconnecting…" forever: without the token a `jwt`
/// deployment needs, the widget says sign-in is needed (and stops); past `limits.sockets_per_user`, it says too
/// many chats are open and keeps trying.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_socket_says_why() {
    let (llm, tools) = setup().await;
    let mut cfg = widget_config(&llm, &tools);
    cfg.auth.mode = switchboard::config::AuthMode::Jwt;
    cfg.auth.jwt_hs256_secret = "a-test-secret-that-is-at-least-32-bytes-long".into();
    let jwt_pod = pod(cfg).await;
    let mut cfg = widget_config(&llm, &tools);
    cfg.limits.sockets_per_user = 1;
    let busy_pod = pod(cfg).await;
    let b = Browser::start().await;

    b.client.goto(&http_url(&jwt_pod, "/")).await.expect("page loads");
    let state = b
        .wait_for(
            "the refusal explained",
            &format!(
                "{ROOT} const s = r.querySelector('.state'); return s.dataset.state === 'refused' && s.textContent;"
            ),
            WAIT,
        )
        .await;
    assert_eq!(state, "Sign-in needed");
    let words = b.eval(&format!("{ROOT} return r.querySelector('.error').textContent;"), vec![]).await;
    assert!(words.as_str().is_some_and(|w| w.contains("sign in")), "{words}");
    b.screenshot("refused_sign_in_needed").await;

    // One socket per user: the page's widget takes it; a second widget on the page is refused and says so.
    open(&b, &http_url(&busy_pod, "/"), None).await;
    b.eval(
        "const n = document.createElement('switchboard-chat'); \
         n.setAttribute('agent-id', document.querySelector('switchboard-chat').getAttribute('agent-id')); \
         n.id = 'second'; document.body.append(n); return true;",
        vec![],
    )
    .await;
    let second = "const r = document.querySelector('#second').shadowRoot;";
    let state = b
        .wait_for(
            "the second widget's refusal",
            &format!(
                "{second} const s = r.querySelector('.state'); return s.dataset.state === 'busy' && s.textContent;"
            ),
            WAIT,
        )
        .await;
    assert_eq!(state, "Too many chats open");
    b.screenshot("refused_too_many_chats").await;
    b.close().await;
}
