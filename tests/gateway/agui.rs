//! AG-UI 1.0 driven by its official client (`@ag-ui/client`'s `HttpAgent`, run by Node), which validates every
//! event and the run's sequencing: a streamed run, an approval interrupt answered by a run on another pod, an
//! interaction interrupt, a frontend tool round trip, a thread continued by a fresh client, and bad inputs; on
//! memory and on Redis.

use super::*;
use support::agui::AguiClient;

fn types(answer: &Value) -> Vec<String> {
    answer["events"]
        .as_array()
        .map_or_else(Vec::new, |e| e.iter().map(|e| e["type"].as_str().unwrap_or("").to_string()).collect())
}

fn agent(url: String, thread: &str, key: &str) -> Value {
    json!({"op": "agent", "url": url, "threadId": thread, "headers": {"Authorization": format!("Bearer {key}")}})
}

fn agui(pod: &switchboard::server::Running) -> String {
    http_url(pod, "/agui")
}

/// Each scenario as two tests: on one memory store and on a real Redis.
macro_rules! on_memory_and_redis {
    ($($memory:ident, $redis:ident => $scenario:ident;)*) => {$(
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $memory() {
            let (llm, tools) = setup().await;
            let store = memory_store(&keyed(&llm, &tools));
            $scenario(llm, tools, store).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $redis() {
            let (llm, tools) = setup().await;
            let redis = support::redis::RedisServer::start();
            $scenario(llm, tools, Store::Redis(redis.url())).await;
        }
    )*};
}

on_memory_and_redis! {
    official_client_runs_interrupts_across_pods_and_threads_on_memory,
    official_client_runs_interrupts_across_pods_and_threads_on_redis => streamed_run_approval_across_pods_and_a_fresh_client;
    an_interaction_interrupt_and_a_frontend_tool_round_trip_on_memory,
    an_interaction_interrupt_and_a_frontend_tool_round_trip_on_redis => interaction_and_frontend_tool;
    bad_inputs_are_refused_and_threads_are_the_callers_own_on_memory,
    bad_inputs_are_refused_and_threads_are_the_callers_own_on_redis => bad_inputs;
    a_dropped_stream_reconnects_to_the_rest_of_its_run_on_memory,
    a_dropped_stream_reconnects_to_the_rest_of_its_run_on_redis => dropped_stream;
}

async fn streamed_run_approval_across_pods_and_a_fresh_client(llm: FakeLlm, tools: FakeTools, store: Store) {
    tools.set("delete_record", Behaviour::Ok(json!("record 7 deleted")));
    let p = pods(2, keyed(&llm, &tools), &store).await;
    let mut c = AguiClient::start().await;
    assert_eq!(c.cmd(agent(agui(&p[0]), "thread-1", KEY_A)).await["ok"], true);

    // A streamed run.
    llm.push(Reply::text_with_usage(&["Hello ", "from ", "Aria."], 12, 3));
    let a = c.cmd(json!({"op": "say", "text": "hi"})).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(
        types(&a),
        [
            "RUN_STARTED",
            "MESSAGES_SNAPSHOT",
            "TEXT_MESSAGE_START",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_CONTENT",
            "TEXT_MESSAGE_END",
            "RUN_FINISHED"
        ],
        "{a}"
    );
    assert_eq!(a["outcome"]["type"], "success");
    let finished = a["events"].as_array().expect("events").last().cloned().expect("RUN_FINISHED");
    assert_eq!(finished["type"], "RUN_FINISHED");
    assert_eq!(
        finished["usage"],
        json!([{"inputTokens": 12, "outputTokens": 3, "totalTokens": 15}]),
        "validated by the client"
    );
    let last = a["messages"].as_array().expect("messages").last().cloned().expect("a message");
    assert_eq!((last["role"].as_str(), last["content"].as_str()), (Some("assistant"), Some("Hello from Aria.")));

    // A gated tool: the run ends with an interrupt; a run on the other pod answers it and the turn goes on.
    llm.push(Reply::tool_call("call-del", "delete_record", &json!({"id": "7"})));
    llm.push(Reply::text(&["Deleted record 7."]));
    let a = c.cmd(json!({"op": "say", "text": "delete record 7"})).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["outcome"]["type"], "interrupt", "{a}");
    let interrupt = &a["outcome"]["interrupts"][0];
    assert_eq!((interrupt["id"].as_str(), interrupt["reason"].as_str()), (Some("call-del"), Some("confirmation")));
    assert_eq!(a["pending"], json!(["call-del"]));
    assert!(
        types(&a).ends_with(&[
            "TOOL_CALL_START".into(),
            "TOOL_CALL_ARGS".into(),
            "TOOL_CALL_END".into(),
            "RUN_FINISHED".into()
        ]),
        "{a}"
    );
    assert!(tools.calls("delete_record").is_empty(), "nothing ran before the approval");
    c.cmd(json!({"op": "url", "url": agui(&p[1])})).await;
    let a = c
        .cmd(json!({"op": "resume", "interruptId": "call-del", "status": "resolved", "payload": {"approved": true}}))
        .await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["outcome"]["type"], "success", "{a}");
    assert!(types(&a).contains(&"TOOL_CALL_RESULT".to_string()), "{a}");
    assert!(!types(&a).contains(&"TOOL_CALL_START".to_string()), "the call is not shown again");
    assert_eq!(tools.calls("delete_record").len(), 1);
    assert_eq!(a["pending"], json!([]));
    let result = a["events"].as_array().expect("events").iter().find(|e| e["type"] == "TOOL_CALL_RESULT").cloned();
    assert_eq!(result.expect("result")["toolCallId"], "call-del");

    // A fresh client on the same thread (another device) sees the stored thread and goes on.
    let mut fresh = AguiClient::start().await;
    fresh.cmd(agent(agui(&p[1]), "thread-1", KEY_A)).await;
    llm.push(Reply::text(&["Still here."]));
    let a = fresh.cmd(json!({"op": "say", "text": "are you there"})).await;
    assert_eq!(a["ok"], true, "{a}");
    let snapshot = a["events"].as_array().expect("events").iter().find(|e| e["type"] == "MESSAGES_SNAPSHOT").cloned();
    assert_eq!(snapshot.expect("snapshot")["count"], 5, "hi, its answer, the delete, its answer, this message");
    let texts: Vec<&str> = a["messages"].as_array().expect("m").iter().filter_map(|m| m["content"].as_str()).collect();
    assert_eq!(
        texts,
        ["hi", "Hello from Aria.", "delete record 7", "Deleted record 7.", "are you there", "Still here."]
    );
    let (status, stored) = get(&p[0], "/agui/threads/thread-1/messages", Some(KEY_A)).await;
    assert_eq!(status, 200);
    assert_eq!(stored["messages"].as_array().map(Vec::len), Some(6));
    // The same thread is an orra namespace of the caller.
    let (_, list) = get(&p[0], "/api/sessions", Some(KEY_A)).await;
    assert!(list.as_array().expect("list").iter().any(|s| s["namespace"] == "thread-1"));
}

async fn interaction_and_frontend_tool(llm: FakeLlm, tools: FakeTools, store: Store) {
    let pod = pods(1, keyed(&llm, &tools), &store).await.remove(0);
    let mut c = AguiClient::start().await;
    c.cmd(agent(agui(&pod), "thread-2", KEY_A)).await;

    // An interaction card is an interrupt; values that do not fit ask again; good values resume the turn.
    llm.push(Reply::tool_call(
        "call-i",
        "request_identity_intake",
        &json!({"fields": ["email"], "reason": "to send the quote"}),
    ));
    llm.push(Reply::text(&["Quote on its way."]));
    let a = c.cmd(json!({"op": "say", "text": "a quote please"})).await;
    assert_eq!(a["outcome"]["type"], "interrupt", "{a}");
    let interrupt = a["outcome"]["interrupts"][0].clone();
    assert_eq!(interrupt["reason"], "input_required");
    assert_eq!(interrupt["metadata"]["kind"], "identity_intake");
    let iid = interrupt["id"].as_str().expect("id").to_string();
    let a =
        c.cmd(json!({"op": "resume", "interruptId": iid, "status": "resolved", "payload": {"email": "nope"}})).await;
    assert_eq!(a["outcome"]["type"], "interrupt", "asked again: {a}");
    assert!(a["outcome"]["interrupts"][0]["metadata"]["refused"]["errors"].to_string().contains("email"), "{a}");
    let a = c
        .cmd(json!({"op": "resume", "interruptId": iid, "status": "resolved", "payload": {"email": "ada@example.com"}}))
        .await;
    assert_eq!(a["outcome"]["type"], "success", "{a}");
    let last = a["messages"].as_array().expect("m").last().cloned().expect("last");
    assert_eq!(last["content"], "Quote on its way.");

    // A frontend tool: offered to the model; its call ends the run; the client's result continues the turn.
    let tool = json!([{"name": "get_location", "description": "Where the user is", "parameters": {"type": "object", "properties": {}}}]);
    llm.push(Reply::tool_call("call-loc", "get_location", &json!({})));
    let a = c.cmd(json!({"op": "say", "text": "what's the weather here", "tools": tool})).await;
    assert_eq!(a["ok"], true, "{a}");
    assert_eq!(a["outcome"]["type"], "success", "{a}");
    let call = a["messages"]
        .as_array()
        .expect("m")
        .iter()
        .flat_map(|m| m["toolCalls"].as_array().cloned().unwrap_or_default())
        .last();
    assert_eq!(call.expect("the call")["name"], "get_location");
    let offered = llm.requests().last().cloned().expect("a model request");
    assert!(offered["tools"].to_string().contains("get_location"), "the model was offered the client's tool");
    llm.push(Reply::text(&["It is sunny in Lisbon."]));
    let a = c.cmd(json!({"op": "tool", "toolCallId": "call-loc", "content": "Lisbon", "tools": tool})).await;
    assert_eq!(a["ok"], true, "{a}");
    let last = a["messages"].as_array().expect("m").last().cloned().expect("last");
    assert_eq!(last["content"], "It is sunny in Lisbon.");
    let sent = llm.requests().last().cloned().expect("the continuation");
    let tail = sent["messages"].as_array().expect("messages");
    let n = tail.len();
    assert_eq!(tail[n - 2]["tool_calls"][0]["id"], "call-loc", "the model's call, then the client's result");
    assert_eq!((tail[n - 1]["role"].as_str(), tail[n - 1]["content"].as_str()), (Some("tool"), Some("Lisbon")));
}

async fn bad_inputs(llm: FakeLlm, tools: FakeTools, store: Store) {
    let pod = pods(1, keyed(&llm, &tools), &store).await.remove(0);
    let http = reqwest::Client::new();
    let post = |body: Value, key: &'static str| {
        http.post(agui(&pod)).bearer_auth(key).header("Accept", "text/event-stream").json(&body).send()
    };
    let r = post(json!({"runId": "r", "messages": [{"id": "m", "role": "user", "content": "hi"}]}), KEY_A)
        .await
        .expect("post");
    assert_eq!(r.status(), 400, "missing threadId");
    let r = post(json!({"threadId": "t", "runId": "r", "messages": []}), KEY_A).await.expect("post");
    assert_eq!(r.status(), 400, "no message");
    let r = post(
        json!({"threadId": "../x", "runId": "r", "messages": [{"id": "m", "role": "user", "content": "hi"}]}),
        KEY_A,
    )
    .await
    .expect("post");
    assert_eq!(r.status(), 400);
    assert_eq!(http.post(agui(&pod)).json(&json!({})).send().await.expect("post").status(), 401, "auth as /api");

    // Alice's thread is not Bob's: his reads and answers find nothing.
    let mut alice = AguiClient::start().await;
    alice.cmd(agent(agui(&pod), "private", KEY_A)).await;
    llm.push(Reply::tool_call("call-del", "delete_record", &json!({"id": "1"})));
    let a = alice.cmd(json!({"op": "say", "text": "delete record 1"})).await;
    assert_eq!(a["outcome"]["type"], "interrupt");
    assert_eq!(get(&pod, "/agui/threads/private/messages", Some(KEY_B)).await.0, 404);
    let mut bob = AguiClient::start().await;
    bob.cmd(agent(agui(&pod), "private", KEY_B)).await;
    let b = bob
        .cmd(json!({"op": "resume", "interruptId": "call-del", "status": "resolved", "payload": {"approved": true}}))
        .await;
    assert_eq!(b["ok"], false);
    assert!(b["error"].as_str().is_some_and(|e| e.contains("404")), "{b}");
    // An unknown interrupt id on her own thread.
    let mut other = AguiClient::start().await;
    other.cmd(agent(agui(&pod), "private", KEY_A)).await;
    let o = other.cmd(json!({"op": "resume", "interruptId": "nope", "status": "resolved", "payload": {}})).await;
    assert!(o["error"].as_str().is_some_and(|e| e.contains("404")), "{o}");
    assert!(tools.calls("delete_record").is_empty());
}

/// Reads SSE events from `resp` until `until` returns true for one (or the stream ends): `(id, event)` each.
async fn read_sse(resp: reqwest::Response, until: impl Fn(&Value) -> bool) -> Vec<(Option<String>, Value)> {
    use futures_util::StreamExt;
    let mut out = Vec::new();
    let mut buf = String::new();
    let mut body = resp.bytes_stream();
    while let Some(chunk) = body.next().await {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buf.find("\n\n") {
            let frame: String = buf.drain(..end + 2).collect();
            let id = frame
                .lines()
                .find_map(|l| l.strip_prefix("id: ").or_else(|| l.strip_prefix("id:")))
                .map(str::to_string);
            let data: String =
                frame.lines().filter_map(|l| l.strip_prefix("data: ").or_else(|| l.strip_prefix("data:"))).collect();
            if data.is_empty() {
                continue;
            }
            let event: Value = serde_json::from_str(&data).expect("an event is JSON");
            let stop = until(&event);
            out.push((id, event));
            if stop {
                return out;
            }
        }
    }
    out
}

/// A client whose stream drops mid-run posts the same input with `Last-Event-ID` and gets the rest of that
/// run (no new turn): every delta once, then `RUN_FINISHED`.
async fn dropped_stream(llm: FakeLlm, tools: FakeTools, store: Store) {
    let pod = pods(1, keyed(&llm, &tools), &store).await.remove(0);
    let words: Vec<String> = (0..20).map(|i| format!("w{i} ")).collect();
    llm.push(Reply::Slow { chunks: words.clone(), delay_ms: 30, usage: None });
    let input =
        json!({"threadId": "drop", "runId": "run-1", "messages": [{"id": "u", "role": "user", "content": "story"}]});
    let http = reqwest::Client::new();
    let first = http.post(agui(&pod)).bearer_auth(KEY_A).json(&input).send().await.expect("post");
    let seen = read_sse(first, |e| e["type"] == "TEXT_MESSAGE_CONTENT" && e["delta"] == "w4 ").await;
    let last_id = seen.iter().rev().find_map(|(id, _)| id.clone()).expect("log events carry ids");
    let again = http
        .post(agui(&pod))
        .bearer_auth(KEY_A)
        .header("Last-Event-ID", &last_id)
        .json(&input)
        .send()
        .await
        .expect("reconnect");
    assert_eq!(again.status(), 200);
    let rest = read_sse(again, |e| e["type"] == "RUN_FINISHED").await;
    let deltas: String = seen
        .iter()
        .chain(rest.iter())
        .filter(|(_, e)| e["type"] == "TEXT_MESSAGE_CONTENT")
        .map(|(_, e)| e["delta"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(deltas, words.concat(), "every delta once, in order");
    let rest_types: Vec<&str> = rest.iter().map(|(_, e)| e["type"].as_str().unwrap_or("")).collect();
    assert_eq!(rest_types.first(), Some(&"TEXT_MESSAGE_CONTENT"), "no second RUN_STARTED: {rest_types:?}");
    assert_eq!(rest_types[rest_types.len() - 2..], ["TEXT_MESSAGE_END", "RUN_FINISHED"]);
    assert_eq!(llm.requests().len(), 1, "no new turn");
    let bad = http.post(agui(&pod)).bearer_auth(KEY_A).header("Last-Event-ID", "garbage").json(&input).send().await;
    assert_eq!(bad.expect("post").status(), 400);
}
