//! `POST /api/chat/stream`: Server-Sent Events, and `Last-Event-ID` resume after a cut connection.

use futures_util::StreamExt;

use super::*;

/// One SSE event: (event, id, data). An id is the event's position in the log, `<seq>:<epoch>`.
type Sse = (String, Option<String>, Value);

/// The seq of an event id.
fn seq_of(id: &str) -> u64 {
    let (seq, epoch) = id.split_once(':').expect("ids are <seq>:<epoch>");
    assert!(!epoch.is_empty(), "{id}");
    seq.parse().expect("a numeric seq")
}

/// Reads SSE events from a response until `stop` says so (or the stream ends).
async fn read_events(resp: reqwest::Response, stop: impl Fn(&[Sse]) -> bool) -> Vec<Sse> {
    let mut body = resp.bytes_stream();
    let mut buf = String::new();
    let mut out: Vec<Sse> = Vec::new();
    while let Some(chunk) =
        tokio::time::timeout(std::time::Duration::from_secs(10), body.next()).await.expect("sse stalled")
    {
        buf.push_str(&String::from_utf8_lossy(&chunk.expect("chunk")));
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let (mut event, mut id, mut data) = (String::new(), None, String::new());
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event:") {
                    event = v.trim().to_string();
                } else if let Some(v) = line.strip_prefix("id:") {
                    id = Some(v.trim().to_string());
                } else if let Some(v) = line.strip_prefix("data:") {
                    data.push_str(v.trim());
                }
            }
            if event.is_empty() {
                continue; // a keep-alive comment
            }
            out.push((event, id, serde_json::from_str(&data).unwrap_or(Value::Null)));
            if stop(&out) {
                return out;
            }
        }
    }
    out
}

/// `POST /api/chat/stream` as caller `key`, resuming after `last_id` when given.
async fn open_stream(
    pod: &switchboard::server::Running,
    key: &str,
    last_id: Option<&str>,
    body: Value,
) -> reqwest::Response {
    let mut req = reqwest::Client::new().post(http_url(pod, "/api/chat/stream")).bearer_auth(key).json(&body);
    if let Some(id) = last_id {
        req = req.header("Last-Event-ID", id);
    }
    req.send().await.expect("stream")
}

fn deltas(events: &[Sse]) -> String {
    events.iter().filter(|e| e.0 == "text_delta").map(|e| e.2["content"].as_str().unwrap_or("")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn streams_a_turn_and_resumes_after_the_connection_is_cut() {
    let (llm, tools) = setup().await;
    let pod = pod(keyed(&llm, &tools)).await;
    let chunks = ["one ", "two ", "three ", "four ", "five"];
    llm.push(Reply::Slow { chunks: chunks.iter().map(|c| c.to_string()).collect(), delay_ms: 200, usage: None });
    let first = open_stream(&pod, KEY_A, None, json!({"message": "count", "namespace": "sse-1"})).await;
    assert_eq!(first.status(), 200);
    assert!(first.headers()["content-type"].to_str().unwrap_or("").starts_with("text/event-stream"));
    // Cut after two pieces of the reply.
    let seen = read_events(first, |e| e.iter().filter(|x| x.0 == "text_delta").count() == 2).await;
    let last_id = seen.last().and_then(|e| e.1.clone()).expect("events carry their position as id");

    let rest = open_stream(&pod, KEY_A, Some(&last_id), json!({"namespace": "sse-1"})).await;
    let rest = read_events(rest, |e| e.last().is_some_and(|x| x.0 == "response" || x.0 == "error")).await;
    let all: Vec<Sse> = seen.iter().cloned().chain(rest.iter().cloned()).collect();
    assert_eq!(deltas(&all), chunks.concat(), "every piece exactly once across the cut");
    let ids: Vec<u64> = all.iter().filter_map(|e| e.1.as_deref().map(seq_of)).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids increase: {ids:?}");
    let end = all.last().expect("end");
    assert_eq!(end.0, "response");
    assert_eq!(
        (end.2["message"].as_str(), end.2["namespace"].as_str()),
        (Some(chunks.concat().as_str()), Some("sse-1"))
    );
    assert_eq!(llm.request_count(), 1, "the resume started no turn");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_stream_ends_with_the_approval_request() {
    let (llm, tools) = setup().await;
    let pod = pod(keyed(&llm, &tools)).await;
    llm.push(Reply::tool_call("call-s", "delete_record", &json!({"id": "3"})));
    let resp = open_stream(&pod, KEY_A, None, json!({"message": "delete 3", "namespace": "sse-2"})).await;
    let events = read_events(resp, |_| false).await;
    let end = events.last().expect("an event");
    assert_eq!(end.0, "tool_approval_request");
    assert_eq!(
        end.2,
        json!({"call_id": "call-s", "tool_name": "delete_record", "arguments": {"id": "3"}, "namespace": "sse-2"})
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_dropped_and_resumes_from_the_log() {
    let (llm, tools) = setup().await;
    let pod = pod(keyed(&llm, &tools)).await;
    let chunks: Vec<String> = (0..40).map(|i| format!("w{i} ")).collect();
    llm.push(Reply::Slow { chunks: chunks.clone(), delay_ms: 10, usage: None });
    let stalled = open_stream(&pod, KEY_A, None, json!({"message": "many", "namespace": "sse-3"})).await;
    // The client reads nothing while the whole turn runs, then goes away.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while get(&pod, "/api/sessions/sse-3", Some(KEY_A)).await.1["turn"]["state"] != "idle" {
        assert!(tokio::time::Instant::now() < deadline, "the turn did not finish");
        sleep_ms(50).await;
    }
    drop(stalled);
    let resumed = open_stream(&pod, KEY_A, Some("0"), json!({"namespace": "sse-3"})).await;
    let events = read_events(resumed, |e| e.last().is_some_and(|x| x.0 == "response")).await;
    assert_eq!(deltas(&events), chunks.concat(), "the whole reply, from the log, once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resumes_that_cannot_be_served_are_refused_not_left_hanging() {
    let (llm, tools) = setup().await;
    let pod = pod(keyed(&llm, &tools)).await;
    llm.push(Reply::text(&["short"]));
    let (status, _) = post(&pod, "/api/chat", Some(KEY_A), json!({"message": "hi", "namespace": "sse-4"})).await;
    assert_eq!(status, 200);
    let resume = |id: &'static str, key: &'static str| open_stream(&pod, key, Some(id), json!({"namespace": "sse-4"}));
    let beyond = resume("999", KEY_A).await;
    assert_eq!(beyond.status(), 400, "an id beyond the log");
    let (_, shown) = get(&pod, "/api/sessions/sse-4", Some(KEY_A)).await;
    assert_eq!(shown["turn"]["state"], "idle");
    // The turn's events are all before this id: nothing to follow.
    let bounds = pod.backends().log.bounds(shown["session_id"].as_str().expect("sid")).await.expect("bounds");
    let at_end = open_stream(&pod, KEY_A, Some(&bounds.1.to_string()), json!({"namespace": "sse-4"})).await;
    assert_eq!(at_end.status(), 404);
    // From 0, the finished turn is replayed and the stream ends.
    let replay = read_events(resume("0", KEY_A).await, |_| false).await;
    assert_eq!(replay.last().map(|e| e.0.as_str()), Some("response"));
    assert_eq!(resume("0", KEY_B).await.status(), 404, "another caller's namespace");
    for bad in ["abc", "12:", "-3"] {
        let (status, body) = (resume(bad, KEY_A).await.status(), ());
        assert_eq!(status, 400, "Last-Event-ID {bad:?} is refused clearly {body:?}");
    }
    let bad = resume("abc", KEY_A).await.json::<Value>().await.expect("json");
    assert_eq!(bad["code"], "invalid_request", "{bad}");
    assert!(bad["error"].as_str().is_some_and(|e| e.contains("Last-Event-ID")), "{bad}");
}

/// The log of a namespace starts again (a flushed Redis, a failover to an empty replica): the namespace is
/// created again with a new log in a new epoch. An id from the old log must not be read in the new one: like a
/// socket `resume_session` from another epoch, the resume replays the new log from its oldest event, neither
/// refusing it as "beyond the log" nor skipping the new turn's first events.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_from_another_epoch_replays_the_new_log_like_a_socket_resume() {
    let (llm, tools) = setup().await;
    let redis = support::redis::RedisServer::start();
    let mut pods = pods(1, keyed(&llm, &tools), &Store::Redis(redis.url())).await;
    let pod = pods.remove(0);
    let old_reply = ["a ", "b ", "c ", "d ", "e ", "f ", "g ", "h"];
    llm.push(Reply::text(&old_reply));
    let first = open_stream(&pod, KEY_A, None, json!({"message": "long", "namespace": "sse-5"})).await;
    let old = read_events(first, |e| e.last().is_some_and(|x| x.0 == "response")).await;
    let old_id = old.last().and_then(|e| e.1.clone()).expect("an id");
    let (old_seq, old_epoch) = (seq_of(&old_id), old_id.split_once(':').map(|p| p.1.to_string()));

    assert_eq!(redis.cli(&["FLUSHALL"]).trim(), "OK");
    llm.push(Reply::text(&["new"]));
    let (status, body) = post(&pod, "/api/chat", Some(KEY_A), json!({"message": "again", "namespace": "sse-5"})).await;
    assert_eq!(status, 200, "{body}");

    let resumed = open_stream(&pod, KEY_A, Some(&old_id), json!({"namespace": "sse-5"})).await;
    assert_eq!(resumed.status(), 200, "an id of another epoch is not 'beyond the log'");
    let events = read_events(resumed, |e| e.last().is_some_and(|x| x.0 == "response")).await;
    assert_eq!(deltas(&events), "new", "the new turn, from the new log's start");
    let first_id = events.first().and_then(|e| e.1.clone()).expect("an id");
    let new_epoch = first_id.split_once(':').map(|p| p.1.to_string());
    assert_ne!(new_epoch, old_epoch, "the new log has its own epoch");
    assert!(old_seq > seq_of(events.last().and_then(|e| e.1.as_deref()).expect("id")), "the old id was past it");

    // The same position through the socket resume gives the same answer: not recovered, from the oldest.
    let mut c =
        support::ws::Client::connect_with(&format!("{}?token={KEY_A}", ws_url(&pod)), Some("switchboard"), None)
            .await
            .expect("ws");
    let sid = get(&pod, "/api/sessions/sse-5", Some(KEY_A)).await.1["session_id"].as_str().expect("sid").to_string();
    c.send(&json!({"action": "resume_session", "requestId": "r", "sessionId": sid, "afterSeq": old_seq,
                   "epoch": old_epoch}))
        .await;
    let ack = c.recv_until(|v| v["requestId"] == "r").await;
    let ack = ack.last().expect("ack");
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
}
