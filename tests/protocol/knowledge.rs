//! Knowledge and citations (§11): the built-in index (English stemming), auto-context, `knowledge_search`,
//! the citation rules on `eventual_response`, and a retrieval webhook that fails without failing the turn.

use super::*;
use switchboard::config::KnowledgeDocument;

fn doc(id: &str, title: &str, url: Option<&str>, content: &str) -> KnowledgeDocument {
    KnowledgeDocument {
        id: id.into(),
        title: title.into(),
        url: url.map(str::to_string),
        content: content.into(),
        sets: vec![],
    }
}

fn citations(frames: &[Value]) -> Option<Value> {
    frames.last().and_then(|f| f["data"]["data"].get("citations").cloned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_cite_the_documents_that_grounded_them() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    let long = format!("Returns of opened items: {}", "restocking fees apply. ".repeat(30));
    cfg.knowledge.documents = vec![
        doc(
            "returns",
            "Returns policy",
            Some("https://help.example/returns"),
            "Returns are accepted within 30 days of delivery.",
        ),
        doc("opened", "Opened items", Some("file:///etc/passwd"), &long),
        doc("shipping", "Shipping", None, "Standard shipping takes 5 to 7 business days."),
    ];
    let dir = tempfile::tempdir().expect("dir");
    std::fs::write(dir.path().join("warranty.md"), "Every device carries a two year warranty.").expect("write");
    cfg.knowledge.dir = dir.path().to_string_lossy().into_owned();
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    // "return" finds "Returns" (stemming); the model also searches for shipping and the warranty.
    llm.push(Reply::tool_call("k1", "knowledge_search", &json!({"query": "how long does shipping take"})));
    llm.push(Reply::tool_call("k2", "knowledge_search", &json!({"query": "warranty"})));
    llm.push(Reply::text(&["Within 30 days."]));
    send_message(&mut c, &sid, "r-1", "can I return my order").await;
    let frames = until_terminal(&mut c, "r-1").await;
    assert_v1(&frames);
    let first = &llm.requests()[0];
    let context = first["messages"].as_array().expect("msgs").iter().find(|m| {
        m["role"] == "system" && m["content"].as_str().is_some_and(|t| t.starts_with("[Relevant knowledge]"))
    });
    assert!(context.expect("context given to the model")["content"].as_str().unwrap_or("").contains("30 days"));
    assert!(first["tools"].to_string().contains("knowledge_search"));
    let cited = citations(&frames).expect("citations");
    let ids: Vec<&str> = cited.as_array().expect("array").iter().filter_map(|c| c["id"].as_str()).collect();
    assert_eq!(ids.first(), Some(&"returns"), "auto-context first: {cited}");
    assert!(ids.contains(&"shipping") && ids.contains(&"warranty.md"), "tool hits after: {cited}");
    let mut seen = ids.clone();
    seen.sort();
    seen.dedup();
    assert_eq!(seen.len(), ids.len(), "de-duplicated by id: {cited}");
    for c in cited.as_array().expect("array") {
        assert!(c["snippet"].as_str().expect("snippet").chars().count() <= 280, "{c}");
        assert!(c["score"].is_number());
        if let Some(url) = c.get("url") {
            assert!(url.as_str().is_some_and(|u| u.starts_with("https://")), "only http(s) urls: {c}");
        }
    }
    let returns = &cited[0];
    assert_eq!(returns["url"], "https://help.example/returns");
    if let Some(opened) = cited.as_array().expect("array").iter().find(|c| c["id"] == "opened") {
        assert!(opened.get("url").is_none(), "a file: url is dropped: {opened}");
        assert!(opened["snippet"].as_str().unwrap_or("").ends_with('…'), "{opened}");
    }
    // A message that matches nothing has no citations key at all.
    llm.push(Reply::text(&["Hello!"]));
    send_message(&mut c, &sid, "r-2", "zzzz qqqq").await;
    let frames = until_terminal(&mut c, "r-2").await;
    assert!(frames.last().expect("end")["data"]["data"].get("citations").is_none(), "{:?}", frames.last());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retrieval_webhook_is_used_and_its_failures_do_not_fail_the_turn() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.knowledge.search_url = tools.url("search");
    cfg.knowledge.timeout_ms = 300;
    cfg.agents[0].knowledge_sets = Some(vec!["billing".into()]);
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    let sid = create_session(&mut c).await;
    let hit = json!({"results": [{"id": "kb-1", "title": "Invoices", "url": "https://kb.example/1", "snippet": "Invoices are sent monthly.", "score": 0.9}]});
    // A good answer is cited.
    tools.set("search", Behaviour::Raw(hit.clone()));
    llm.push(Reply::text(&["Monthly."]));
    send_message(&mut c, &sid, "r-ok", "when are invoices sent").await;
    let frames = until_terminal(&mut c, "r-ok").await;
    assert_v1(&frames);
    assert_eq!(citations(&frames), Some(hit["results"].clone()));
    // `{"result": …}` is not the contract (garbage), nor are a 500, a timeout or a body that is not JSON.
    let cases = [Behaviour::Ok(hit.clone()), Behaviour::Status(500), Behaviour::Delay(1_000, hit), Behaviour::BadJson];
    for (i, behaviour) in cases.into_iter().enumerate() {
        tools.set("search", behaviour);
        llm.push(Reply::text(&["ok"]));
        let rid = format!("r-{i}");
        send_message(&mut c, &sid, &rid, "when are invoices sent").await;
        let frames = until_terminal(&mut c, &rid).await;
        assert_eq!(frames.last().expect("end")["type"], "eventual_response", "case {i}: the turn goes on");
        assert!(citations(&frames).is_none(), "case {i}: no usable results, no citations");
    }
    let calls = tools.calls("search");
    assert_eq!(calls.len(), 5);
    assert_eq!(calls[0].body["query"], "when are invoices sent");
    assert_eq!(calls[0].body["k"], 3);
    assert_eq!(calls[0].body["orgId"], "default");
    assert_eq!(calls[0].body["agentId"], AGENT);
    assert_eq!(calls[0].body["sets"], json!(["billing"]));
}
