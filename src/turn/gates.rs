//! What a tool call passes through before it runs: the built-in tools (the interaction raise tools and their
//! conversational fallback; `knowledge_search`), the OTP gate and the confirmation gate.
//! A call either gets its result here or parks the turn.

use std::sync::Arc;

use serde_json::Value;

use super::emitter::Emitter;
use super::park::Step;
use super::Turns;
use super::{emit_stream, otp_gate, park, TurnState};
use crate::agents::{needs_confirmation, tool_specs};
use crate::backend::Gate;
use crate::config::{AgentConfig, AuthLevel, ToolConfig, Visibility};
use crate::error::ClientError;
use crate::interactions::{self, spec::parse_raise, validate, Kind};
use crate::knowledge::{citations, Scope};
use crate::llm::{ToolCall, ToolSpec};
use crate::protocol::outbound as out;
use crate::tools::{ToolContext, ToolOutcome};
use crate::util::{new_id, now_ms};
use tracing::Instrument;

pub(crate) use super::steps::KNOWLEDGE_TOOL;

fn kinds(agent: &AgentConfig) -> impl Iterator<Item = Kind> + '_ {
    agent.interactions.iter().filter_map(|k| Kind::parse(k.as_str()))
}

/// The fallback tool is offered when an enabled kind's card cannot be shown by this client.
fn offers_fallback(agent: &AgentConfig, supports: &[String]) -> bool {
    kinds(agent).any(|k| !supports.iter().any(|c| c == k.capability()))
}

/// Every tool the model is offered on this turn: the agent's, the raise tools of its interaction kinds, the
/// fallback `submit_interaction` and `knowledge_search` when knowledge is configured.
pub(super) fn offered(turns: &Turns, agent: &AgentConfig, state: &TurnState) -> Vec<ToolSpec> {
    let mut specs = tool_specs(agent);
    let spec = |(name, description, parameters): (&str, &str, Value)| ToolSpec {
        name: name.to_string(),
        description: description.to_string(),
        parameters,
    };
    specs.extend(kinds(agent).map(|k| spec(interactions::raise_tool_spec(k))));
    if offers_fallback(agent, &state.supports) {
        specs.push(spec(interactions::fallback_tool_spec()));
    }
    specs.extend(turns.mcp.specs(agent));
    // The client's own tools, never in place of one of the agent's.
    let taken: Vec<String> = specs.iter().map(|s| s.name.clone()).collect();
    specs.extend(state.client_tools.iter().filter(|t| !taken.contains(&t.name)).cloned());
    if turns.knowledge.is_some() {
        specs.push(spec((
            KNOWLEDGE_TOOL,
            "Search the help-centre knowledge for passages that answer a question.",
            serde_json::json!({"type": "object", "properties": {"query": {"type": "string"}}, "required": ["query"]}),
        )));
    }
    specs
}

/// Runs `call` through its gates. `announced`: its toolCall chunk was sent before the turn parked on it.
pub(super) async fn step(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    agent: &AgentConfig,
    call: &ToolCall,
    announced: bool,
) -> Result<Step, ClientError> {
    let name = call.function.name.as_str();
    let announce = |state: &TurnState| {
        if !announced {
            let title = super::steps::title(turns, state, name);
            emit_stream(
                em,
                state,
                &out::tool_call_chunk(&state.request_id, &call.id, name, &call.function.arguments, title.as_deref()),
            );
        }
    };
    let agents_own = agent.tools.iter().any(|t| t.name == name);
    if !agents_own && state.client_tools.iter().any(|t| t.name == name) {
        announce(state);
        return Ok(Step::Handoff);
    }
    if let Some(kind) = Kind::from_raise_tool(name).filter(|k| kinds(agent).any(|e| e == *k)) {
        return raise(turns, em, state, call, kind).await;
    }
    if name == interactions::FALLBACK_TOOL && offers_fallback(agent, &state.supports) {
        announce(state);
        return Ok(Step::Done(submit_fallback(turns, state, &call.function.arguments).await));
    }
    if name == KNOWLEDGE_TOOL && turns.knowledge.is_some() {
        announce(state);
        return Ok(Step::Done(knowledge_search(turns, state, agent, &call.function.arguments).await));
    }
    let Some(tool) = agent.tools.iter().find(|t| t.name == name) else {
        if turns.mcp.owns(agent, name) {
            // An MCP tool: the same approval gate as a webhook tool; it has no auth level of its own.
            if needs_confirmation(agent, name) {
                park::for_confirmation(turns, em, state, call).await?;
                return Ok(Step::Parked);
            }
            announce(state);
            return Ok(Step::Done(run_tool(turns, em, state, agent, call).await?));
        }
        announce(state);
        return Ok(Step::Done(ToolOutcome { is_error: true, result: format!("unknown tool '{name}'") }));
    };
    if let Some(refusal) = auth_refusal(agent, tool) {
        announce(state);
        return Ok(Step::Done(ToolOutcome { is_error: true, result: refusal }));
    }
    if needs_otp(agent, tool) {
        let contact = turns.backends.identity.contact(&state.session_id).await?;
        if !contact.verified {
            return otp_gate::require(turns, em, state, call, tool, &contact).await;
        }
    }
    if needs_confirmation(agent, name) {
        park::for_confirmation(turns, em, state, call).await?;
        return Ok(Step::Parked);
    }
    announce(state);
    Ok(Step::Done(run_tool(turns, em, state, agent, call).await?))
}

/// On a public agent an `admin` tool never runs; internal agents pass every level.
fn auth_refusal(agent: &AgentConfig, tool: &ToolConfig) -> Option<String> {
    (agent.visibility == Visibility::Public && tool.auth_level == AuthLevel::Admin)
        .then(|| format!("tool '{}' is not available in this conversation (it needs an administrator)", tool.name))
}

fn needs_otp(agent: &AgentConfig, tool: &ToolConfig) -> bool {
    agent.visibility == Visibility::Public && tool.auth_level == AuthLevel::EndUser
}

/// A raise tool: the card when the client can show it (the turn parks), else the conversational fallback.
async fn raise(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    call: &ToolCall,
    kind: Kind,
) -> Result<Step, ClientError> {
    let name = &call.function.name;
    let title = super::steps::title(turns, state, name);
    let chunk = out::tool_call_chunk(&state.request_id, &call.id, name, &call.function.arguments, title.as_deref());
    let raised = match parse_raise(kind, &call.function.arguments) {
        Ok(r) => r,
        Err(e) => {
            emit_stream(em, state, &chunk);
            return Ok(Step::Done(ToolOutcome { is_error: true, result: e }));
        }
    };
    if !state.supports.iter().any(|c| c == kind.capability()) {
        emit_stream(em, state, &chunk);
        let result = interactions::conversational(kind, &raised.spec, &raised.reason);
        return Ok(Step::Done(ToolOutcome { is_error: false, result }));
    }
    let interaction_id = new_id();
    let gate = Gate::Interaction {
        interaction_id: interaction_id.clone(),
        interaction_kind: kind.as_str().to_string(),
        spec: raised.spec.clone(),
        reason: raised.reason.clone(),
    };
    let expires_at_ms = now_ms() + (turns.config.interaction.timeout_s as i64) * 1000;
    park::store(turns, state, call, gate, expires_at_ms).await?;
    // The card comes before the raise tool's chunk, so a client renders it as the call appears.
    em.send(&out::interaction_required(
        &state.request_id,
        &interaction_id,
        kind.as_str(),
        &raised.spec,
        &raised.reason,
    ));
    emit_stream(em, state, &chunk);
    em.flush().await?;
    Ok(Step::Parked)
}

/// The model-callable `submit_interaction` of the conversational fallback: the same validation as the card.
async fn submit_fallback(turns: &Turns, state: &TurnState, arguments: &str) -> ToolOutcome {
    match validate::fallback(arguments) {
        Ok((kind, values, payload)) => {
            if let (Kind::IdentityIntake, Some(values)) = (kind, &values) {
                if let Err(e) = stamp_identity(turns, &state.session_id, values).await {
                    tracing::warn!(error = %e, session_id = %state.session_id, "could not stamp identity values");
                }
            }
            ToolOutcome { is_error: false, result: payload }
        }
        Err(message) => ToolOutcome { is_error: true, result: message },
    }
}

/// Accepted identity values go on the session, where the OTP gate finds its contact.
pub(super) async fn stamp_identity(turns: &Turns, session_id: &str, values: &Value) -> Result<(), ClientError> {
    let get = |k: &str| values.get(k).and_then(Value::as_str);
    turns.backends.identity.stamp(session_id, get("name"), get("email"), get("phone")).await?;
    Ok(())
}

async fn knowledge_search(turns: &Turns, state: &mut TurnState, agent: &AgentConfig, arguments: &str) -> ToolOutcome {
    let query = serde_json::from_str::<Value>(arguments)
        .ok()
        .and_then(|v| v.get("query").and_then(Value::as_str).map(str::to_string))
        .unwrap_or_default();
    if query.trim().is_empty() {
        return ToolOutcome { is_error: true, result: "knowledge_search needs a non-empty 'query'".into() };
    }
    let Some(retriever) = &turns.knowledge else {
        return ToolOutcome { is_error: true, result: "no knowledge is configured".into() };
    };
    let scope = Scope { org_id: &state.org_id, agent_id: &state.agent_id, sets: agent.knowledge_sets.as_deref() };
    match retriever.search(&query, turns.config.knowledge.top_k, &scope).await {
        Ok(hits) => {
            let result = citations::tool_result(&hits);
            state.knowledge_tool.extend(hits);
            ToolOutcome { is_error: false, result }
        }
        Err(e) => {
            tracing::warn!(error = %e, session_id = %state.session_id, "knowledge_search failed");
            ToolOutcome { is_error: true, result: "the knowledge search is unavailable right now".into() }
        }
    }
}

/// The verified contact an `end_user` tool's webhook carries (email, else phone); None when the session's person
/// proved nothing (or the store cannot say: the host then sees no contact and must refuse).
async fn verified_contact(turns: &Turns, session_id: &str) -> Option<serde_json::Value> {
    let contact = match turns.backends.identity.contact(session_id).await {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, session_id, "could not read the verified contact for a tool call");
            return None;
        }
    };
    if !contact.verified {
        return None;
    }
    match (contact.email, contact.phone) {
        (Some(email), _) => Some(serde_json::json!({"email": email, "verified": true})),
        (None, Some(phone)) => Some(serde_json::json!({"phone": phone, "verified": true})),
        (None, None) => None,
    }
}

/// Calls a configured tool's webhook, in the `execute_tool` span.
/// Runs a webhook or MCP tool call that passed its gates, after a durable step that says it runs (a takeover
/// then knows it may have run).
pub(super) async fn run_tool(
    turns: &Turns,
    em: &Emitter,
    state: &TurnState,
    agent: &AgentConfig,
    call: &ToolCall,
) -> Result<ToolOutcome, ClientError> {
    super::durable::before_call(turns, em, state, &call.id).await?;
    Ok(call_tool(turns, state, agent, call).await)
}

async fn call_tool(turns: &Turns, state: &TurnState, agent: &AgentConfig, call: &ToolCall) -> ToolOutcome {
    let Some(tool) = agent.tools.iter().find(|t| t.name == call.function.name) else {
        // Not a webhook: an MCP tool of the agent's servers (or unknown, which it says).
        let span = tracing::info_span!("execute_tool", otel.name = %format!("execute_tool {}", call.function.name),
            gen_ai.operation.name = "execute_tool", gen_ai.tool.name = %call.function.name, gen_ai.tool.call.id = %call.id);
        return turns.mcp.call(agent, &call.function.name, &call.function.arguments).instrument(span).await;
    };
    let contact = match tool.auth_level {
        AuthLevel::EndUser => verified_contact(turns, &state.session_id).await,
        _ => None,
    };
    let ctx = ToolContext {
        session_id: &state.session_id,
        tool_call_id: &call.id,
        agent_id: &state.agent_id,
        user_id: &state.user_id,
        org_id: &state.org_id,
        files: &state.files,
        contact,
    };
    let span = tracing::info_span!(
        "execute_tool",
        otel.name = %format!("execute_tool {}", tool.name),
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %tool.name,
        gen_ai.tool.call.id = %call.id,
    );
    turns.tools.call(tool, &call.function.arguments, ctx).instrument(span).await
}
