//! Socket life: frame limits, resume, slow consumers, drain, keepalive.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversize_frame_closes_with_1009() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.max_frame_bytes = 2048;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    still_open(&mut c).await;
    c.send_raw_bytes(3000).await;
    loop {
        match c.recv_raw().await {
            Frame::Close(code) => {
                assert_eq!(code, Some(1009));
                break;
            }
            Frame::Text(v) if support::ws::is_keepalive(&v) => continue,
            other => panic!("expected a 1009 close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_with_and_without_a_gap() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.log_len = 5;
    let pod = pod(cfg).await;
    let mut a = connect(&pod, true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::text(&["1", "2", "3"]));
    send_message(&mut a, &sid, "r-1", "go").await;
    let frames = until_terminal(&mut a, "r-1").await;
    let seqs: Vec<u64> = frames.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
    // Resume after seq 2 on a new socket: exactly 3 and 4.
    let mut b = connect(&pod, true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 2})).await;
    let ack = b.recv().await;
    let epoch = frames.iter().find_map(|f| f["epoch"].as_str()).expect("events carry the log's epoch").to_string();
    let mut data = ack["data"].clone();
    let token = data.as_object_mut().and_then(|d| d.remove("resumeToken"));
    assert!(token.as_ref().is_some_and(Value::is_string), "a renewed resume token: {ack}");
    assert_eq!(data, json!({"sessionId": sid, "seq": 4, "epoch": epoch, "recovered": true}));
    assert_eq!(b.recv().await["seq"], 3);
    assert_eq!(b.recv().await["seq"], 4);
    b.expect_silence(Duration::from_millis(300)).await;
    // Live events follow without duplicates.
    llm.push(Reply::text(&["a", "b", "c", "d"]));
    send_message(&mut a, &sid, "r-2", "more").await;
    let live = until_terminal(&mut b, "r-2").await;
    let seqs: Vec<u64> = live.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, (5..=9).collect::<Vec<_>>());
    // The log keeps 5 events (5..=9): asking for 1 → recovered false and a replay from the oldest.
    let mut c = connect(&pod, true).await;
    c.send(&json!({"action": "resume_session", "requestId": "old", "sessionId": sid, "afterSeq": 1})).await;
    let ack = c.recv().await;
    assert_eq!((ack["data"]["recovered"].as_bool(), ack["data"]["seq"].as_u64()), (Some(false), Some(9)));
    assert_eq!(c.recv().await["seq"], 5);
    // A seq from another epoch (newer than the log) is not recovered either.
    let mut d = connect(&pod, true).await;
    d.send(&json!({"action": "resume_session", "requestId": "future", "sessionId": sid, "afterSeq": 100})).await;
    assert_eq!(d.recv().await["data"]["recovered"], false);
    assert_eq!(d.recv().await["seq"], 5);
    // The client's epoch decides: a seq of this epoch is recovered, the same seq of another epoch (the log
    // restarted since) is not, and the replay starts at the oldest kept event.
    for (their_epoch, recovered, first) in [(epoch.as_str(), true, 7), ("0123456789abcdef", false, 5)] {
        let mut e = connect(&pod, true).await;
        let resume = json!({"action": "resume_session", "requestId": "ep", "sessionId": sid, "afterSeq": 6, "epoch": their_epoch});
        e.send(&resume).await;
        let ack = e.recv().await;
        assert_eq!(
            (ack["data"]["recovered"].as_bool(), ack["data"]["epoch"].as_str()),
            (Some(recovered), Some(epoch.as_str()))
        );
        assert_eq!(e.recv().await["seq"], first);
    }
}

/// One resume replays at most `limits.resume_replay_bytes` (the newest events that fit, `recovered: false`),
/// and a user's replays are counted per minute (`limits.replay_bytes_per_user_per_minute`): past it a resume is
/// refused with `RATE_LIMITED`, attaching nothing, and the socket stays usable.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_replays_within_its_byte_budget_and_the_users_minute() {
    crate::support::one_budget_window().await;
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.resume_replay_bytes = 65_536;
    cfg.limits.replay_bytes_per_user_per_minute = 140_000;
    let pod = pod(cfg).await;
    let mut a = connect(&pod, true).await;
    let sid = create_session(&mut a).await;
    // 40 published events of 3,000 chars: ~120 KB of logged events.
    let http = reqwest::Client::new();
    for i in 0..40 {
        let body = json!({"target": {"type": "session", "id": sid}, "event": {"type": "note", "n": i, "text": "x".repeat(3_000)}});
        let r = http.post(http_url(&pod, "/admin/publish")).bearer_auth("publish-key-0123456789").json(&body).send();
        assert!(r.await.expect("publish").status().is_success());
    }
    let frames = a.recv_until(|v| v["n"] == 39).await;
    let latest = frames.iter().filter_map(|f| f["seq"].as_u64()).max().expect("seqs");
    for round in 0..2 {
        let mut b = connect(&pod, true).await;
        b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 0})).await;
        let ack = b.recv().await;
        assert_eq!(ack["data"]["recovered"], false, "round {round}: older events were left out: {ack}");
        let replayed = b.recv_until(|v| v["seq"].as_u64() == Some(latest)).await;
        let bytes: usize = replayed.iter().map(|v| v.to_string().len()).sum();
        let seqs: Vec<u64> = replayed.iter().filter_map(|v| v["seq"].as_u64()).collect();
        assert!(seqs.len() >= 18 && seqs[0] > 1, "round {round}: the newest that fit, in order: {seqs:?}");
        assert!(seqs.windows(2).all(|w| w[1] == w[0] + 1), "no hole inside the replay: {seqs:?}");
        // Frames carry sessionId/seq/epoch on top of the logged event: a little over the logged bytes.
        assert!(bytes <= 65_536 + seqs.len() * 120, "round {round}: {bytes} bytes replayed");
        b.expect_silence(Duration::from_millis(200)).await;
    }
    // ~128 KB counted this minute: one more full replay would pass 140,000.
    let mut c = connect(&pod, true).await;
    c.send(&json!({"action": "resume_session", "requestId": "over", "sessionId": sid, "afterSeq": 0})).await;
    let e = c.recv().await;
    assert_eq!((e["error"]["code"].as_str(), e["requestId"].as_str()), (Some("RATE_LIMITED"), Some("over")), "{e}");
    c.expect_silence(Duration::from_millis(300)).await;
    // A resume with nothing to replay costs nothing and is answered.
    c.send(&json!({"action": "resume_session", "requestId": "now", "sessionId": sid, "afterSeq": latest})).await;
    let ack = c.recv().await;
    assert_eq!((ack["data"]["recovered"].as_bool(), ack["data"]["seq"].as_u64()), (Some(true), Some(latest)), "{ack}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn turn_continues_after_disconnect_and_resume_gets_every_token_once() {
    let (llm, tools) = setup().await;
    let chunks: Vec<String> = (0..20).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks: chunks.clone(), delay_ms: 30, usage: None });
    let pod = pod(config(&llm, &tools)).await;
    let mut a = connect(&pod, true).await;
    let sid = create_session(&mut a).await;
    send_message(&mut a, &sid, "r-d", "go").await;
    let got = a.recv_until(|v| v["type"] == "stream_token" && v["seq"].as_u64() == Some(3)).await;
    let last_seq = got.last().and_then(|f| f["seq"].as_u64()).expect("seq");
    let mut seen: String = tokens(&got);
    a.close().await;
    sleep_ms(200).await;
    let mut b = connect(&pod, true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": last_seq})).await;
    assert_eq!(b.recv().await["data"]["recovered"], true);
    let rest = until_terminal(&mut b, "r-d").await;
    seen.push_str(&tokens(&rest));
    assert_eq!(seen, chunks.concat());
    let seqs: Vec<u64> = rest.iter().filter_map(|f| f["seq"].as_u64()).collect();
    assert_eq!(seqs, ((last_seq + 1)..=(last_seq + seqs.len() as u64)).collect::<Vec<_>>());
}

/// A pod whose socket queue holds `queue` frames, and an extended client on it holding a session that then
/// stops reading while far more than the loopback socket buffers absorb (several MiB) is published to it.
/// With `until_slow`, publishing stops as soon as the pod has counted the socket as a slow consumer.
async fn flooded_client(queue: usize, until_slow: bool) -> (switchboard::server::Running, support::ws::Client) {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.limits.outbound_queue = queue;
    let pod = pod(cfg).await;
    let mut ext = connect(&pod, true).await;
    let sid = create_session(&mut ext).await;
    let http = reqwest::Client::new();
    let big = "y".repeat(60_000);
    for i in 0..300 {
        let r = http
            .post(http_url(&pod, "/admin/publish"))
            .bearer_auth("publish-key-0123456789")
            .json(&json!({"target": {"type": "session", "id": sid}, "event": {"type": "blob", "i": i, "pad": big}}))
            .send()
            .await
            .expect("publish");
        assert_eq!(r.status(), 202);
        if until_slow && scrape(&pod).await.value("switchboard_slow_consumers_total", &[]) >= 1.0 {
            return (pod, ext);
        }
    }
    assert!(!until_slow, "300 events of 60 KB never overflowed a queue of {queue}");
    (pod, ext)
}

/// Reads on until the close: a `reconnect` frame with `reason` must come last before it. Returns the close code.
async fn reconnect_then_close(ext: &mut support::ws::Client, reason: &str) -> Option<u16> {
    let mut saw_reconnect = false;
    loop {
        match ext.recv_raw().await {
            Frame::Text(v) if v["type"] == "reconnect" => {
                assert_eq!(v["data"]["reason"], reason);
                saw_reconnect = true;
            }
            Frame::Text(v) => assert!(!saw_reconnect, "nothing after reconnect: {}", v["type"]),
            Frame::Close(code) => {
                assert!(saw_reconnect, "closed without reconnect");
                return code;
            }
            other => panic!("expected a close, got {other:?}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_consumer_is_told_to_reconnect_and_closed() {
    // The queue overflows while the client does not read; the client then starts reading late (later than the
    // 2 s the close handshake once had), and must still find `reconnect` and 4000 behind the buffered frames.
    let (_pod, mut ext) = flooded_client(8, true).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(reconnect_then_close(&mut ext, "slow consumer: resume to continue").await, Some(4000));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_while_a_write_is_blocked_still_says_reconnect_and_1012() {
    // The queue never overflows here: the write blocks on the socket, then the pod drains.
    let (pod, mut ext) = flooded_client(100_000, false).await;
    pod.drain();
    assert_eq!(reconnect_then_close(&mut ext, "server draining: reconnect").await, Some(1012));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_keepalive() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.keepalive_s = 1;
    let pod = pod(cfg).await;
    let mut c = connect(&pod, false).await;
    match c.recv_raw_timeout(Duration::from_secs(3)).await {
        Some(Frame::Text(v)) => {
            assert_eq!(v["type"], "keepalive");
            check_v1_frame(&v).expect("v1 keepalive");
        }
        other => panic!("expected a keepalive, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_timeout_interrupts_running_turns() {
    let (llm, tools) = setup().await;
    let mut cfg = config(&llm, &tools);
    cfg.drain.pre_stop_s = 0;
    cfg.drain.timeout_s = 1;
    let pod = pod(cfg).await;
    let mut other = connect(&pod, true).await;
    let sid = create_session(&mut other).await;
    llm.push(Reply::Hang);
    send_message(&mut other, &sid, "r-long", "hang").await;
    let seen = other.recv_until(|v| v["type"] == "stream_token").await;
    let last = seen.last().and_then(|f| f["seq"].as_u64()).expect("seq");
    let log = pod.backends().log.clone();
    let started = std::time::Instant::now();
    pod.drain();
    // The socket is closed at once (1012); the turn runs on until the drain timeout ends it.
    loop {
        match other.recv_raw().await {
            Frame::Close(code) => {
                assert_eq!(code, Some(1012));
                break;
            }
            Frame::Text(_) => continue,
            f => panic!("expected 1012, got {f:?}"),
        }
    }
    let deadline = std::time::Instant::now() + Duration::from_secs(8);
    let end = loop {
        let events = log.read_after(&sid, last, 100).await.expect("log");
        if let Some((_, e)) = events.iter().find(|(_, e)| e.contains("TURN_INTERRUPTED")) {
            break serde_json::from_str::<Value>(e).expect("json");
        }
        assert!(std::time::Instant::now() < deadline, "no TURN_INTERRUPTED in the log");
        sleep_ms(100).await;
    };
    assert_eq!((end["type"].as_str(), end["requestId"].as_str()), (Some("error"), Some("r-long")));
    assert!(started.elapsed() >= Duration::from_millis(900), "interrupted only after the drain timeout");
}

/// Protocol violations get their RFC 6455 close code, not a bare TCP close, and the pod serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn protocol_violations_close_with_their_code() {
    use support::raw_ws::{RawSocket, CLOSE, FIN, PING, TEXT};
    let (llm, tools) = setup().await;
    let pod = pod(config(&llm, &tools)).await;
    let cases: [(&str, u8, Vec<u8>, u16); 4] = [
        ("invalid UTF-8 in a text frame", FIN | TEXT, vec![b'{', 0xff, 0xfe, b'}'], 1007),
        ("an unknown opcode", FIN | 0x3, b"hello".to_vec(), 1002),
        ("a control frame over 125 bytes", FIN | PING, vec![b'p'; 200], 1002),
        ("a close code a client may not send", FIN | CLOSE, 1005u16.to_be_bytes().to_vec(), 1002),
    ];
    for (what, first, payload, code) in cases {
        let mut raw = RawSocket::connect(&ws_url(&pod)).await;
        raw.send_frame(first, &payload).await;
        assert_eq!(raw.close_code().await, Some(code), "{what}");
    }
    let mut c = connect(&pod, false).await;
    still_open(&mut c).await;
}
