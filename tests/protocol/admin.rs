//! The admin API (§14): roles from the JWT `role` claim, every route for each role, another org's ids as
//! 404, bad tokens and bad bodies; per-org settings used by the next turn; per-org model keys.

use super::*;
use jsonwebtoken::{encode, EncodingKey, Header};

const SECRET: &str = "test-secret-of-32-bytes-0123456789";

fn jwt_config(llm: &FakeLlm, tools: &FakeTools) -> switchboard::config::Config {
    let mut cfg = config(llm, tools);
    cfg.auth.mode = switchboard::config::AuthMode::Jwt;
    cfg.auth.jwt_hs256_secret = SECRET.into();
    cfg
}

fn token(sub: &str, org: &str, role: Option<&str>) -> String {
    let mut claims = json!({"sub": sub, "org": org, "exp": chrono::Utc::now().timestamp() + 600});
    if let Some(r) = role {
        claims["role"] = json!(r);
    }
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).expect("jwt")
}

struct Admin {
    http: reqwest::Client,
    base: String,
}

impl Admin {
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        bearer: Option<&str>,
        body: Option<&str>,
    ) -> (u16, Value) {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b.to_string());
        }
        let resp = req.send().await.expect("send");
        let status = resp.status().as_u16();
        (status, resp.json().await.unwrap_or(Value::Null))
    }
    async fn get(&self, path: &str, bearer: Option<&str>) -> (u16, Value) {
        self.call(reqwest::Method::GET, path, bearer, None).await
    }
}

/// A conversation of `sub` in `org` with one exchange; returns its id.
async fn converse(pod: &switchboard::server::Running, llm: &FakeLlm, sub: &str, org: &str) -> String {
    let mut c = support::ws::Client::connect_with(&ws_url(pod), None, Some(&token(sub, org, None))).await.expect("ws");
    c.send(&json!({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT})).await;
    let r = c.recv().await;
    let sid = r["data"]["sessionId"].as_str().expect("sid").to_string();
    llm.push(Reply::text(&["hello ", sub]));
    send_message(&mut c, &sid, "m", &format!("hi from {sub}")).await;
    until_terminal(&mut c, "m").await;
    r["data"]["conversationId"].as_str().expect("cid").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_admin_route_answers_by_role_and_org() {
    let (llm, tools) = setup().await;
    let mut cfg = jwt_config(&llm, &tools);
    // The models an org admin may choose: the deployment's and the agents'.
    cfg.agents[0].models = vec!["acme-model".into()];
    let pod = pod(cfg).await;
    let a = Admin { http: reqwest::Client::new(), base: format!("http://{}", pod.addr) };
    let ann = converse(&pod, &llm, "ann", "acme").await;
    let bob = converse(&pod, &llm, "bob", "acme").await;
    let eve = converse(&pod, &llm, "eve", "globex").await;
    let (basic, curator, admin) = (
        token("ann", "acme", Some("user")),
        token("cur", "acme", Some("curator")),
        token("adm", "acme", Some("admin")),
    );

    // Who am I; bad tokens.
    assert_eq!(
        a.get("/admin/me", Some(&basic)).await,
        (200, json!({"userId": "ann", "orgId": "acme", "role": "basic"}))
    );
    assert_eq!(a.get("/admin/me", Some(&admin)).await.1["role"], "admin");
    assert_eq!(a.get("/admin/me", Some(&token("x", "acme", Some("overlord")))).await.1["role"], "basic");
    assert_eq!(a.get("/admin/me", None).await.1["error"]["code"], "UNAUTHENTICATED");
    let (status, body) = a.get("/admin/me", Some("not-a-jwt")).await;
    assert_eq!((status, body["error"]["code"].as_str()), (401, Some("INVALID_TOKEN")));
    // The verifier's own words (a library's error names) are not the client's.
    let message = body["error"]["message"].as_str().expect("message");
    assert!(message.starts_with("the token is not valid") && !message.contains("Error"), "{message}");

    // Conversations: basic sees its own, curator the org's, never another org's.
    let ids = |v: &Value| -> Vec<String> {
        let mut ids: Vec<String> = v["conversations"]
            .as_array()
            .expect("list")
            .iter()
            .map(|c| c["id"].as_str().unwrap_or("").to_string())
            .collect();
        ids.sort();
        ids
    };
    let (_, own) = a.get("/admin/conversations", Some(&basic)).await;
    assert_eq!(ids(&own), std::slice::from_ref(&ann));
    assert_eq!(own["conversations"][0]["messageCount"], 2);
    let (_, org) = a.get("/admin/conversations", Some(&curator)).await;
    let mut want = vec![ann.clone(), bob.clone()];
    want.sort();
    assert_eq!(ids(&org), want);
    assert!(!org.to_string().contains(&eve));
    let (_, first) = a.get("/admin/conversations?limit=1", Some(&curator)).await;
    let cursor = first["nextCursor"].as_str().expect("a second page").to_string();
    let (_, second) = a.get(&format!("/admin/conversations?limit=1&cursor={cursor}"), Some(&curator)).await;
    assert_eq!(second["conversations"].as_array().map(Vec::len), Some(1));
    assert_ne!(first["conversations"][0]["id"], second["conversations"][0]["id"]);
    assert!(second["nextCursor"].is_null());
    for bad in ["?limit=0", "?limit=101", "?limit=x", "?cursor=garbage"] {
        assert_eq!(a.get(&format!("/admin/conversations{bad}"), Some(&curator)).await.0, 400, "{bad}");
    }

    // Messages: own or curator+; another user's (for basic) and another org's are 404.
    let (status, msgs) = a.get(&format!("/admin/conversations/{ann}/messages"), Some(&basic)).await;
    assert_eq!(status, 200);
    assert_eq!(msgs["messages"][0]["content"]["text"], "hello ann");
    assert_eq!(a.get(&format!("/admin/conversations/{bob}/messages"), Some(&basic)).await.0, 404);
    assert_eq!(a.get(&format!("/admin/conversations/{bob}/messages"), Some(&curator)).await.0, 200);
    assert_eq!(a.get(&format!("/admin/conversations/{eve}/messages"), Some(&admin)).await.0, 404);
    assert_eq!(a.get("/admin/conversations/nope/messages", Some(&admin)).await.0, 404);

    // Settings: curators read, admins write; bad bodies are 400.
    assert_eq!(a.get("/admin/settings", Some(&basic)).await.1["error"]["code"], "FORBIDDEN");
    let (status, s) = a.get("/admin/settings", Some(&curator)).await;
    assert_eq!((status, &s["settings"]), (200, &json!({"model": null, "systemPrompt": null, "updatedAt": null})));
    let put = |t: String, body: &'static str| {
        let a = &a;
        async move { a.call(reqwest::Method::PUT, "/admin/settings", Some(&t), Some(body)).await }
    };
    assert_eq!(put(curator.clone(), r#"{"model":"gpt-4o"}"#).await.0, 403);
    let (status, body) = put(admin.clone(), r#"{"model":"gpt-5-pro-expensive"}"#).await;
    assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "a model no agent offers");
    assert!(body["error"]["message"].as_str().is_some_and(|m| m.contains("acme-model")), "{body}");
    assert_eq!(put(admin.clone(), r#"{"model":"gpt-4o-mini"}"#).await.0, 200, "the deployment's model");
    for bad in [r#"{"model":""}"#, r#"{"model":5}"#, r#"{"temperature":1}"#, "not json", "[1]"] {
        let (status, body) = put(admin.clone(), bad).await;
        assert_eq!((status, body["error"]["code"].as_str()), (400, Some("VALIDATION_ERROR")), "{bad}");
    }
    let (status, s) = put(admin.clone(), r#"{"model":"acme-model","systemPrompt":"You are Acme's agent."}"#).await;
    assert_eq!(status, 200);
    assert_eq!(s["settings"]["model"], "acme-model");
    assert!(s["settings"]["updatedAt"].is_string());
    // The next turn of the org uses them; another org's turn does not.
    converse(&pod, &llm, "ann", "acme").await;
    converse(&pod, &llm, "eve", "globex").await;
    let reqs = llm.requests();
    let (acme, globex) = (&reqs[reqs.len() - 2], &reqs[reqs.len() - 1]);
    assert_eq!(acme["model"], "acme-model");
    assert_eq!(acme["messages"][0]["content"], "You are Acme's agent.");
    assert_eq!(globex["model"], "gpt-4o-mini");
    assert_eq!(globex["messages"][0]["content"], "You are a helpful support agent.");
    // Clearing with null restores the deployment's.
    put(admin.clone(), r#"{"model":null}"#).await;
    assert_eq!(a.get("/admin/settings", Some(&admin)).await.1["settings"]["model"], Value::Null);

    // Connections: admins see their org's sockets only; others are refused.
    let _live =
        support::ws::Client::connect_with(&ws_url(&pod), None, Some(&token("ann", "acme", None))).await.expect("ws");
    let _foreign =
        support::ws::Client::connect_with(&ws_url(&pod), None, Some(&token("eve", "globex", None))).await.expect("ws");
    sleep_ms(100).await;
    assert_eq!(a.get("/admin/connections", Some(&curator)).await.0, 403);
    let (status, conns) = a.get("/admin/connections", Some(&admin)).await;
    assert_eq!(status, 200);
    let orgs: Vec<&str> =
        conns["connections"].as_array().expect("list").iter().filter_map(|c| c["orgId"].as_str()).collect();
    assert!(!orgs.is_empty() && orgs.iter().all(|o| *o == "acme"), "{conns}");
    assert_eq!(a.get("/admin/connections?org=globex", Some(&admin)).await.0, 404);
    // Operators with a publish key see any org's.
    let (status, ops) = a.get("/admin/connections?org=globex", Some("publish-key-0123456789")).await;
    assert_eq!(status, 200);
    assert!(ops["connections"].as_array().is_some_and(|l| !l.is_empty()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_org_with_its_own_model_key_is_billed_to_it() {
    let (llm, tools) = setup().await;
    let cfg = jwt_config(&llm, &tools);
    let toml = format!("{}\n[llm.org_keys]\nacme = \"SB_TEST_ACME_KEY\"\n", toml::to_string(&cfg).expect("toml"));
    // The key comes from the named environment variable (here given to the loader directly).
    let env = vec![("SB_TEST_ACME_KEY".to_string(), "sk-acme".to_string())];
    let loaded = switchboard::config::Config::load_text(Some(("test.toml", &toml)), env.clone()).expect("config");
    let missing = switchboard::config::Config::load_text(Some(("test.toml", &toml)), vec![]).expect_err("unset");
    assert!(missing.to_string().contains("SB_TEST_ACME_KEY"), "{missing}");
    assert!(!format!("{:?}", loaded.redacted()).contains("sk-acme"), "the key is redacted");
    let pod = pod(loaded).await;
    converse(&pod, &llm, "ann", "acme").await;
    converse(&pod, &llm, "eve", "globex").await;
    let auth = llm.auth_headers();
    assert_eq!(auth[auth.len() - 2].as_deref(), Some("Bearer sk-acme"));
    assert_eq!(auth[auth.len() - 1].as_deref(), Some("Bearer sk-test"));
}

/// A priced model's turns carry `usage.costUsd` (summed over the turn's model calls), are counted per org,
/// user, model and day (`GET /admin/usage`, curators and admins) and in `switchboard_cost_usd`; once an org has
/// spent `limits.org_monthly_usd` its next turn is `QUOTA_EXCEEDED`, another org's is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priced_turns_report_their_cost_count_it_and_stop_at_the_monthly_limit() {
    let (llm, tools) = setup().await;
    let mut cfg = jwt_config(&llm, &tools);
    cfg.llm.prices.insert(
        "gpt-4o-mini".into(),
        switchboard::config::ModelPrice { input_usd_per_mtok: 2.0, output_usd_per_mtok: 10.0 },
    );
    cfg.limits.org_monthly_usd = 0.001;
    let pod = pod(cfg).await;
    let a = Admin { http: reqwest::Client::new(), base: format!("http://{}", pod.addr) };
    // Two model calls in one turn: a tool call, then the answer. 100 + 200 input, 10 + 20 output tokens.
    llm.push(Reply::ToolCalls {
        calls: vec![("c1".into(), "lookup_order".into(), "{}".into())],
        usage: Some((100, 10)),
    });
    llm.push(Reply::text_with_usage(&["Done."], 200, 20));
    let mut c =
        support::ws::Client::connect_with(&ws_url(&pod), None, Some(&token("ann", "acme", None))).await.expect("ws");
    let sid = create_session(&mut c).await;
    send_message(&mut c, &sid, "m1", "order?").await;
    let end = until_terminal(&mut c, "m1").await.pop().expect("end");
    let usage = &end["data"]["data"]["usage"];
    assert_eq!((usage["promptTokens"].as_u64(), usage["completionTokens"].as_u64()), (Some(300), Some(30)));
    // 300 × $2 + 30 × $10 per million tokens = $0.0009.
    assert!((usage["costUsd"].as_f64().expect("cost") - 0.0009).abs() < 1e-12, "{usage}");
    check_v1_frame(&end).expect("a v1 frame");

    let curator = token("cur", "acme", Some("curator"));
    let (status, by_user) = a.get("/admin/usage?groupBy=user", Some(&curator)).await;
    assert_eq!(status, 200, "{by_user}");
    assert_eq!(by_user["rows"], json!([{"user": "ann", "inputTokens": 300, "outputTokens": 30, "costUsd": 0.0009}]));
    let (_, by_model) = a.get("/admin/usage?groupBy=model", Some(&curator)).await;
    assert_eq!(by_model["rows"][0]["model"], "gpt-4o-mini");
    let today = chrono::Utc::now().format("%Y-%m-%d").to_string();
    let (_, by_day) = a.get(&format!("/admin/usage?from={today}&to={today}"), Some(&curator)).await;
    assert_eq!(by_day["rows"][0]["day"], today.as_str());
    assert_eq!(by_day["total"]["inputTokens"], 300);
    assert_eq!(a.get("/admin/usage", Some(&token("ann", "acme", Some("user")))).await.0, 403, "curators and admins");
    for bad in ["?from=2026-13-01", "?groupBy=tool", "?from=2026-12-02&to=2026-12-01", "?from=2020-01-01&to=2026-01-01"]
    {
        assert_eq!(a.get(&format!("/admin/usage{bad}"), Some(&curator)).await.0, 400, "{bad}");
    }
    let (_, globex) = a.get("/admin/usage", Some(&token("g", "globex", Some("curator")))).await;
    assert_eq!(globex["rows"], json!([]), "another org's usage is its own");
    let metrics = scrape(&pod).await;
    assert!((metrics.value("switchboard_cost_usd_total", &[("model", "gpt-4o-mini")]) - 0.0009).abs() < 1e-9);

    // Another $0.0009 passes the $0.001 limit: the turn after it is refused, before it costs anything.
    llm.push(Reply::text_with_usage(&["Again."], 300, 30));
    send_message(&mut c, &sid, "m2", "again").await;
    until_terminal(&mut c, "m2").await;
    send_message(&mut c, &sid, "m3", "and again").await;
    let refused = c.recv_until(|v| v["requestId"] == "m3").await.pop().expect("reply");
    assert_eq!(refused["error"]["code"], "QUOTA_EXCEEDED", "{refused}");
    let mut other =
        support::ws::Client::connect_with(&ws_url(&pod), None, Some(&token("eve", "globex", None))).await.expect("ws");
    let other_sid = create_session(&mut other).await;
    llm.push(Reply::text(&["Hi Eve."]));
    send_message(&mut other, &other_sid, "g1", "hi").await;
    assert_eq!(until_terminal(&mut other, "g1").await.pop().expect("end")["type"], "eventual_response");
    // The REST door reports the cost too (herald's usage shape, plus `cost_usd`).
    llm.push(Reply::text_with_usage(&["Over REST."], 100, 0));
    let body: Value = reqwest::Client::new()
        .post(http_url(&pod, "/api/chat"))
        .bearer_auth(token("eve", "globex", None))
        .json(&json!({"message": "hi"}))
        .send()
        .await
        .expect("post")
        .json()
        .await
        .expect("json");
    assert!((body["usage"]["cost_usd"].as_f64().expect("cost") - 0.0002).abs() < 1e-12, "{body}");
}
