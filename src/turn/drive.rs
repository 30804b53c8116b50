//! What a turn does between its start and its end: run the pending tool calls (parking on a gated one), call
//! the model, and store the final answer.

use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::Value;
use tracing::Instrument;

use super::emitter::Emitter;
use super::gates::{self, run_tool};
use super::park::Step;
use super::Turns;
use super::{emit_stream, Decision, Outcome, Resolution, TurnState};
use crate::backend::{Direction, StoredMessage};
use crate::config::AgentConfig;
use crate::error::{ClientError, ErrorCode};
use crate::llm::{ChatMessage, ChatRequest, ModelEvent, ToolCall};
use crate::protocol::outbound as out;
use crate::tools::ToolOutcome;
use crate::util::{new_id, now_ms, now_rfc3339};

pub(super) async fn drive(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    mut decision: Option<Decision>,
) -> Outcome {
    match drive_inner(turns, em, state, &mut decision).await {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    }
}

async fn drive_inner(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    decision: &mut Option<Decision>,
) -> Result<Outcome, ClientError> {
    let agent = turns
        .agents
        .get(&state.agent_id)
        .ok_or_else(|| ClientError::new(ErrorCode::AgentNotFound, "the session's agent is no longer configured"))?;
    super::auto_context(turns, &agent, state).await;
    turns.summarise(state).await;
    loop {
        match run_pending_tools(turns, em, state, &agent, decision).await? {
            Pending::Parked => return Ok(Outcome::Parked),
            Pending::Handoff => {
                // The client runs its tool and continues the thread with the result: this turn ends here.
                let said = state.messages.last().and_then(|m| m.content.as_ref()).and_then(Value::as_str);
                return finish(turns, state, said.unwrap_or_default().to_string()).await;
            }
            Pending::Done => {}
        }
        // The step a takeover resumes from: the model call is made again (continuing what was sent of it).
        super::durable::step(turns, em, state).await?;
        if state.iteration >= turns.config.turn.max_iterations {
            return Err(ClientError::new(
                ErrorCode::AgentError,
                format!("the agent did not finish within {} model calls", turns.config.turn.max_iterations),
            ));
        }
        state.iteration += 1;
        let (text, calls) = call_model(turns, em, state, &agent).await?;
        if calls.is_empty() {
            return finish(turns, state, text).await;
        }
        if calls.len() > turns.config.turn.max_tool_calls {
            return Err(ClientError::new(
                ErrorCode::AgentError,
                format!(
                    "the model asked for {} tool calls in one response (turn.max_tool_calls is {})",
                    calls.len(),
                    turns.config.turn.max_tool_calls
                ),
            ));
        }
        state.messages.push(ChatMessage {
            role: "assistant".into(),
            content: (!text.is_empty()).then_some(Value::String(text)),
            tool_calls: Some(calls.clone()),
            tool_call_id: None,
        });
        state.pending = calls;
        // The model's calls are durable before any of them goes through its gates: a takeover runs them (asking
        // again for an approval never given) instead of asking the model again.
        super::durable::step(turns, em, state).await?;
    }
}

/// Whether the pending tool calls all ran, or the turn parked on a gated one.
#[derive(PartialEq)]
enum Pending {
    Done,
    Parked,
    Handoff,
}

/// Runs the tool calls of the last model response in order, each through its gates ([`gates::step`]); a
/// call answered by the person (the decision the turn resumed with) takes that answer.
async fn run_pending_tools(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    agent: &AgentConfig,
    decision: &mut Option<Decision>,
) -> Result<Pending, ClientError> {
    while let Some(call) = state.pending.first().cloned() {
        let name = call.function.name.clone();
        let answered = decision.take_if(|d| d.tool_call_id == call.id).map(|d| d.resolution);
        let outcome = match answered {
            Some(Resolution::Approved) => run_tool(turns, em, state, agent, &call).await?,
            Some(Resolution::Denied(reason)) => {
                ToolOutcome { is_error: true, result: format!("User denied: {reason}") }
            }
            Some(Resolution::Result(outcome)) => outcome,
            answered @ (Some(Resolution::Verified) | None) => {
                match gates::step(turns, em, state, agent, &call, answered.is_some()).await? {
                    Step::Done(outcome) => outcome,
                    Step::Parked => return Ok(Pending::Parked),
                    Step::Handoff => return Ok(Pending::Handoff),
                }
            }
        };
        let title = super::steps::title(turns, state, &name);
        let chunk = out::tool_result_chunk(
            &state.request_id,
            &call.id,
            &name,
            outcome.is_error,
            &outcome.result,
            title.as_deref(),
        );
        emit_stream(em, state, &chunk);
        state.messages.push(ChatMessage::tool_result(&call.id, &outcome.result));
        state.pending.remove(0);
        // The result is durable before anything else runs: a takeover never runs this call again.
        super::durable::step(turns, em, state).await?;
    }
    Ok(Pending::Done)
}

/// One streamed model call: tokens go out as they come, usage is summed. Returns the text and the tool calls.
async fn call_model(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    agent: &AgentConfig,
) -> Result<(String, Vec<ToolCall>), ClientError> {
    // A reply cut by a pod's death (this turn was taken over): the client has its start, the model goes on.
    let partial = state.continue_from.take();
    let mut messages = state.messages.clone();
    let continue_final = partial.as_deref().is_some_and(|p| super::durable::continuing(turns, &mut messages, p));
    let request = ChatRequest {
        model: state.model.clone(),
        messages,
        tools: gates::offered(turns, agent, state),
        api_key: turns.config.llm.org_key(&state.org_id).map(str::to_string),
        continue_final,
    };
    let t0 = Instant::now();
    let llm_err = |e: crate::llm::LlmError| {
        tracing::warn!(error = %e, session_id = %state.session_id, "model call failed");
        ClientError::new(ErrorCode::LlmUnavailable, "the model is unavailable, please retry")
    };
    let chat_span = tracing::info_span!(
        "chat",
        otel.name = %format!("chat {}", state.model),
        otel.kind = "client",
        gen_ai.operation.name = "chat",
        gen_ai.system = "openai",
        gen_ai.request.model = %state.model,
        gen_ai.usage.input_tokens = tracing::field::Empty,
        gen_ai.usage.output_tokens = tracing::field::Empty,
        gen_ai.response.finish_reasons = tracing::field::Empty,
    );
    let usage_before = state.usage;
    let mut stream = turns.model.stream(request).instrument(chat_span.clone()).await.map_err(llm_err)?;
    let mut first = true;
    let mut text = partial.unwrap_or_default();
    let mut calls: Vec<ToolCall> = Vec::new();
    while let Some(ev) = stream.next().await {
        if first {
            first = false;
            turns.metrics.time_to_first_token(t0.elapsed());
        }
        match ev.map_err(llm_err)? {
            ModelEvent::Token(t) => {
                text.push_str(&t);
                if state.stream {
                    em.send_text(out::token_text("stream_token", &state.request_id, &t));
                }
            }
            ModelEvent::Reasoning(t) => {
                if state.stream {
                    em.send_text(out::token_text("stream_reasoning", &state.request_id, &t));
                }
            }
            ModelEvent::ToolCalls(c) => calls.extend(c),
            ModelEvent::Idle => em.kick(),
            ModelEvent::Usage(u) => {
                state.usage.prompt_tokens += u.prompt_tokens;
                state.usage.completion_tokens += u.completion_tokens;
                turns.metrics.tokens(u);
            }
        }
    }
    let (input, output) = (
        state.usage.prompt_tokens - usage_before.prompt_tokens,
        state.usage.completion_tokens - usage_before.completion_tokens,
    );
    chat_span.record("gen_ai.usage.input_tokens", input);
    chat_span.record("gen_ai.usage.output_tokens", output);
    chat_span
        .record("gen_ai.response.finish_reasons", if calls.is_empty() { "[\"stop\"]" } else { "[\"tool_calls\"]" });
    drop(chat_span);
    turns.count_call(state, input, output).await;
    Ok((text, calls))
}

/// Stores the final answer in the conversation; the caller emits the terminal event.
async fn finish(turns: &Turns, state: &TurnState, text: String) -> Result<Outcome, ClientError> {
    let message_id = new_id();
    if text.is_empty() && !state.client_tools.is_empty() {
        // A turn that handed a call to the client without a word: nothing to keep in the conversation.
        return Ok(Outcome::Completed { text, message_id });
    }
    let stored = StoredMessage {
        id: message_id.clone(),
        direction: Direction::Outbound,
        text: text.clone(),
        created_at: now_rfc3339(),
    };
    turns.backends.sessions.append_message(&state.conversation_id, &stored, now_ms()).await?;
    Ok(Outcome::Completed { text, message_id })
}
