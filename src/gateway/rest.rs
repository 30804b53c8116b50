//! `POST /api/chat`, the approvals route, and the caller's sessions (`GET`/`DELETE /api/sessions…`).

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::outcome::{self, Seen, Stop};
use super::watch::SessionWatch;
use super::{namespace, Api, ApiError, Caller};
use crate::app::App;
use crate::auth::Identity;
use crate::backend::{ConversationRecord, Direction, SessionRecord};
use crate::error::{ClientError, ErrorCode};
use crate::protocol::MAX_MESSAGE_CHARS;
use crate::turn::{Answer, ClientSide, StartRequest, TurnInput, Verdict};
use crate::util::rfc3339_from_ms;

/// `POST /api/chat` (and `/api/chat/stream`) body. Unknown fields (orra callers send `metadata`) are ignored.
#[derive(Deserialize)]
pub(super) struct ChatRequest {
    pub(super) message: String,
    #[serde(default)]
    pub(super) namespace: Option<String>,
    #[serde(default)]
    pub(super) agent: Option<String>,
    #[serde(default)]
    pub(super) model: Option<String>,
    /// An AG-UI run's frontend tools and tool results (never from a REST body).
    #[serde(skip)]
    pub(super) client: ClientSide,
}

/// A turn started for a gateway request, with a watcher opened before it ran.
pub(super) struct Started {
    pub(super) session: SessionRecord,
    pub(super) namespace: String,
    pub(super) request_id: String,
    pub(super) watch: SessionWatch,
}

/// A checked chat request: the namespace's session (created on first use), the model asked for and the message.
pub(super) struct Resolved {
    pub(super) session: SessionRecord,
    pub(super) namespace: String,
    model: Option<String>,
    message: String,
    client: ClientSide,
}

/// Checks a chat request (message, namespace, agent, model; for a browser's socket its page `origin` against
/// the agent's `allowed_origins`) and opens or creates the namespace's session.
pub(super) async fn resolve(
    app: &App,
    who: &Identity,
    req: ChatRequest,
    origin: Option<&str>,
) -> Result<Resolved, ApiError> {
    let continuing = !req.client.continuation.is_empty();
    if (req.message.trim().is_empty() && !continuing) || req.message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ApiError::invalid(format!("message must be 1-{MAX_MESSAGE_CHARS} characters")));
    }
    let ns = match req.namespace {
        Some(ns) => {
            namespace::validate(&ns)?;
            ns
        }
        None => namespace::fresh(),
    };
    let existing = namespace::find(app, who, &ns).await?;
    let agent_id = match (&req.agent, &existing) {
        (Some(a), Some(s)) if *a != s.agent_id => {
            return Err(ApiError::invalid(format!("namespace '{ns}' talks to agent '{}'", s.agent_id)));
        }
        (Some(a), _) => a.clone(),
        (None, Some(s)) => s.agent_id.clone(),
        (None, None) => app.agents.default_id().to_string(),
    };
    let agent =
        app.agents.get(&agent_id).ok_or_else(|| ApiError::not_found(format!("agent '{agent_id}' not found")))?;
    // Everything is checked before a new namespace is created: a refused request leaves nothing behind.
    crate::widget::auth::check_origin(&agent, origin)?;
    app.turns.check(&agent_id, req.model.as_deref(), None)?;
    let session = match existing {
        Some(s) => s,
        None => namespace::open(app, who, &ns, &agent_id, &agent.name).await?,
    };
    Ok(Resolved { session, namespace: ns, model: req.model, message: req.message, client: req.client })
}

/// Starts the resolved turn through the turn service (budgets, lease); returns its request id.
pub(super) async fn run(app: &App, who: &Identity, r: Resolved) -> Result<String, ApiError> {
    let input = TurnInput { message: r.message, stream: true, images: Vec::new(), files: Vec::new(), client: r.client };
    let request = StartRequest { request_id: None, model: r.model, skill: None, input };
    Ok(app.turns.start(who, &r.session, request).await?.to_string())
}

/// Checks the request, opens (or creates) the namespace's session and starts the turn, watching its log.
pub(super) async fn start(api: &Api, who: &Identity, req: ChatRequest) -> Result<Started, ApiError> {
    let app = &api.app;
    if api.rate_limited(who) {
        let max = app.config.limits.messages_per_minute;
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!("more than {max} turns per minute"),
        ));
    }
    let r = resolve(app, who, req, None).await?;
    // Opened before the turn runs, so none of its events is missed.
    let watch = SessionWatch::open(app, &r.session.session_id, None).await?;
    let (session, namespace) = (r.session.clone(), r.namespace.clone());
    let request_id = run(app, who, r).await?;
    Ok(Started { session, namespace, request_id, watch })
}

pub(super) fn reply(result: Result<(StatusCode, Value), ApiError>) -> Response {
    match result {
        Ok((status, body)) => (status, Json(body)).into_response(),
        Err(e) => e.into_response(),
    }
}

/// `POST /api/chat {message, namespace?, metadata?, agent?, model?}`: runs a turn and answers with its reply
/// (200), or 202 `pending_approval` when it parks on a gated tool.
pub(super) async fn chat(State(api): State<Arc<Api>>, Caller(who): Caller, body: Body) -> Response {
    reply(
        async {
            let req: ChatRequest = api.json(body).await?;
            let mut t = start(&api, &who, req).await?;
            let stop = outcome::follow(&api.app, &mut t.watch, &t.session.session_id, &t.request_id).await?;
            outcome::answer(stop, &t.namespace, &t.session.agent_name)
        }
        .await,
    )
}

#[derive(Deserialize)]
struct Decision {
    approved: bool,
}

/// `POST /api/sessions/{namespace}/approvals/{call_id} {approved}`: decides a parked call and answers like
/// `/api/chat` once the resumed turn stops. A repeated decision gets the first decision's answer again.
pub(super) async fn approve(
    State(api): State<Arc<Api>>,
    Path((ns, call_id)): Path<(String, String)>,
    Caller(who): Caller,
    body: Body,
) -> Response {
    reply(
        async {
            let d: Decision = api.json(body).await?;
            namespace::validate(&ns)?;
            let app = &api.app;
            let session = namespace::find(app, &who, &ns).await?.ok_or_else(|| not_found(&ns))?;
            let sid = &session.session_id;
            let mut watch = SessionWatch::open(app, sid, None).await?;
            let answer = Answer::Confirm { call: Some(&call_id), approved: d.approved };
            let stop = match app.turns.answer(&session, answer, |_| {}).await {
                Ok(Verdict::Decided { request_id, .. }) => outcome::follow(app, &mut watch, sid, &request_id).await?,
                Ok(Verdict::AlreadyDecided { request_id, .. }) => match past_stop(app, sid, &request_id).await? {
                    Some(stop) => stop,
                    None => outcome::follow(app, &mut watch, sid, &request_id).await?,
                },
                Ok(_) | Err(ClientError { code: ErrorCode::NoPendingConfirmation, .. }) => {
                    return Err(ApiError::not_found(format!("no approval '{call_id}' is pending in namespace '{ns}'")))
                }
                Err(e) => return Err(e.into()),
            };
            outcome::answer(stop, &ns, &session.agent_name)
        }
        .await,
    )
}

/// Where turn `request_id` stopped, from the log: its terminal event, or a park that is still pending. None
/// while it runs.
pub(super) async fn past_stop(app: &App, session_id: &str, request_id: &str) -> Result<Option<Stop>, ApiError> {
    let mut last = None;
    let mut after = 0;
    loop {
        let batch = app.backends.log.read_after(session_id, after, 256).await.map_err(ClientError::from)?;
        let Some((seq, _)) = batch.last() else { break };
        after = *seq;
        for (_, text) in &batch {
            let Ok(event) = serde_json::from_str::<Value>(text) else { continue };
            match outcome::read(&event, request_id) {
                Seen::End(stop) => last = Some(Some(stop)),
                Seen::Park => last = Some(None),
                Seen::Delta(_) | Seen::Other => {}
            }
        }
    }
    Ok(match last {
        Some(Some(stop)) => Some(stop),
        Some(None) => outcome::pending_park(app, session_id, request_id).await?.map(Stop::Parked),
        None => None,
    })
}

pub(super) fn not_found(ns: &str) -> ApiError {
    ApiError::not_found(format!("namespace '{ns}' not found"))
}

/// The caller's conversation of `ns`, or 404 (also for another caller's).
pub(super) async fn namespace_conversation(
    app: &App,
    who: &Identity,
    ns: &str,
) -> Result<ConversationRecord, ApiError> {
    namespace::validate(ns)?;
    let cid = namespace::conversation_id(who, ns);
    crate::tenancy::find_conversation(app, &cid, who).await?.ok_or_else(|| not_found(ns))
}

/// Messages shown by `GET /api/sessions/{namespace}`, newest kept.
const SHOWN_MESSAGES: usize = 500;

/// `GET /api/sessions/{namespace}` → `{namespace, messages: [{role, content, timestamp}], created_at, updated_at}`.
pub(super) async fn show(State(api): State<Arc<Api>>, Path(ns): Path<String>, Caller(who): Caller) -> Response {
    reply(
        async {
            let c = namespace_conversation(&api.app, &who, &ns).await?;
            api.app.turns.take_read(&who).await?;
            let page = api
                .app
                .backends
                .sessions
                .messages_page(&c.conversation_id, None, SHOWN_MESSAGES)
                .await
                .map_err(ClientError::from)?;
            let messages: Vec<Value> = page
                .messages
                .iter()
                .rev()
                .map(|m| {
                    let role = if m.direction == Direction::Inbound { "user" } else { "assistant" };
                    json!({"role": role, "content": m.text, "timestamp": m.created_at})
                })
                .collect();
            let sid = namespace::session_id(&who, &ns);
            let turn = turn_state(&api.app, &sid, &ns).await?;
            Ok((
                StatusCode::OK,
                // `session_id`: the same turns through the smooth-operator protocol (`resume_session`).
                json!({"namespace": ns, "session_id": sid, "messages": messages, "turn": turn,
                   "created_at": rfc3339_from_ms(c.created_at_ms), "updated_at": rfc3339_from_ms(c.updated_at_ms)}),
            ))
        }
        .await,
    )
}

/// Whether a turn runs in the namespace now: `{"state": "idle" | "running" | "parked", "approval"?}`. A caller
/// whose request was cut (its pod died) polls this: a dead pod's turn ends with `TURN_INTERRUPTED` within
/// `turn.lease_ms` + 1 s and the namespace is `idle` again.
pub(super) async fn turn_state(app: &App, session_id: &str, ns: &str) -> Result<Value, ApiError> {
    let status = app.turns.status(session_id).await?;
    // A turn with a park of its own waits for a person, whether or not its pod has handed the lease over yet
    // (the park is stored before its prompt is sent; the hand-over comes after).
    Ok(match status.lease {
        None => json!({"state": "idle"}),
        Some(t) => match status.parked.filter(|p| p.request_id == t.request_id) {
            Some(p) => {
                let mut state = outcome::park_body(ns, &p);
                state["state"] = json!("parked");
                state
            }
            None => json!({"state": "running"}),
        },
    })
}

/// `DELETE /api/sessions/{namespace}`: ends a running turn, then deletes the messages, the log and any park.
pub(super) async fn delete(State(api): State<Arc<Api>>, Path(ns): Path<String>, Caller(who): Caller) -> Response {
    reply(
        async {
            let app = &api.app;
            let c = namespace_conversation(app, &who, &ns).await?;
            let sid = namespace::session_id(&who, &ns);
            let shell = SessionRecord {
                session_id: sid,
                conversation_id: c.conversation_id,
                agent_id: c.agent_id,
                agent_name: String::new(),
                user_id: who.user_id.clone(),
                org_id: who.org_id.clone(),
                user_participant_id: String::new(),
                agent_participant_id: String::new(),
                created_at_ms: c.created_at_ms,
                namespace: Some(ns),
                supports: Vec::new(),
            };
            // A running or parked turn is cancelled first (it emits `cancelled` and lets go); one whose pod died
            // holds the slot until its lease lapses: 409, retry.
            app.turns.delete_session(&shell).await?;
            Ok((StatusCode::OK, json!({"deleted": true})))
        }
        .await,
    )
}
