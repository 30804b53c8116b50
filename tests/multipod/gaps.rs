//! Gap repair never skips: a live socket that is missing events the log cannot give back (never logged, or
//! trimmed away while the pod's pub/sub connection was down) gets `reconnect` and close 4000, so its client
//! resumes, instead of silently jumping over the hole.

use super::*;

/// Reads frames until the server closes; returns the frames before the close and the close code.
async fn until_closed(c: &mut Client) -> (Vec<serde_json::Value>, Option<u16>) {
    let mut frames = Vec::new();
    loop {
        match c.recv_raw_timeout(Duration::from_secs(15)).await {
            Some(Frame::Text(v)) => frames.push(v),
            Some(Frame::Close(code)) => return (frames, code),
            other => panic!("expected frames then a close, got {other:?} after {frames:?}"),
        }
    }
}

fn token_event(token: &str) -> String {
    json!({"type": "stream_token", "requestId": "r-x", "token": token, "data": {"requestId": "r-x", "token": token}})
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_event_the_log_does_not_hold_is_not_skipped_over() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let p = pods(1, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::text(&["hello"]));
    send_message(&mut a, &sid, "r-1", "hi").await;
    let frames = until_terminal(&mut a, "r-1").await;
    let last = frames.iter().filter_map(|f| f["seq"].as_u64()).max().expect("seq");

    // The bus says event last+3 exists; the log has nothing after `last`: a hole the pod cannot fill.
    let channel = format!("{}:{{{sid}}}:events", p[0].config().redis_key_prefix);
    redis.cli(&["PUBLISH", &channel, &format!("{}:{}", last + 3, token_event("ghost"))]);
    let (frames, code) = until_closed(&mut a).await;
    assert_eq!(code, Some(4000), "{frames:?}");
    assert!(frames.iter().all(|f| f["token"] != "ghost"), "the event after the hole is not shown: {frames:?}");
    assert_eq!(frames.last().map(|f| f["type"].clone()), Some(json!("reconnect")), "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_socket_whose_next_event_was_trimmed_away_is_told_to_resume() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut cfg = config(&llm, &tools);
    cfg.limits.log_len = 5;
    let p = pods(1, cfg, &Store::Redis(redis.url())).await;
    let writer = switchboard::backend::redis::connect(p[0].config()).await.expect("connect");
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    writer.log.append(&sid, &token_event("first")).await.expect("append");
    let got = a.recv_until(|f| f["token"] == "first").await;
    assert_eq!(got.last().expect("frame")["seq"], 1);

    // The pod's pub/sub connection drops; twenty events are logged meanwhile, one append each (the log keeps
    // the batches that hold its last five seqs), so the socket's next event (seq 2) is gone by the time the pod
    // has resubscribed and re-reads the log.
    redis.cli(&["CLIENT", "KILL", "TYPE", "pubsub"]);
    for i in 2..=21 {
        writer.log.append(&sid, &token_event(&format!("t{i}"))).await.expect("append");
    }
    let (frames, code) = until_closed(&mut a).await;
    assert_eq!(code, Some(4000), "{frames:?}");
    assert!(frames.iter().all(|f| f["type"] != "stream_token"), "no jump to seq 17: {frames:?}");

    // Resuming says what was lost and replays what is kept.
    let mut b = connect(&p[0], true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 1})).await;
    let ack = b.recv_until(|f| f["requestId"] == "res").await;
    assert_eq!(ack.last().expect("ack")["data"]["recovered"], false, "{ack:?}");
    let replay = b.recv_until(|f| f["seq"] == 21).await;
    let seqs: Vec<u64> = replay.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (17..=21).collect::<Vec<u64>>());
}

/// A log lost under a live session (a failover to a replica that never had it, a flush) restarts its seq in a
/// new epoch: live sockets on every pod follow the new log instead of dropping its low seqs as duplicates, and
/// a resume from the old epoch is told it was not recovered.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_log_that_restarts_is_followed_in_its_new_epoch() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let p = pods(2, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::text(&["one ", "two ", "three"]));
    send_message(&mut a, &sid, "r-1", "count").await;
    let first = until_terminal(&mut a, "r-1").await;
    let old_epoch = first.iter().find_map(|f| f["epoch"].as_str()).unwrap_or_default().to_string();
    assert!(!old_epoch.is_empty(), "extended events carry the log's epoch: {first:?}");
    let last = first.iter().filter_map(|f| f["seq"].as_u64()).max().expect("seq");
    let mut b = connect(&p[1], true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": last, "epoch": old_epoch}))
        .await;
    assert_eq!(b.recv().await["data"]["recovered"], true);

    let prefix = &p[0].config().redis_key_prefix;
    let keys: Vec<String> = ["seq", "log", "epoch"].iter().map(|k| format!("{prefix}:{{{sid}}}:{k}")).collect();
    let mut del = vec!["DEL"];
    del.extend(keys.iter().map(String::as_str));
    redis.cli(&del);

    llm.push(Reply::text(&["after"]));
    send_message(&mut a, &sid, "r-2", "again").await;
    for socket in [&mut a, &mut b] {
        let frames = until_terminal(socket, "r-2").await;
        let logged: Vec<&serde_json::Value> = frames.iter().filter(|f| f["seq"].is_u64()).collect();
        assert_eq!(logged.first().map(|f| f["seq"].clone()), Some(json!(1)), "{frames:?}");
        assert!(logged.iter().all(|f| f["epoch"] != old_epoch.as_str()), "{frames:?}");
        assert_eq!(tokens(&frames), "after");
    }
    let mut c = connect(&p[1], true).await;
    c.send(&json!({"action": "resume_session", "requestId": "old", "sessionId": sid, "afterSeq": last, "epoch": old_epoch}))
        .await;
    let ack = c.recv().await;
    assert_eq!(ack["data"]["recovered"], false, "{ack}");
    assert_eq!(c.recv().await["seq"], 1, "the replay starts at the new log's first event");
}
