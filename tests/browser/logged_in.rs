//! A logged-in visitor, as a host embeds the widget: the host's own page (another origin) loads the script
//! from the pod and names `auth-context-url`, which the host's server answers with a freshly signed
//! authContext. The visitor's chat survives a pod drained mid-reply and page reloads (one mid-reply) on the
//! same session, without asking the host again: the resume token carries it. A session that is gone is said
//! so and replaced by a new one.

use super::*;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

const SECRET: &str = "host-widget-secret-of-32-bytes-long!";

/// The host application: a page with the widget and its authContext endpoint (it counts the calls).
struct Host {
    addr: std::net::SocketAddr,
    signed: Arc<AtomicUsize>,
}

impl Host {
    async fn start(script: String, endpoint: String) -> Host {
        let signed = Arc::new(AtomicUsize::new(0));
        let page = format!(
            "<!doctype html><html><head><meta charset=\"utf-8\"><title>Shop</title>\
             <script type=\"module\" src=\"{script}\"></script>\
             <style>switchboard-chat {{ display: block; height: 30rem; }}</style></head><body>\
             <switchboard-chat agent-id=\"{AGENT}\" endpoint=\"{endpoint}\" auth-context-url=\"/auth-context\">\
             </switchboard-chat></body></html>"
        );
        let counter = signed.clone();
        let app = axum::Router::new()
            .route("/", axum::routing::get(move || async move { axum::response::Html(page) }))
            .route(
                "/auth-context",
                axum::routing::get(move || {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move { axum::Json(sign("alice")) }
                }),
            );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Host { addr, signed }
    }

    fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }

    fn times_signed(&self) -> usize {
        self.signed.load(Ordering::SeqCst)
    }
}

/// What the host's server computes for its logged-in user.
fn sign(user: &str) -> Value {
    let ts = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).expect("clock").as_secs();
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes());
    let sig: String = ring::hmac::sign(&key, format!("{AGENT}:{user}:{ts}").as_bytes())
        .as_ref()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    json!({"userId": user, "timestamp": ts, "signature": sig})
}

async fn session_id(b: &Browser) -> String {
    let sid = b.wait_for("a session", "return document.querySelector('switchboard-chat').sessionId;", WAIT).await;
    sid.as_str().expect("session id").to_string()
}

/// How many shown messages have exactly `text`.
async fn shown(b: &Browser, class: &str, text: &str) -> usize {
    let script = format!(
        "{ROOT} return [...r.querySelectorAll('.msg.{class}')].filter(m => m.textContent === arguments[0]).length;"
    );
    b.eval(&script, vec![json!(text)]).await.as_u64().unwrap_or(0) as usize
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_logged_in_visitor_keeps_the_chat_through_a_drain_and_reloads() {
    let (llm, tools) = setup().await;
    let mut cfg = widget_config(&llm, &tools);
    cfg.agents[0].widget_secret = SECRET.into();
    let redis = support::redis::RedisServer::start();
    let p = pods(2, cfg, &Store::Redis(redis.url())).await;
    let lb = support::proxy::Proxy::start(p[0].addr).await;
    let host = Host::start(http_url(&p[0], "/widget.js"), format!("ws://{}/ws", lb.addr)).await;
    let b = Browser::start().await;
    b.client.goto(&host.url()).await.expect("host page");
    let sid = session_id(&b).await;
    assert_eq!(host.times_signed(), 1, "the host signed once, for the new session");

    // A pod drained mid-reply: the socket comes back anonymous and resumes with the resume token.
    let words: Vec<String> = (0..30).map(|i| format!("w{i} ")).collect();
    llm.push(Reply::Slow { chunks: words.clone(), delay_ms: 50, usage: None });
    say(&b, "tell me a long story").await;
    b.wait_for(
        "the reply to start",
        &format!("{ROOT} return r.querySelector('.msg.assistant')?.textContent.includes('w3 ');"),
        WAIT,
    )
    .await;
    lb.route_to(p[1].addr);
    p[0].drain();
    assert_eq!(reply(&b, 0).await, words.concat(), "every token once, in order");
    assert_eq!(session_id(&b).await, sid, "the same session");
    let lost = b.eval(&format!("{ROOT} return !!r.querySelector('[data-state=new-conversation]');"), vec![]).await;
    assert_eq!(lost, json!(false), "the conversation was not lost");
    llm.push(Reply::text(&["Still here, Alice."]));
    say(&b, "are you there").await;
    assert_eq!(reply(&b, 1).await, "Still here, Alice.");
    b.screenshot("logged_in_after_drain").await;

    // A reload: the conversation is shown again and goes on, on the same session.
    b.client.refresh().await.expect("reload");
    assert_eq!(session_id(&b).await, sid);
    b.wait_for("the history", &format!("{ROOT} return r.querySelectorAll('.msg').length >= 4;"), WAIT).await;
    assert_eq!(shown(&b, "user", "tell me a long story").await, 1);
    assert_eq!(shown(&b, "assistant", "Still here, Alice.").await, 1);
    llm.push(Reply::text(&["Welcome back."]));
    say(&b, "hello again").await;
    assert_eq!(reply(&b, 2).await, "Welcome back.");

    // A reload mid-reply: the reply is shown whole, once, and finishes.
    let slow: Vec<String> = (0..25).map(|i| format!("s{i} ")).collect();
    llm.push(Reply::Slow { chunks: slow.clone(), delay_ms: 60, usage: None });
    say(&b, "and another story").await;
    b.wait_for(
        "the reply to start",
        &format!("{ROOT} return [...r.querySelectorAll('.msg.assistant')].some(m => m.textContent.includes('s3 '));"),
        WAIT,
    )
    .await;
    b.client.refresh().await.expect("reload mid-reply");
    let whole = serde_json::to_string(&slow.concat()).expect("json");
    b.wait_for(
        "the whole reply after the reload",
        &format!("{ROOT} return r.querySelector('.stop').hidden && [...r.querySelectorAll('.msg.assistant')].some(m => m.textContent === {whole});"),
        WAIT,
    )
    .await;
    assert_eq!(shown(&b, "assistant", &slow.concat()).await, 1, "once");
    assert_eq!(shown(&b, "user", "and another story").await, 1);
    assert_eq!(session_id(&b).await, sid);
    assert_eq!(host.times_signed(), 1, "the resume token carried every reconnect; the host was not asked again");
    b.screenshot("logged_in_after_reload").await;

    // The session is gone (here: Redis flushed): the widget asks the host for a fresh authContext once, then
    // says the conversation ended and starts a new one, instead of failing quietly.
    redis.cli(&["FLUSHALL"]);
    b.client.refresh().await.expect("reload");
    b.wait_for(
        "the lost-session note",
        &format!("{ROOT} return !!r.querySelector('[data-state=new-conversation]');"),
        WAIT,
    )
    .await;
    let fresh = b
        .wait_for(
            "a new session",
            &format!(
                "return (s => s && s !== {} && s)(document.querySelector('switchboard-chat').sessionId);",
                json!(sid)
            ),
            WAIT,
        )
        .await;
    assert!(fresh.is_string());
    assert_eq!(host.times_signed(), 3, "once to retry the resume, once for the new session");
    llm.push(Reply::text(&["Hello again, from the start."]));
    say(&b, "hi").await;
    assert_eq!(reply(&b, 0).await, "Hello again, from the start.");
    b.screenshot("logged_in_session_lost").await;
    b.close().await;
}
