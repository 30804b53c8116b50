//! The parts of the orra gateway that herald's own web UI reads, in herald's shapes: the session list (a bare
//! array, newest first), renaming a session, the agents and the status it asks for on load; and the answers to
//! the parks a REST caller meets besides approvals (an interaction card, an OTP code), which answer like
//! `/api/chat` once the resumed turn stops.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use futures_util::future::join_all;
use serde::Deserialize;
use serde_json::{json, Value};

use super::outcome;
use super::rest::{namespace_conversation, not_found, past_stop, reply, turn_state};
use super::watch::SessionWatch;
use super::{namespace, Api, ApiError, Caller};
use crate::backend::Gate;
use crate::error::{ClientError, ErrorCode};
use crate::turn::{Answer, Verdict};
use crate::util::rfc3339_from_ms;

/// `GET /api/sessions`: the caller's namespaces, most recently used first (at most 100), as herald lists them:
/// `[{namespace, name, message_count, created_at, updated_at, thread_state, turn_count, working_directory,
/// chaos_mode}]`. `name` is the conversation's title (set by `PUT …/name`, else from the first message);
/// `thread_state` is `processing` while a turn runs, `awaiting_approval` while one waits for a person, else
/// `idle`; `turn_count` counts the caller's messages (a turn each).
pub(super) async fn list(State(api): State<Arc<Api>>, Caller(who): Caller) -> Response {
    reply(
        async {
            let app = &api.app;
            app.turns.take_read(&who).await?;
            let page = app
                .backends
                .sessions
                .list_conversations(&who.org_id, &who.user_id, 0, 100)
                .await
                .map_err(ClientError::from)?;
            let named: Vec<_> = page.conversations.iter().filter_map(|c| Some((c, c.namespace.clone()?))).collect();
            let states = join_all(named.iter().map(|(_, ns)| async {
                let state = turn_state(app, &namespace::session_id(&who, ns), ns).await;
                match state.ok().as_ref().and_then(|s| s["state"].as_str()) {
                    Some("running") => "processing",
                    Some("parked") => "awaiting_approval",
                    _ => "idle",
                }
            }))
            .await;
            let sessions: Vec<Value> = named
                .iter()
                .zip(states)
                .map(|((c, ns), state)| {
                    json!({"namespace": ns, "name": (!c.title.is_empty()).then_some(&c.title),
                           "message_count": c.message_count, "created_at": rfc3339_from_ms(c.created_at_ms),
                           "updated_at": rfc3339_from_ms(c.updated_at_ms), "thread_state": state,
                           "turn_count": c.message_count.div_ceil(2), "working_directory": null, "chaos_mode": false})
                })
                .collect();
            Ok((StatusCode::OK, Value::Array(sessions)))
        }
        .await,
    )
}

#[derive(Deserialize)]
struct Name {
    name: String,
}

/// Longest session name, in characters.
const MAX_NAME: usize = 200;

/// `PUT /api/sessions/{namespace}/name {name}` → `{success: true, name}` (trimmed; empty clears it).
pub(super) async fn rename(
    State(api): State<Arc<Api>>,
    Path(ns): Path<String>,
    Caller(who): Caller,
    body: Body,
) -> Response {
    reply(
        async {
            let n: Name = api.json(body).await?;
            let name = n.name.trim().to_string();
            if name.chars().count() > MAX_NAME {
                return Err(ApiError::invalid(format!("name must be at most {MAX_NAME} characters")));
            }
            let c = namespace_conversation(&api.app, &who, &ns).await?;
            if !api
                .app
                .backends
                .sessions
                .rename_conversation(&c.conversation_id, &name)
                .await
                .map_err(ClientError::from)?
            {
                return Err(not_found(&ns));
            }
            Ok((StatusCode::OK, json!({"success": true, "name": name})))
        }
        .await,
    )
}

/// `GET /api/agents`: the agents a caller may talk to, as herald lists them (`name` is what `agent` in requests
/// and answers says; `id` is Switchboard's).
pub(super) async fn agents(State(api): State<Arc<Api>>, Caller(_who): Caller) -> Response {
    let config = &api.app.config;
    let list: Vec<Value> = if config.agents.is_empty() {
        vec![json!({"id": api.app.agents.default_id(), "name": "Demo", "personality": "", "model": config.llm.model})]
    } else {
        config
            .agents
            .iter()
            .map(|a| json!({"id": a.id, "name": a.name, "personality": "", "model": config.llm.model}))
            .collect()
    };
    reply(Ok((StatusCode::OK, Value::Array(list))))
}

/// `GET /api/status` (no credentials, as herald's UI asks before it has any): whether a model is configured.
pub(super) async fn status(State(api): State<Arc<Api>>) -> Response {
    let llm = &api.app.config.llm;
    let configured = !llm.base_url.is_empty();
    reply(Ok((
        StatusCode::OK,
        json!({"provider_configured": configured, "provider_type": "openai", "model": llm.model}),
    )))
}

#[derive(Deserialize)]
struct CardAnswer {
    #[serde(default)]
    values: Option<Value>,
    #[serde(default)]
    declined: bool,
}

#[derive(Deserialize)]
struct Code {
    code: String,
}

/// What a person answered a park with.
enum Reply {
    Card { interaction_id: String, values: Option<Value>, declined: bool },
    Code(String),
}

/// `POST /api/sessions/{namespace}/interactions/{interaction_id} {values} | {declined: true}`: answers the card
/// a `pending_interaction` showed; 200/202 like `/api/chat` once the resumed turn stops, 400 with the card's
/// field errors (`details.errors`) when the values do not fit it (the card stays).
pub(super) async fn interaction(
    State(api): State<Arc<Api>>,
    Path((ns, interaction_id)): Path<(String, String)>,
    Caller(who): Caller,
    body: Body,
) -> Response {
    reply(
        async {
            let a: CardAnswer = api.json(body).await?;
            let reply = Reply::Card { interaction_id, values: a.values, declined: a.declined };
            answer_and_follow(&api, &who, &ns, reply).await
        }
        .await,
    )
}

/// `POST /api/sessions/{namespace}/otp {code}`: the code a `pending_otp` asked for; 200/202 like `/api/chat`
/// once the resumed turn stops, 400 `invalid_code` (with the attempts left) when it is not accepted.
pub(super) async fn otp(
    State(api): State<Arc<Api>>,
    Path(ns): Path<String>,
    Caller(who): Caller,
    body: Body,
) -> Response {
    reply(
        async {
            let c: Code = api.json(body).await?;
            answer_and_follow(&api, &who, &ns, Reply::Code(c.code)).await
        }
        .await,
    )
}

/// Answers the namespace's park with `reply`, then follows the resumed turn to where it stops.
async fn answer_and_follow(
    api: &Api,
    who: &crate::auth::Identity,
    ns: &str,
    reply: Reply,
) -> Result<(StatusCode, Value), ApiError> {
    namespace::validate(ns)?;
    let app = &api.app;
    let session = namespace::find(app, who, ns).await?.ok_or_else(|| not_found(ns))?;
    let sid = &session.session_id;
    let nothing = || ApiError::not_found(format!("nothing of that kind is pending in namespace '{ns}'"));
    let parked = app.turns.parked(sid).await?.ok_or_else(nothing)?;
    let rid = parked.request_id.clone();
    let answer = match &reply {
        Reply::Card { interaction_id, values, declined } => {
            Answer::Interaction { interaction_id, kind: None, values: values.as_ref(), declined: *declined }
        }
        Reply::Code(code) if matches!(parked.gate, Gate::Otp { .. }) => Answer::Otp { code, request_id: &rid },
        Reply::Code(_) => return Err(nothing()),
    };
    // Opened before the answer, so the resumed turn's events are not missed.
    let mut watch = SessionWatch::open(app, sid, None).await?;
    match app.turns.answer(&session, answer, |_| {}).await {
        Ok(Verdict::InteractionInvalid { errors, .. }) => {
            return Err(ApiError::invalid("the values do not fit the card").with_details(json!({"errors": errors})))
        }
        Ok(Verdict::OtpRefused { error, attempts_left, message }) => {
            let e = ApiError::new(StatusCode::BAD_REQUEST, "invalid_code", message);
            return Err(e.with_details(json!({"reason": error, "attempts_remaining": attempts_left})));
        }
        Ok(_) => {}
        Err(e) if matches!(e.code, ErrorCode::NoPendingInteraction | ErrorCode::NoPendingConfirmation) => {
            return Err(nothing())
        }
        Err(e) => return Err(e.into()),
    }
    let stop = match past_stop(app, sid, &rid).await? {
        Some(stop) => stop,
        None => outcome::follow(app, &mut watch, sid, &rid).await?,
    };
    outcome::answer(stop, ns, &session.agent_name)
}
