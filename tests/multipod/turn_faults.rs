//! Exactly one ending per turn under faults: a pod process frozen (SIGSTOP) past its lease (taken over by
//! another pod), Redis stalled past the lease mid-turn (with `turn.takeover` off: `TURN_INTERRUPTED` from a
//! sweeper), and a parked turn resumed after its slot was taken. Each ends the turn once, and the turn that
//! lost its lease adds nothing to the log afterwards. A turn whose lease, record and sweeper's entry a Redis
//! failover took back (writes its replica never had) still ends once.

use super::process::*;
use super::*;
use switchboard::backend::Direction;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_pod_frozen_past_its_lease_is_taken_over_once_and_adds_nothing_when_it_wakes() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut cfg = config(&llm, &tools);
    cfg.turn.lease_ms = 1_500;
    let p = pods(1, cfg.clone(), &Store::Redis(redis.url())).await;
    let frozen = ProcessPod::start(shared(&cfg, &p[0])).await;

    let mut a = Client::connect(&frozen.ws_url()).await;
    let sid = create_session(&mut a).await;
    let chunks: Vec<String> = (0..30).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks, delay_ms: 100, usage: None });
    llm.push(Reply::text(&["and the rest."]));
    send_message(&mut a, &sid, "r-1", "tell me").await;
    a.recv_until(|v| v["type"].as_str().is_some_and(|t| t.starts_with("stream_"))).await;
    frozen.signal("STOP");

    // The healthy pod's sweeper takes the turn over once the frozen pod's lease lapses, and finishes the reply.
    let mut b = connect(&p[0], true).await;
    b.send(&json!({"action": "resume_session", "requestId": "res", "sessionId": sid, "afterSeq": 0})).await;
    let seen = until_terminal(&mut b, "r-1").await;
    let ending = seen.last().expect("ending");
    assert_eq!(ending["type"], "eventual_response", "{ending}");
    let text = reply_text(ending);
    assert!(text.ends_with("and the rest."), "{ending}");

    // The frozen pod wakes with the model's whole reply waiting in its socket buffer: it must notice that its
    // lease is gone and stop, adding nothing (no tokens, no second ending).
    frozen.signal("CONT");
    sleep_ms(4_000).await;
    let frames = logged(&p[0], &sid, "r-1").await;
    let ending = single_ending(&frames);
    assert_eq!(ending["type"], "eventual_response");
    assert_eq!(tokens(&frames), text, "the client's tokens are the reply, none twice, none after the ending");
    // The conversation keeps the one reply: the woken pod's own finish is fenced out too.
    let sessions = &p[0].backends().sessions;
    let session = sessions.get_session(&sid).await.expect("read").expect("session");
    let history = sessions.recent_messages(&session.conversation_id, 10).await.expect("history");
    let replies: Vec<_> = history.iter().filter(|m| m.direction == Direction::Outbound).map(|m| &m.text).collect();
    assert_eq!(replies, vec![&text], "{history:?}");

    // The session takes a new turn (on either pod) and it runs to its end.
    next_turn_runs(&llm, &mut b, &sid).await;
}

/// The session takes a new turn, `r-2`, and it runs to its end.
async fn next_turn_runs(llm: &FakeLlm, c: &mut Client, sid: &str) {
    llm.push(Reply::text(&["again"]));
    send_message(c, sid, "r-2", "again").await;
    let frames = until_terminal(c, "r-2").await;
    assert_eq!(frames.last().expect("end")["type"], "eventual_response", "{frames:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn redis_stalled_past_the_lease_mid_turn_ends_the_turn_once() {
    let (llm, tools) = setup().await;
    let redis = RedisServer::start();
    let mut cfg = config(&llm, &tools);
    cfg.turn.takeover = false;
    let p = pods(2, cfg, &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    let chunks: Vec<String> = (0..40).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks, delay_ms: 100, usage: None });
    // Should the turn go on after the stall it would call the model again; this would show it.
    llm.set_default(Reply::text(&["SECOND CALL"]));
    send_message(&mut a, &sid, "r-1", "tell me").await;
    a.recv_until(|v| v["type"].as_str().is_some_and(|t| t.starts_with("stream_"))).await;
    // Longer than the lease (2 s) and than the client's command timeout (10 s): appends and renewals fail.
    redis.pause();
    sleep_ms(11_000).await;
    redis.resume();

    let frames = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let frames = logged(&p[1], &sid, "r-1").await;
            if frames.iter().any(is_terminal) {
                return frames;
            }
            sleep_ms(500).await;
        }
    })
    .await
    .expect("the turn ends after Redis is back");
    sleep_ms(3_000).await;
    let frames_later = logged(&p[1], &sid, "r-1").await;
    assert_eq!(frames_later.len(), frames.len(), "nothing is added after the ending: {frames_later:?}");
    let ending = single_ending(&frames_later);
    assert_eq!(ending["error"]["code"], "TURN_INTERRUPTED", "{ending}");
    assert_eq!(llm.request_count(), 1, "the stopped turn did not go on to call the model");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_parked_turn_whose_slot_was_taken_ends_instead_of_running() {
    let (llm, tools) = setup().await;
    tools.set("delete_record", Behaviour::Ok(json!("gone")));
    let redis = RedisServer::start();
    let p = pods(1, config(&llm, &tools), &Store::Redis(redis.url())).await;
    let mut a = connect(&p[0], true).await;
    let sid = create_session(&mut a).await;
    llm.push(Reply::tool_call("call-1", "delete_record", &json!({"id": "1"})));
    send_message(&mut a, &sid, "r-1", "delete 1").await;
    a.recv_until(|v| v["type"].as_str().is_some_and(|t| t.starts_with("stream_"))).await;

    // The parked turn's hold ran out and a newer turn took the session's slot (here: taken through the
    // backend, as a pod would).
    let backends = switchboard::backend::redis::connect(p[0].config()).await.expect("connect");
    let parked = backends.leases.current(&sid).await.expect("current").expect("the parked turn holds the slot");
    assert!(backends.leases.release(&sid, &parked.turn_id).await.expect("release"));
    let newer = switchboard::backend::TurnInfo::new("newer-turn", "r-newer", "another-pod");
    assert!(backends.leases.acquire(&sid, &newer, 30_000).await.expect("acquire"));

    llm.set_default(Reply::text(&["SHOULD NOT RUN"]));
    a.send(&json!({"action": "confirm_tool_action", "requestId": "yes", "sessionId": sid, "approved": true})).await;
    let frames = until_terminal(&mut a, "r-1").await;
    let ending = frames.last().expect("ending");
    assert_eq!(ending["error"]["code"], "TURN_INTERRUPTED", "{frames:?}");
    sleep_ms(500).await;
    assert!(tools.calls("delete_record").is_empty(), "the approved tool must not run beside the newer turn");
    assert_eq!(llm.request_count(), 1, "the model is not called again");
    assert_eq!(backends.leases.current(&sid).await.expect("current"), Some(newer), "the newer turn keeps its slot");
}

/// What a Sentinel failover can take back of a running turn (writes the old master took that its replica never
/// had): its lease and its lapsed-lease index entry, and with `record` its turn record and step too.
fn take_back_turn(redis: &RedisServer, p: &switchboard::server::Running, sid: &str, record: bool) {
    let prefix = &p.config().redis_key_prefix;
    let kinds: &[&str] = if record { &["lease", "turn", "step"] } else { &["lease"] };
    let keys: Vec<String> = kinds.iter().map(|k| format!("{prefix}:{{{sid}}}:{k}")).collect();
    let script = "redis.call('DEL', unpack(KEYS, 2)) \
        for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do \
          if string.sub(m, 1, #ARGV[1]) == ARGV[1] then redis.call('ZREM', KEYS[1], m) end \
        end";
    let index = format!("{prefix}:turns:deadline");
    let mut args = vec!["EVAL".to_string(), script.to_string(), (keys.len() + 1).to_string(), index];
    args.extend(keys);
    args.push(format!("{sid}|"));
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    redis.cli(&args);
}

/// One pod on its own Redis (lease 1.5 s) running a turn with the model streaming, watched by the client.
async fn streaming_turn(
    llm: &FakeLlm,
    tools: &FakeTools,
) -> (RedisServer, switchboard::server::Running, Client, String) {
    let redis = RedisServer::start();
    let mut cfg = config(llm, tools);
    cfg.turn.lease_ms = 1_500;
    let p = pods(1, cfg, &Store::Redis(redis.url())).await.remove(0);
    let mut a = connect(&p, true).await;
    let sid = create_session(&mut a).await;
    let chunks: Vec<String> = (0..30).map(|i| format!("t{i} ")).collect();
    llm.push(Reply::Slow { chunks, delay_ms: 100, usage: None });
    send_message(&mut a, &sid, "r-1", "tell me").await;
    a.recv_until(|v| v["type"] == "stream_token").await;
    (redis, p, a, sid)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_whose_lease_and_record_a_failover_took_back_still_ends_once() {
    let (llm, tools) = setup().await;
    let (redis, p, mut a, sid) = streaming_turn(&llm, &tools).await;
    // No lease, no record, no step, no index entry: no sweeper can find the turn; the turn itself finds its
    // lease gone at its next append.
    take_back_turn(&redis, &p, &sid, true);

    let frames = until_terminal(&mut a, "r-1").await;
    assert_eq!(frames.last().expect("ending")["error"]["code"], "TURN_INTERRUPTED", "{frames:?}");
    sleep_ms(2_000).await;
    let logged = logged(&p, &sid, "r-1").await;
    single_ending(&logged);
    assert!(is_terminal(logged.last().expect("events")), "nothing after the ending: {logged:?}");

    next_turn_runs(&llm, &mut a, &sid).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_turn_whose_lease_and_index_entry_a_failover_took_back_is_taken_over() {
    let (llm, tools) = setup().await;
    let (redis, p, mut a, sid) = streaming_turn(&llm, &tools).await;
    llm.push(Reply::text(&["and the rest."]));
    // The record and its step stay, but without an index entry no sweeper would look at them.
    take_back_turn(&redis, &p, &sid, false);

    let frames = until_terminal(&mut a, "r-1").await;
    let ending = frames.last().expect("ending");
    assert_eq!(ending["type"], "eventual_response", "taken over from its step: {frames:?}");
    assert!(reply_text(ending).ends_with("and the rest."), "{ending}");
    sleep_ms(2_000).await;
    single_ending(&logged(&p, &sid, "r-1").await);
}
