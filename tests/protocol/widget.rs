//! Widget auth (§13) over real sockets: `http.allowed_origins` at the upgrade, an agent's `allowed_origins` on
//! create, and `authContext` signatures (skew just inside and outside 60 s, a signature replayed for another
//! user, an agent without a secret); and how `/widget.js` and the demo page are served.

use super::*;
use support::ws::Client;

const SECRET: &str = "widget-secret-of-at-least-32-bytes!!";

fn sign(user: &str, ts: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    ring::hmac::sign(&key, format!("{user}:{ts}").as_bytes()).as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

fn now_s() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs() as i64
}

async fn create(c: &mut Client, extra: Value) -> Value {
    let mut f = json!({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT});
    for (k, v) in extra.as_object().cloned().unwrap_or_default() {
        f[k] = v;
    }
    c.send(&f).await;
    c.recv().await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn origins_are_checked_at_the_upgrade_and_per_agent() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.http.allowed_origins = vec!["https://shop.example".into(), "https://*.partner.example".into()];
    cfg.agents[0].allowed_origins = vec!["https://shop.example".into()];
    let pod = pod(cfg).await;
    let url = ws_url(&pod);
    let refused = Client::connect_with_headers(&url, &[("Origin", "https://evil.example")]).await.err().expect("403");
    assert_eq!(refused.status, Some(403));
    // A partner page passes the upgrade but not the agent's own list.
    let mut partner =
        Client::connect_with_headers(&url, &[("Origin", "https://app.partner.example")]).await.expect("ok");
    let r = create(&mut partner, json!({})).await;
    assert_eq!(r["error"]["code"], "ORIGIN_NOT_ALLOWED", "{r}");
    still_open(&mut partner).await;
    let mut shop = Client::connect_with_headers(&url, &[("Origin", "https://shop.example")]).await.expect("ok");
    assert_eq!(create(&mut shop, json!({})).await["status"], 200);
    // No Origin: not a browser; origin lists do not apply.
    let mut server = connect(&pod, false).await;
    assert_eq!(create(&mut server, json!({})).await["status"], 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auth_context_makes_the_socket_the_hosts_user() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.agents[0].widget_secret = SECRET.into();
    let pod = pod(cfg).await;
    let ctx =
        |user: &str, ts: i64, sig: String| json!({"authContext": {"userId": user, "timestamp": ts, "signature": sig}});
    let mut a = connect(&pod, false).await;
    let now = now_s();
    let r = create(&mut a, ctx("user-42", now - 55, sign("user-42", now - 55))).await;
    assert_eq!(r["status"], 200, "55 s old is inside the window: {r}");
    let cid = r["data"]["conversationId"].as_str().expect("cid").to_string();
    // Refusals, each with the same code; the socket stays open.
    let cases = [
        ctx("user-42", now - 65, sign("user-42", now - 65)),
        ctx("user-42", now + 65, sign("user-42", now + 65)),
        ctx("user-43", now, sign("user-42", now)),
        ctx("user-42", now, "00".repeat(32)),
    ];
    let mut b = connect(&pod, false).await;
    for case in cases {
        let r = create(&mut b, case.clone()).await;
        assert_eq!(r["error"]["code"], "AUTH_CONTEXT_INVALID", "{case} → {r}");
    }
    let r = create(&mut b, json!({"authContext": {"userId": 42}})).await;
    assert_eq!(r["error"]["code"], "VALIDATION_ERROR");
    still_open(&mut b).await;
    // Another socket of the same host user sees the conversation; an anonymous one does not.
    let mut again = connect(&pod, false).await;
    assert_eq!(create(&mut again, ctx("user-42", now, sign("user-42", now))).await["status"], 200);
    again.send(&json!({"action": "list_conversations", "requestId": "l"})).await;
    let listed = again.recv().await;
    let ids: Vec<&str> = listed["data"]["conversations"]
        .as_array()
        .expect("list")
        .iter()
        .filter_map(|c| c["conversationId"].as_str())
        .collect();
    assert!(ids.contains(&cid.as_str()), "{listed}");
    let mut anon = connect(&pod, false).await;
    anon.send(&json!({"action": "list_conversations", "requestId": "l"})).await;
    assert!(!anon.recv().await.to_string().contains(&cid), "the anonymous user does not see the host user's");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_without_a_secret_refuses_auth_contexts() {
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let mut c = connect(&pod, false).await;
    let now = now_s();
    let r =
        create(&mut c, json!({"authContext": {"userId": "u", "timestamp": now, "signature": sign("u", now)}})).await;
    assert_eq!(r["error"]["code"], "AUTH_CONTEXT_INVALID");
    assert_eq!(r["error"]["message"], "this agent accepts no authContext");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_widget_script_is_cached_per_version_and_the_page_follows_widget_enabled() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.widget.enabled = Some(true);
    let on = pod(cfg.clone()).await;
    let http = reqwest::Client::new();
    let js = http.get(http_url(&on, "/widget.js")).send().await.expect("js");
    assert_eq!(js.status(), 200);
    assert_eq!(js.headers()["content-type"], "text/javascript; charset=utf-8");
    assert_eq!(js.headers()["cache-control"], "public, max-age=300");
    let etag = js.headers()["etag"].to_str().expect("etag").to_string();
    assert!(js.text().await.expect("body").contains("customElements.define(\"switchboard-chat\""));
    let again = http.get(http_url(&on, "/widget.js")).header("If-None-Match", &etag).send().await.expect("304");
    assert_eq!(again.status(), 304);
    let pinned =
        http.get(http_url(&on, &format!("/widget/v{}.js", env!("CARGO_PKG_VERSION")))).send().await.expect("v");
    assert_eq!(pinned.headers()["cache-control"], "public, max-age=31536000, immutable");
    let page = http.get(http_url(&on, "/")).send().await.expect("page");
    assert!(page.headers()["content-security-policy"].to_str().expect("csp").contains("default-src 'self'"));
    let body = page.text().await.expect("html");
    assert!(body.contains(&format!("<switchboard-chat agent-id=\"{AGENT}\"")), "{body}");
    cfg.widget.enabled = Some(false);
    let off = pod(cfg).await;
    assert_eq!(http.get(http_url(&off, "/")).send().await.expect("page").status(), 404);
    assert_eq!(http.get(http_url(&off, "/widget.js")).send().await.expect("js").status(), 200, "embeddable anyway");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_page_has_a_favicon() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.widget.enabled = Some(true);
    let pod = pod(cfg).await;
    let page = reqwest::get(http_url(&pod, "/")).await.expect("page").text().await.expect("html");
    assert!(page.contains(r#"rel="icon" href="/favicon.svg""#), "the page links its icon");
    for path in ["/favicon.svg", "/favicon.ico"] {
        let r = reqwest::get(http_url(&pod, path)).await.expect("icon");
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["content-type"], "image/svg+xml", "{path}");
        assert!(r.text().await.expect("svg").starts_with("<svg"), "{path}");
    }
}

/// An agent's greeting reaches clients that show it (the extended create ack) and leaves v1 acks as they are;
/// it is not a message of the conversation and the model never sees it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_greeting_opens_the_chat_for_extended_clients_only() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.agents[0].greeting = Some("Hi, how can I help?".into());
    let pod = pod(cfg).await;
    let mut ext = connect(&pod, true).await;
    ext.send(&json!({"action": "create_conversation_session", "requestId": "g", "agentId": AGENT})).await;
    let ack = ext.recv().await;
    assert_eq!(ack["data"]["greeting"], "Hi, how can I help?", "{ack}");
    let mut v1 = connect(&pod, false).await;
    v1.send(&json!({"action": "create_conversation_session", "requestId": "g1", "agentId": AGENT})).await;
    let ack = v1.recv().await;
    assert!(ack["data"].get("greeting").is_none(), "v1's ack keeps its shape: {ack}");
    let sid = ack["data"]["sessionId"].as_str().expect("sid").to_string();
    v1.send(&json!({"action": "get_conversation_messages", "requestId": "m", "sessionId": sid})).await;
    let messages = v1.recv_until(|v| v["requestId"] == "m").await;
    assert_eq!(messages.last().expect("page")["data"]["messages"], json!([]), "not stored in the conversation");
}

/// With `auth.mode = "jwt"` the demo page is off unless `widget.enabled` asks for it, and then it says first
/// that the widget needs a sign-in token (its socket would be refused without one).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_jwt_demo_page_says_a_token_is_needed() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.auth.mode = switchboard::config::AuthMode::Jwt;
    cfg.auth.jwt_hs256_secret = "a-jwt-secret-of-at-least-32-bytes!!".into();
    let off = pod(cfg.clone()).await;
    assert_eq!(reqwest::get(http_url(&off, "/")).await.expect("page").status(), 404, "off by default with jwt");
    cfg.widget.enabled = Some(true);
    let on = pod(cfg).await;
    let page = reqwest::get(http_url(&on, "/")).await.expect("page").text().await.expect("html");
    assert!(page.contains("This server needs a sign-in token."), "{page}");
    assert!(page.contains("<switchboard-chat"), "the widget is still there, for a page that adds a token");
    let open = pod(config(&llm, &tools)).await;
    let page = reqwest::get(http_url(&open, "/")).await.expect("page").text().await.expect("html");
    assert!(!page.contains("sign-in token"), "no note without jwt");
}
