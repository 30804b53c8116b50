//! Redis faults under running pods: a restart mid-session, a Sentinel failover, a rolling restart of the pods.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_restart_mid_session_loses_no_logged_event() {
    let (llm, tools) = setup().await;
    let mut server = RedisServer::start();
    let p = pods(2, config(&llm, &tools), &Store::Redis(server.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::text(&["before"]));
    send_message(&mut a, &sid, "r-1", "one").await;
    let first = until_terminal(&mut a, "r-1").await;
    // Redis keeps nothing on disk in tests, so a restart is also an epoch change: state written after it
    // must flow normally and readiness must come back without restarting the pods.
    server.restart();
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    for pod in &p {
        loop {
            let ok = http.get(http_url(pod, "/readyz")).send().await.map(|r| r.status() == 200).unwrap_or(false);
            if ok {
                break;
            }
            assert!(Instant::now() < deadline, "pod not ready after the Redis restart");
            sleep_ms(200).await;
        }
    }
    let mut b = connect(&p[1], true).await;
    let sid2 = create_session(&mut b).await;
    llm.push(Reply::text(&["after"]));
    send_message(&mut b, &sid2, "r-2", "two").await;
    let frames = until_terminal(&mut b, "r-2").await;
    assert_eq!(tokens(&frames), "after");
    assert_eq!(seqs(&frames), [1, 2]);
    // The old socket on A still gets published events for its user after the reconnect. User events are
    // at-most-once (pub/sub), so a publisher that must be sure sends again: one must arrive, well in time.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut received = false;
    while !received {
        assert!(Instant::now() < deadline, "A's socket never got a user event after the Redis restart");
        let r = http
            .post(http_url(&p[1], "/admin/publish"))
            .bearer_auth("publish-key-0123456789")
            .json(&json!({"target": {"type": "user", "id": "anonymous"}, "event": {"type": "after_restart"}}))
            .send()
            .await
            .expect("post");
        assert_eq!(r.status(), 202);
        while let Some(Frame::Text(v)) = a.recv_raw_timeout(Duration::from_millis(500)).await {
            if v["type"] == "after_restart" {
                received = true;
                break;
            }
        }
    }
    assert!(!first.is_empty());
    let _ = sid;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sentinel_failover_keeps_pods_working() {
    let (llm, tools) = setup().await;
    let mut sentinel = RedisSentinel::start();
    let p = pods(2, config(&llm, &tools), &Store::Redis(sentinel.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::text(&["one"]));
    send_message(&mut a, &sid, "r-1", "one").await;
    until_terminal(&mut a, "r-1").await;
    sentinel.kill_master();
    sentinel.wait_for_failover_async(Duration::from_secs(30)).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut b = loop {
        let mut b = connect(&p[1], true).await;
        b.send(&json!({"action": "create_conversation_session", "requestId": "c", "agentId": AGENT})).await;
        let r = b.recv().await;
        if r["status"] == 200 {
            let sid = r["data"]["sessionId"].as_str().expect("sid").to_string();
            break (b, sid);
        }
        assert!(Instant::now() < deadline, "no write accepted after failover: {r}");
        sleep_ms(500).await;
    };
    llm.push(Reply::text(&["after failover"]));
    send_message(&mut b.0, &b.1, "r-2", "two").await;
    assert_eq!(tokens(&until_terminal(&mut b.0, "r-2").await), "after failover");
}

/// One client of the rolling-restart test: turns back to back; on a 1012 close it resumes on a live pod.
/// Returns the text of every turn and every seq it saw.
async fn rolling_client(
    live: std::sync::Arc<parking_lot::Mutex<Vec<String>>>,
    turns: usize,
    id: usize,
) -> (Vec<String>, Vec<u64>, usize) {
    let pick = |live: &std::sync::Arc<parking_lot::Mutex<Vec<String>>>, n: usize| {
        let l = live.lock();
        l[n % l.len()].clone()
    };
    let mut c = Client::connect_with(&pick(&live, id), Some("switchboard"), None).await.expect("connect");
    let sid = create_session(&mut c).await;
    let mut seen = Vec::new();
    let mut texts = Vec::new();
    let mut attempt = id;
    let mut reconnects = 0;
    for t in 0..turns {
        let rid = format!("c{id}-t{t}");
        send_message(&mut c, &sid, &rid, "go").await;
        let mut text = String::new();
        let mut accepted = false;
        loop {
            match c.recv_raw().await {
                Frame::Text(v) => {
                    if let Some(s) = v["seq"].as_u64() {
                        if seen.last().is_some_and(|l| s <= *l) {
                            panic!("client {id}: duplicate seq {s} after {:?}", seen.last());
                        }
                        seen.push(s);
                    }
                    if v["requestId"] == rid.as_str() {
                        match v["type"].as_str() {
                            Some("immediate_response") => accepted = true,
                            Some("stream_token") => text.push_str(v["token"].as_str().unwrap_or("")),
                            Some("eventual_response") => break,
                            Some("error") if v["error"]["code"] == "TURN_IN_PROGRESS" => {
                                sleep_ms(50).await;
                                send_message(&mut c, &sid, &rid, "go").await;
                            }
                            // Sent just as the pod began to drain: refused, not started. The 1012 close follows,
                            // and the request goes again on the next pod (below).
                            Some("error") if v["error"]["code"] == "TURN_INTERRUPTED" && !accepted => {}
                            other => panic!("client {id}: unexpected {other:?}: {v}"),
                        }
                    }
                }
                Frame::Close(_) | Frame::Closed => {
                    reconnects += 1;
                    attempt += 1;
                    c = loop {
                        match Client::connect_with(&pick(&live, attempt), Some("switchboard"), None).await {
                            Ok(c) => break c,
                            Err(_) => {
                                attempt += 1;
                                sleep_ms(50).await;
                            }
                        }
                    };
                    let after = seen.last().copied().unwrap_or(0);
                    let ack = resume(&mut c, &sid, after).await;
                    assert_eq!(ack["data"]["recovered"], true, "client {id}: {ack}");
                    if !accepted {
                        // The request may have been cut off with the socket: look for it in the replay,
                        // else send it again.
                        let replay = c.recv_raw_timeout(Duration::from_millis(300)).await;
                        if let Some(Frame::Text(v)) = replay {
                            {
                                if let Some(s) = v["seq"].as_u64() {
                                    seen.push(s);
                                }
                                if v["requestId"] == rid.as_str() && v["type"] == "stream_token" {
                                    text.push_str(v["token"].as_str().unwrap_or(""));
                                }
                                accepted = v["requestId"] == rid.as_str();
                                if v["requestId"] == rid.as_str() && v["type"] == "eventual_response" {
                                    break;
                                }
                            }
                        }
                        if !accepted {
                            send_message(&mut c, &sid, &rid, "go").await;
                        }
                    }
                }
                other => panic!("client {id}: unexpected frame {other:?}"),
            }
        }
        texts.push(text);
    }
    (texts, seen, reconnects)
}

/// Three pods under live traffic are replaced one by one (start the new pod, drain the old): no client
/// loses or repeats an event.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn rolling_restart_of_three_pods_loses_no_event() {
    let server = RedisServer::start();
    let (llm, tools) = setup().await;
    let chunks: Vec<String> = (0..10).map(|i| format!("r{i} ")).collect();
    llm.set_default(Reply::Slow { chunks: chunks.clone(), delay_ms: 30, usage: None });
    let mut cfg = config(&llm, &tools);
    cfg.drain.timeout_s = 10;
    cfg.limits.messages_per_minute = 1000;
    let store = Store::Redis(server.url());
    let mut running = pods(3, cfg.clone(), &store).await;
    let prefix_cfg = {
        // Replacement pods must share the first pods' key prefix.
        let mut c = cfg.clone();
        c.redis_url = server.url();
        c.redis_key_prefix = running[0].config().redis_key_prefix.clone();
        c.auth.resume_secret = running[0].config().auth.resume_secret.clone();
        c
    };
    let live = std::sync::Arc::new(parking_lot::Mutex::new(running.iter().map(ws_url).collect::<Vec<_>>()));
    let mut clients = Vec::new();
    for id in 0..6 {
        clients.push(tokio::spawn(rolling_client(live.clone(), 8, id)));
    }
    sleep_ms(400).await;
    let mut stopping = Vec::new();
    for _ in 0..3 {
        let fresh = switchboard::server::start(prefix_cfg.clone()).await.expect("replacement pod");
        let old = running.remove(0);
        {
            let mut l = live.lock();
            l.retain(|u| u != &ws_url(&old));
            l.push(ws_url(&fresh));
        }
        running.push(fresh);
        old.drain();
        stopping.push(tokio::spawn(async move { old.stop().await }));
        sleep_ms(700).await;
    }
    let mut reconnects = 0;
    for c in clients {
        let (texts, seqs, r) = c.await.expect("client task");
        reconnects += r;
        assert_eq!(texts.len(), 8);
        for t in &texts {
            assert_eq!(t, &chunks.concat(), "every token of every turn arrived once");
        }
        assert_eq!(seqs, (1..=seqs.len() as u64).collect::<Vec<_>>(), "gap-free");
    }
    assert!(reconnects >= 6, "every client was moved at least once by the restarts ({reconnects} reconnects)");
    for s in stopping {
        s.await.expect("old pod stopped");
    }
}

/// A turn that ends normally takes its entry out of the lapsed-lease index with it: only turns whose pod died
/// are left for the sweepers, so they do not spend their time (and Redis's) on every finished turn.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_finished_turn_leaves_nothing_for_the_lease_sweeper() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let p = pods(1, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    for i in 0..3 {
        llm.push(Reply::text(&["done"]));
        let rid = format!("r-{i}");
        send_message(&mut a, &sid, &rid, "go").await;
        let frames = until_terminal(&mut a, &rid).await;
        assert_eq!(frames.last().map(|f| f["type"].clone()), Some(json!("eventual_response")), "{frames:?}");
    }
    let index = format!("{}:turns:deadline", p[0].config().redis_key_prefix);
    assert_eq!(redis.cli(&["ZCARD", &index]), "0", "entries: {}", redis.cli(&["ZRANGE", &index, "0", "-1"]));
}
