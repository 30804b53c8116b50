//! The turn's endings under races between pods, replayed step by step on one memory backend: each test puts the
//! doors and the sweeper's steps in the order that once gave a turn two endings (or none).

use std::sync::Arc;
use std::time::Duration;

use serde_json::{json, Value};
use tokio_util::task::TaskTracker;

use super::{Parts, Turns};
use crate::backend::memory::MemoryBackend;
use crate::backend::{Backends, Decided, Gate, ParkedTurn, PendingCall, TurnInfo};
use crate::config::Config;
use crate::util::now_ms;

const AGENT: &str = "11111111-1111-1111-1111-111111111111";

fn turns_on(backends: &Backends) -> Arc<Turns> {
    let config = Config::default();
    Turns::new(Parts {
        agents: Arc::new(crate::agents::Agents::new(&config)),
        config: Arc::new(config),
        pod_id: "pod-b".into(),
        backends: backends.clone(),
        model: Arc::new(crate::llm::demo::DemoModel::default()),
        knowledge: None,
        metrics: Arc::new(crate::metrics::Metrics::new()),
        lifecycle: Arc::new(crate::lifecycle::Lifecycle::default()),
        tasks: TaskTracker::new(),
    })
}

/// A turn of session `sid` parked on an approval of call `call`, its state as the turn engine stores it.
fn parked(sid: &str, turn_id: &str, call: &str) -> ParkedTurn {
    let state = json!({
        "turn_id": turn_id, "request_id": "r-1", "session_id": sid, "conversation_id": format!("c-{sid}"),
        "agent_id": AGENT, "model": "demo", "stream": true,
        "messages": [{"role": "user", "content": "hello"}], "iteration": 1,
        "usage": {"prompt_tokens": 0, "completion_tokens": 0}, "pending": [], "files": [],
    });
    ParkedTurn {
        session_id: sid.into(),
        turn_id: turn_id.into(),
        request_id: "r-1".into(),
        call: PendingCall { tool_call_id: call.into(), tool_name: "lookup".into(), arguments: "{}".into() },
        gate: Gate::Confirm,
        expires_at_ms: now_ms() + 60_000,
        state,
    }
}

/// The terminal events of request `r-1` in the session's log.
async fn endings(backends: &Backends, sid: &str) -> Vec<Value> {
    let log = backends.log.read_after(sid, 0, 1_000).await.expect("read");
    log.into_iter()
        .filter_map(|(_, e)| serde_json::from_str::<Value>(&e).ok())
        .filter(|e| e["requestId"] == "r-1")
        .filter(|e| matches!(e["type"].as_str(), Some("eventual_response" | "error" | "cancelled")))
        .collect()
}

/// A parked turn whose lease lapsed: an approval takes the park, the sweeper then ends the lapsed turn
/// (`TURN_INTERRUPTED`), and only then does the approval resume it. The resume must see that the turn was ended
/// (its record is gone) and not run it: one ending, not two.
#[tokio::test]
async fn a_parked_turn_the_sweeper_ended_is_not_resumed_by_the_approval_that_raced_it() {
    let backends = MemoryBackend::new(&Config::default()).backends();
    let turns = turns_on(&backends);
    let sid = "s-race-1";
    let info = TurnInfo::new("t-1", "r-1", "");
    assert!(backends.leases.acquire(sid, &info, 50).await.expect("acquire"));
    backends.confirms.park(&parked(sid, "t-1", "call-1")).await.expect("park");
    tokio::time::sleep(Duration::from_millis(100)).await;

    let Decided::Claimed(taken) = backends.confirms.decide(sid, None, true).await.expect("decide") else {
        panic!("the approval takes the park");
    };
    let lapsed = backends.leases.claim_lapsed(now_ms(), 10).await.expect("claim");
    let (_, lapsed_info) = lapsed.into_iter().find(|(s, _)| s == sid).expect("the lapsed turn is claimed");
    super::sweeper::end_lapsed(turns.clone(), sid.to_string(), lapsed_info).await;
    super::task::resume_parked(turns.clone(), *taken, true, "approved").await;
    turns.tasks.close();
    tokio::time::timeout(Duration::from_secs(10), turns.tasks.wait()).await.expect("the turn's task ends");

    let ended = endings(&backends, sid).await;
    assert_eq!(ended.len(), 1, "one ending: {ended:?}");
    assert_eq!(ended[0]["data"]["error"]["code"], "TURN_INTERRUPTED", "{ended:?}");
    assert_eq!(backends.leases.current(sid).await.expect("current"), None, "nothing holds the slot");
}

/// The timeout sweeper found a session whose park was due, but by the time it reads the park a person has
/// answered that one and the turn has parked its next call, due in a minute. The sweeper must time out only
/// the call that was due: the new park stays, undecided.
#[tokio::test]
async fn the_timeout_sweeper_never_answers_a_park_that_is_not_due() {
    let backends = MemoryBackend::new(&Config::default()).backends();
    let turns = turns_on(&backends);
    let sid = "s-race-2";
    assert!(backends.leases.acquire(sid, &TurnInfo::new("t-1", "r-1", ""), 60_000).await.expect("acquire"));
    let mut due = parked(sid, "t-1", "call-due");
    due.expires_at_ms = now_ms() - 1;
    backends.confirms.park(&due).await.expect("park");
    assert!(backends.confirms.expired(now_ms(), 10).await.expect("expired").iter().any(|s| s == sid));
    // Meanwhile: the due call was answered and the turn parked its next one.
    backends.confirms.park(&parked(sid, "t-1", "call-next")).await.expect("park the next call");

    super::sweeper::time_out(&turns, sid).await.expect("sweep");
    let waiting = backends.confirms.get(sid).await.expect("get").expect("the next call still waits");
    assert_eq!(waiting.call.tool_call_id, "call-next");
    assert!(endings(&backends, sid).await.is_empty(), "nothing ended");
}

/// An identity store whose `stamp` fails (Redis unreachable at that moment); everything else is the memory
/// backend's.
struct StampFails(Arc<dyn crate::backend::IdentityStore>);

#[async_trait::async_trait]
impl crate::backend::IdentityStore for StampFails {
    async fn contact(&self, sid: &str) -> crate::backend::BResult<crate::backend::Contact> {
        self.0.contact(sid).await
    }
    async fn stamp(&self, _: &str, _: Option<&str>, _: Option<&str>, _: Option<&str>) -> crate::backend::BResult<()> {
        Err(crate::backend::BackendError::Redis(fred::error::Error::new(
            fred::error::ErrorKind::IO,
            "the store went away",
        )))
    }
    async fn set_verified(&self, sid: &str) -> crate::backend::BResult<()> {
        self.0.set_verified(sid).await
    }
    async fn put_code(&self, sid: &str, code: &crate::backend::OtpCode) -> crate::backend::BResult<()> {
        self.0.put_code(sid, code).await
    }
    async fn attempt(&self, sid: &str, now: i64) -> crate::backend::BResult<crate::backend::OtpAttempt> {
        self.0.attempt(sid, now).await
    }
    async fn consume_code(&self, sid: &str) -> crate::backend::BResult<bool> {
        self.0.consume_code(sid).await
    }
}

/// A person answers an identity card while the store fails to record their contact: the answer is refused
/// with the store's error and the card still waits, so the person (or their retry) can answer it again. Had
/// the park been taken first, the answer would be lost and the turn would wait for an answer it already had.
#[tokio::test]
async fn an_answer_the_store_could_not_apply_leaves_the_card_waiting() {
    let mut backends = MemoryBackend::new(&Config::default()).backends();
    backends.identity = Arc::new(StampFails(backends.identity.clone()));
    let turns = turns_on(&backends);
    let sid = "s-race-3";
    assert!(backends.leases.acquire(sid, &TurnInfo::new("t-1", "r-1", ""), 60_000).await.expect("acquire"));
    let mut card = parked(sid, "t-1", "call-card");
    card.gate = Gate::Interaction {
        interaction_id: "int-1".into(),
        interaction_kind: "identity_intake".into(),
        spec: json!({"fields": [{"key": "email", "required": true}]}),
        reason: "to send the quote".into(),
    };
    backends.confirms.park(&card).await.expect("park");
    let session = crate::backend::SessionRecord {
        session_id: sid.into(),
        conversation_id: format!("c-{sid}"),
        agent_id: AGENT.into(),
        agent_name: "Agent".into(),
        user_id: "u".into(),
        org_id: "default".into(),
        user_participant_id: "up".into(),
        agent_participant_id: "ap".into(),
        created_at_ms: now_ms(),
        namespace: None,
        supports: Vec::new(),
    };
    let values = json!({"email": "ann@example.com"});
    let answer =
        super::Answer::Interaction { interaction_id: "int-1", kind: None, values: Some(&values), declined: false };
    let answered = turns.answer(&session, answer, |_| {}).await;
    assert!(answered.is_err(), "the store's failure is the answer's: {answered:?}");
    let waiting = backends.confirms.get(sid).await.expect("get").expect("the card still waits");
    assert_eq!(waiting.call.tool_call_id, "call-card");
}
