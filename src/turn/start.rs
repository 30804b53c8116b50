//! Starting a turn, for every front door (the WebSocket `send_message`, `POST /api/chat`, the orra `chat`
//! frame) through [`Turns::start`]: check the request against the agent ([`plan`]), take a message from the
//! user's budget, take the session's lease ([`acquire`]), then store the user's message and build the model
//! context ([`prepare`]) and run it.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{TurnState, Turns};
use crate::auth::Identity;
use crate::backend::{Direction, SessionRecord, StoredMessage, TurnInfo};
use crate::config::AgentConfig;
use crate::error::{ClientError, ErrorCode};
use crate::ids::RequestId;
use crate::knowledge::Scope;
use crate::llm::ChatMessage;
use crate::protocol::inbound::Image;
use crate::util::{new_id, now_ms, now_rfc3339};

/// What a request may ask of its turn, checked against the session's agent.
struct Plan {
    agent: Arc<AgentConfig>,
    /// The model the client named (checked against the agent's); it wins over the org's and the default.
    model: Option<String>,
}

/// What a client that runs tools itself brings (AG-UI): the tools it offers, and, when a run continues after
/// one of them ran, the model's call and the results (then no user message is stored or sent).
#[derive(Default)]
pub(crate) struct ClientSide {
    pub(crate) tools: Vec<crate::llm::ToolSpec>,
    /// The assistant message with the calls, then a `tool` message per result.
    pub(crate) continuation: Vec<ChatMessage>,
}

/// The user's side of a new turn.
pub(crate) struct TurnInput {
    pub(crate) message: String,
    /// `false`: no `stream_*` events, only the terminal one.
    pub(crate) stream: bool,
    pub(crate) images: Vec<Image>,
    /// Passed to tool webhooks.
    pub(crate) files: Vec<Value>,
    pub(crate) client: ClientSide,
}

/// A turn as a door asks for it.
pub(crate) struct StartRequest {
    /// The turn's identity on the wire; one is made up when the client sent none.
    pub(crate) request_id: Option<RequestId>,
    pub(crate) model: Option<String>,
    pub(crate) skill: Option<String>,
    pub(crate) input: TurnInput,
}

impl Turns {
    /// Checks what a request asks of an agent (the agent, a skill, a model) without starting anything, so a
    /// door can refuse before it creates a session for the request.
    pub(crate) fn check(&self, agent_id: &str, model: Option<&str>, skill: Option<&str>) -> Result<(), ClientError> {
        plan(self, agent_id, model, skill).map(|_| ())
    }

    /// Starts a turn in `caller`'s session and returns its request id (the door answers 202). Refused with
    /// `RATE_LIMITED` past the user's message budget or running-turn places, `TURN_IN_PROGRESS` while the
    /// session runs a turn (the message is then given back), and the plan's errors.
    pub(crate) async fn start(
        self: &Arc<Self>,
        caller: &Identity,
        session: &SessionRecord,
        req: StartRequest,
    ) -> Result<RequestId, ClientError> {
        if session.user_id != caller.user_id || session.org_id != caller.org_id {
            return Err(ClientError::session_not_found(&session.session_id));
        }
        let plan = plan(self, &session.agent_id, req.model.as_deref(), req.skill.as_deref())?;
        self.check_spend(&session.org_id).await?;
        let spent = self.take_message(caller).await?;
        let request_id = req.request_id.unwrap_or_else(|| new_id().into());
        let turn_id = match acquire(self, session, &request_id).await {
            Ok(t) => t,
            Err(e) => {
                if e.code == ErrorCode::TurnInProgress {
                    self.give_back_message(spent).await;
                }
                return Err(e);
            }
        };
        let state = prepare(self, session, &plan, req.input, &request_id, &turn_id).await?;
        super::task::spawn_new(self.clone(), state);
        Ok(request_id)
    }
}

/// The session's agent, the skill (none exist yet) and the model: `model` must be one the agent offers.
fn plan(turns: &Turns, agent_id: &str, model: Option<&str>, skill: Option<&str>) -> Result<Plan, ClientError> {
    let agent = turns
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
async fn acquire(turns: &Turns, session: &SessionRecord, request_id: &str) -> Result<String, ClientError> {
    if turns.lifecycle.is_draining() {
        return Err(ClientError::new(ErrorCode::TurnInterrupted, "the server is draining; reconnect and retry"));
    }
    let running = turns.local_count();
    if running >= turns.config.turn.max_per_pod {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("this server is running {running} turns (turn.max_per_pod); retry shortly"),
        ));
    }
    let turn_id = new_id();
    // One place among the user's running turns on every pod, then the session's slot.
    let per_user = turns.config.limits.turns_per_user;
    let hold = super::hold_key(&session.org_id, &session.user_id);
    let lease_ms = turns.config.turn.lease_ms;
    if !turns.backends.quotas.hold(&hold, &turn_id, per_user, lease_ms, crate::util::now_ms()).await? {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("this user already has {per_user} turns running (limits.turns_per_user); retry when one ends"),
        ));
    }
    let info = TurnInfo::new(&turn_id, request_id, &turns.pod_id);
    let acquired = turns.backends.leases.acquire(&session.session_id, &info, lease_ms).await;
    if !matches!(acquired, Ok(true)) {
        let _ = turns.backends.quotas.release_hold(&hold, &turn_id).await;
        acquired?;
        return Err(ClientError::turn_in_progress());
    }
    Ok(turn_id)
}

/// Looks up the agent's knowledge for the user's message and gives it to the model just before that message
/// once per turn, from the turn's task. A failing retrieval (webhook down, slow, garbage) means no
/// context, never a failed turn.
pub(super) async fn auto_context(turns: &Turns, agent: &AgentConfig, state: &mut TurnState) {
    let Some(message) = state.knowledge_query.take() else { return };
    let Some(retriever) = &turns.knowledge else { return };
    if message.trim().is_empty() {
        return;
    }
    let scope = Scope { org_id: &state.org_id, agent_id: &state.agent_id, sets: agent.knowledge_sets.as_deref() };
    let hits = match retriever.search(&message, turns.config.knowledge.top_k, &scope).await {
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
async fn prepare(
    turns: &Arc<Turns>,
    session: &SessionRecord,
    plan: &Plan,
    input: TurnInput,
    request_id: &str,
    turn_id: &str,
) -> Result<TurnState, ClientError> {
    // On failure the lease taken by `acquire` is given back.
    let prepared = async {
        let history = turns
            .backends
            .sessions
            .recent_messages(&session.conversation_id, turns.config.turn.history_messages)
            .await?;
        let continuing = !input.client.continuation.is_empty();
        if !continuing {
            let stored = StoredMessage {
                id: new_id(),
                direction: Direction::Inbound,
                text: input.message.clone(),
                created_at: now_rfc3339(),
            };
            append_or_reopen(turns, session, &stored).await?;
        }
        // The org's admin-set overrides, read here so a change applies to the next turn on every pod.
        let org = turns.backends.settings.get_settings(&session.org_id).await?.unwrap_or_default();
        let prompt = org.system_prompt.as_deref().unwrap_or(&plan.agent.system_prompt);
        let model = plan.model.clone().or(org.model).unwrap_or_else(|| turns.config.llm.model.clone());
        let mut messages = Vec::with_capacity(history.len() + 2);
        if !prompt.is_empty() {
            messages.push(ChatMessage::text("system", prompt));
        }
        let window = history.len();
        let kept = super::history::within_tokens(history.clone(), turns.config.turn.history_tokens);
        let earlier = match turns.config.turn.summarize {
            true => earlier(turns, session, &history[..window - kept.len()], kept.len()).await?,
            false => super::summary::Earlier::Nothing,
        };
        let mut summary_job = None;
        match earlier {
            super::summary::Earlier::Summary(text) => messages.push(super::summary::message(&text)),
            super::summary::Earlier::Job(job) => summary_job = Some(job),
            super::summary::Earlier::Nothing => {}
        }
        for h in kept {
            let role = if h.direction == Direction::Inbound { "user" } else { "assistant" };
            messages.push(ChatMessage::text(role, &h.text));
        }
        let knowledge_query = (turns.knowledge.is_some() && !continuing).then(|| input.message.clone());
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
        if continuing {
            // The model's calls and the client's results: the model goes on from there.
            messages.extend(input.client.continuation);
        } else {
            messages.push(ChatMessage {
                role: "user".into(),
                content: Some(content),
                tool_calls: None,
                tool_call_id: None,
            });
        }
        Ok(TurnState {
            turn_id: turn_id.into(),
            request_id: request_id.into(),
            session_id: session.session_id.as_str().into(),
            conversation_id: session.conversation_id.as_str().into(),
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
            client_tools: input.client.tools,
            summary_job,
            continue_from: None,
            running_call: None,
        })
    }
    .await;
    if prepared.is_err() {
        give_back(turns, session, turn_id).await;
    }
    prepared
}

/// Gives back what [`acquire`] took, for a turn that will not run after all: the session's lease and the user's
/// place among their running turns (left to lapse, the place would block the user for `turn.lease_ms`).
async fn give_back(turns: &Turns, session: &SessionRecord, turn_id: &str) {
    let _ = turns.backends.leases.release(&session.session_id, turn_id).await;
    let _ = turns.backends.quotas.release_hold(&super::hold_key(&session.org_id, &session.user_id), turn_id).await;
}

/// What the model is told of the messages before the `kept` replayed ones (`turn.summarize`): the stored summary,
/// or the job of making one. `dropped`: the window's messages the budget left out.
async fn earlier(
    turns: &Turns,
    session: &SessionRecord,
    dropped: &[StoredMessage],
    kept: usize,
) -> Result<super::summary::Earlier, ClientError> {
    let sessions = &turns.backends.sessions;
    let (conversation, stored) =
        tokio::join!(sessions.get_conversation(&session.conversation_id), sessions.summary(&session.conversation_id));
    // The count includes the message this turn just stored, which is not part of the history.
    let count = conversation?.map_or(0, |c| c.message_count).saturating_sub(1);
    Ok(super::summary::plan(stored?, dropped, count.saturating_sub(kept as u64)))
}

/// Stores the turn's message; a session whose conversation is gone (it never got a message within
/// `session.empty_conversation_ttl_s`, or was trimmed past `session.conversations_per_user`) gets it back,
/// empty, under the same id, so the session keeps working.
async fn append_or_reopen(turns: &Turns, session: &SessionRecord, message: &StoredMessage) -> Result<(), ClientError> {
    let sessions = &turns.backends.sessions;
    if sessions.append_message(&session.conversation_id, message, now_ms()).await? {
        return Ok(());
    }
    let now = now_ms();
    let conversation = crate::backend::ConversationRecord {
        conversation_id: session.conversation_id.clone(),
        user_id: session.user_id.clone(),
        org_id: session.org_id.clone(),
        agent_id: session.agent_id.clone(),
        title: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        message_count: 0,
        namespace: session.namespace.clone(),
        supports: Some(session.supports.clone()),
    };
    sessions.create_session(session, Some(&conversation)).await?;
    sessions.append_message(&session.conversation_id, message, now).await?;
    Ok(())
}
