//! Starting a turn, for every front door (the WebSocket `send_message`, `POST /api/chat`, the orra `chat`
//! frame): check the request against the agent ([`plan`]), take the session's lease ([`acquire`]), then store
//! the user's message and build the model context ([`prepare`]); the caller then runs it with
//! [`super::spawn_new`].

use std::sync::Arc;

use serde_json::{json, Value};

use super::TurnState;
use crate::app::App;
use crate::backend::{Direction, SessionRecord, StoredMessage, TurnInfo};
use crate::config::AgentConfig;
use crate::error::{ClientError, ErrorCode};
use crate::knowledge::Scope;
use crate::llm::ChatMessage;
use crate::protocol::inbound::Image;
use crate::util::{new_id, now_ms, now_rfc3339};

/// What a request may ask of its turn, checked against the session's agent.
pub(crate) struct Plan {
    agent: Arc<AgentConfig>,
    /// The model the client named (checked against the agent's); it wins over the org's and the default.
    model: Option<String>,
}

/// The user's side of a new turn.
pub(crate) struct TurnInput {
    pub(crate) message: String,
    /// `false`: no `stream_*` events, only the terminal one.
    pub(crate) stream: bool,
    pub(crate) images: Vec<Image>,
    /// Passed to tool webhooks.
    pub(crate) files: Vec<Value>,
}

/// The session's agent, the skill (none exist yet) and the model: `model` must be one the agent offers.
pub(crate) fn plan(app: &App, agent_id: &str, model: Option<&str>, skill: Option<&str>) -> Result<Plan, ClientError> {
    let agent = app
        .agents
        .get(agent_id)
        .ok_or_else(|| ClientError::new(ErrorCode::AgentNotFound, format!("agent '{agent_id}' not found")))?;
    if let Some(skill) = skill {
        return Err(ClientError::new(ErrorCode::SkillNotFound, format!("skill '{skill}' not found")));
    }
    if let Some(name) = model.filter(|name| !agent.models.iter().any(|x| x == name)) {
        return Err(ClientError::validation(format!("model '{name}' is not offered by this agent")));
    }
    Ok(Plan { agent, model: model.map(str::to_string) })
}

/// Takes the session's turn slot for a new turn (`TURN_IN_PROGRESS` when one runs); returns the turn id.
pub(crate) async fn acquire(app: &App, session: &SessionRecord, request_id: &str) -> Result<String, ClientError> {
    if app.lifecycle.is_draining() {
        return Err(ClientError::new(ErrorCode::TurnInterrupted, "the server is draining; reconnect and retry"));
    }
    let running = app.local_turn_count();
    if running >= app.config.turn.max_per_pod {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("this server is running {running} turns (turn.max_per_pod); retry shortly"),
        ));
    }
    let turn_id = new_id();
    // One place among the user's running turns on every pod, then the session's slot.
    let per_user = app.config.limits.turns_per_user;
    let hold = super::hold_key(&session.org_id, &session.user_id);
    let lease_ms = app.config.turn.lease_ms;
    if !app.backends.quotas.hold(&hold, &turn_id, per_user, lease_ms, crate::util::now_ms()).await? {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("this user already has {per_user} turns running (limits.turns_per_user); retry when one ends"),
        ));
    }
    let info = TurnInfo::new(&turn_id, request_id, &app.pod_id);
    let acquired = app.backends.leases.acquire(&session.session_id, &info, lease_ms).await;
    if !matches!(acquired, Ok(true)) {
        let _ = app.backends.quotas.release_hold(&hold, &turn_id).await;
        acquired?;
        return Err(ClientError::turn_in_progress());
    }
    Ok(turn_id)
}

/// Looks up the agent's knowledge for the user's message and gives it to the model just before that message
/// (§11), once per turn, from the turn's task. A failing retrieval (webhook down, slow, garbage) means no
/// context, never a failed turn.
pub(crate) async fn auto_context(app: &App, agent: &AgentConfig, state: &mut TurnState) {
    let Some(message) = state.knowledge_query.take() else { return };
    let Some(retriever) = &app.knowledge else { return };
    if message.trim().is_empty() {
        return;
    }
    let scope = Scope { org_id: &state.org_id, agent_id: &state.agent_id, sets: agent.knowledge_sets.as_deref() };
    let hits = match retriever.search(&message, app.config.knowledge.top_k, &scope).await {
        Ok(hits) => hits,
        Err(e) => {
            tracing::warn!(error = %e, session_id = %state.session_id, "knowledge retrieval failed: no context");
            return;
        }
    };
    if let Some(context) = crate::knowledge::citations::context_message(&hits) {
        // Before the user's message, which is the last one.
        let at = state.messages.len().saturating_sub(1);
        state.messages.insert(at, ChatMessage::text("system", &context));
    }
    state.knowledge_auto = hits;
}

/// Stores the user's message and builds the turn's state (system prompt, history, the message with its
/// images). On failure the lease taken by [`acquire`] is given back.
pub(crate) async fn prepare(
    app: &Arc<App>,
    session: &SessionRecord,
    plan: &Plan,
    input: TurnInput,
    request_id: &str,
    turn_id: &str,
) -> Result<TurnState, ClientError> {
    // On failure the lease taken by `acquire` is given back.
    let prepared = async {
        let history =
            app.backends.sessions.recent_messages(&session.conversation_id, app.config.turn.history_messages).await?;
        let stored = StoredMessage {
            id: new_id(),
            direction: Direction::Inbound,
            text: input.message.clone(),
            created_at: now_rfc3339(),
        };
        app.backends.sessions.append_message(&session.conversation_id, &stored, now_ms()).await?;
        // The org's admin-set overrides (§14), read here so a change applies to the next turn on every pod.
        let org = app.backends.settings.get_settings(&session.org_id).await?.unwrap_or_default();
        let prompt = org.system_prompt.as_deref().unwrap_or(&plan.agent.system_prompt);
        let model = plan.model.clone().or(org.model).unwrap_or_else(|| app.config.llm.model.clone());
        let mut messages = Vec::with_capacity(history.len() + 2);
        if !prompt.is_empty() {
            messages.push(ChatMessage::text("system", prompt));
        }
        for h in history {
            let role = if h.direction == Direction::Inbound { "user" } else { "assistant" };
            messages.push(ChatMessage::text(role, &h.text));
        }
        let knowledge_query = app.knowledge.is_some().then(|| input.message.clone());
        let content = if input.images.is_empty() {
            Value::String(input.message)
        } else {
            let mut parts = vec![json!({"type": "text", "text": input.message})];
            for img in &input.images {
                let mut image_url = json!({"url": img.url});
                if let Some(d) = &img.detail {
                    image_url["detail"] = Value::String(d.clone());
                }
                parts.push(json!({"type": "image_url", "image_url": image_url}));
            }
            Value::Array(parts)
        };
        messages.push(ChatMessage {
            role: "user".into(),
            content: Some(content),
            tool_calls: None,
            tool_call_id: None,
        });
        Ok(TurnState {
            turn_id: turn_id.to_string(),
            request_id: request_id.to_string(),
            session_id: session.session_id.clone(),
            conversation_id: session.conversation_id.clone(),
            agent_id: session.agent_id.clone(),
            model,
            stream: input.stream,
            messages,
            iteration: 0,
            usage: Default::default(),
            pending: Vec::new(),
            files: input.files,
            user_id: session.user_id.clone(),
            org_id: session.org_id.clone(),
            traceparent: None,
            supports: session.supports.clone(),
            knowledge_query,
            knowledge_auto: Vec::new(),
            knowledge_tool: Vec::new(),
        })
    }
    .await;
    if prepared.is_err() {
        give_back(app, session, turn_id).await;
    }
    prepared
}

/// Gives back what [`acquire`] took, for a turn that will not run after all: the session's lease and the user's
/// place among their running turns (left to lapse, the place would block the user for `turn.lease_ms`).
pub(crate) async fn give_back(app: &App, session: &SessionRecord, turn_id: &str) {
    let _ = app.backends.leases.release(&session.session_id, turn_id).await;
    let _ = app.backends.quotas.release_hold(&super::hold_key(&session.org_id, &session.user_id), turn_id).await;
}
