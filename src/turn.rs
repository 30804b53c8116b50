//! The agent turn engine. A turn is a loop of model calls and tool calls whose whole state
//! ([`TurnState`]) is serializable: when a gated tool needs a human, the state is stored as a parked turn
//! and the task ends; the decision, arriving at any pod, resumes it from the stored state.
//!
//! Every event goes through the session log (`App::emit`), so it reaches every attached socket on every pod,
//! in order. A turn ends with exactly one terminal event: `eventual_response`, `cancelled` or `error`.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tokio::sync::{mpsc, oneshot};
use tracing::Instrument;

use crate::agents::{needs_confirmation, tool_specs};
use crate::app::App;
use crate::backend::{ParkedTurn, PendingCall, StoredMessage, TurnInfo};
use crate::config::AgentConfig;
use crate::error::{ClientError, ErrorCode};
use crate::llm::{ChatMessage, ChatRequest, ModelEvent, ToolCall};
use crate::protocol::outbound::{self as out, Usage};
use crate::tools::{ToolContext, ToolOutcome};
use crate::util::{new_id, now_ms, now_rfc3339};

/// Everything a turn needs to continue, on any pod.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TurnState {
    pub turn_id: String,
    pub request_id: String,
    pub session_id: String,
    pub conversation_id: String,
    pub agent_id: String,
    pub model: String,
    pub stream: bool,
    pub messages: Vec<ChatMessage>,
    pub iteration: u32,
    pub usage: Usage,
    /// Tool calls of the last model response not yet run, in order.
    pub pending: Vec<ToolCall>,
    pub files: Vec<Value>,
    /// W3C traceparent of the turn's span, so a resumed turn on another pod joins the same trace.
    #[serde(default)]
    pub traceparent: Option<String>,
}

/// A human's answer to the first pending call.
#[derive(Debug, Clone)]
pub struct Decision {
    pub tool_call_id: String,
    pub approved: bool,
    pub reason: String,
}

enum Outcome {
    Completed { text: String, message_id: String },
    Parked,
    Failed(ClientError),
}

/// Builds the model context for a new turn and runs it in the background.
pub fn spawn_new(app: Arc<App>, state: TurnState) {
    let tasks = app.tasks.clone();
    tasks.spawn(run(app, state, None));
}

/// Resumes a parked turn on this pod with a decision (approve, deny, or timeout-deny).
pub async fn resume_parked(app: Arc<App>, parked: ParkedTurn, approved: bool, reason: &str) {
    let state: TurnState = match serde_json::from_value(parked.state.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::error!(error = %e, session_id = %parked.session_id, "parked turn state unreadable");
            let _ = app.backends.leases.release(&parked.session_id, &parked.turn_id).await;
            let err = ClientError::new(ErrorCode::AgentError, "the parked turn could not be resumed");
            app.emit_turn_error(&parked.session_id, &parked.request_id, &err).await;
            return;
        }
    };
    let info =
        TurnInfo { turn_id: state.turn_id.clone(), request_id: state.request_id.clone(), pod_id: app.pod_id.clone() };
    let lease_ms = app.config.turn.lease_ms;
    let leases = &app.backends.leases;
    let held = match leases.renew(&state.session_id, &info, lease_ms).await {
        Ok(true) => true,
        _ => leases.acquire(&state.session_id, &info, lease_ms).await.unwrap_or(false),
    };
    if !held {
        tracing::warn!(session_id = %state.session_id, "resuming a parked turn whose lease was lost");
    }
    let decision = Decision { tool_call_id: parked.call.tool_call_id.clone(), approved, reason: reason.to_string() };
    let tasks = app.tasks.clone();
    tasks.spawn(run(app, state, Some(decision)));
}

async fn run(app: Arc<App>, state: TurnState, decision: Option<Decision>) {
    let span = tracing::info_span!(
        "turn",
        otel.name = "agent.turn",
        session_id = %state.session_id,
        request_id = %state.request_id,
        turn_id = %state.turn_id,
        pod = %app.pod_id,
        resumed = decision.is_some(),
    );
    if let Some(tp) = &state.traceparent {
        crate::telemetry::set_parent(&span, tp);
    }
    run_in_span(app, state, decision).instrument(span).await
}

async fn run_in_span(app: Arc<App>, mut state: TurnState, decision: Option<Decision>) {
    let sid = state.session_id.clone();
    let started = Instant::now();
    app.metrics.turns_started.fetch_add(1, Ordering::Relaxed);
    app.metrics.turns_running.fetch_add(1, Ordering::Relaxed);
    let cancel = app.register_turn(&sid, &state.turn_id);
    let info =
        TurnInfo { turn_id: state.turn_id.clone(), request_id: state.request_id.clone(), pod_id: app.pod_id.clone() };
    let renewer = tokio::spawn(renew_loop(app.clone(), sid.clone(), info));

    let em = Emitter::start(app.clone(), sid.clone());
    let outcome = tokio::select! {
        o = drive(&app, &em, &mut state, decision) => Some(o),
        _ = cancel.cancelled() => None,
        _ = app.interrupt.cancelled() => Some(Outcome::Failed(ClientError::new(
            ErrorCode::TurnInterrupted, "the turn was interrupted: the server is shutting down"))),
        _ = app.stopped.cancelled() => {
            // The pod is gone (killed): nothing is released or emitted; the lease lapses and another pod's
            // sweeper ends the turn.
            renewer.abort();
            return;
        }
    };
    renewer.abort();
    // Everything the turn queued is logged before its terminal event (and before the lease is released).
    let outcome = match (em.flush().await, outcome) {
        (Err(e), Some(Outcome::Completed { .. })) => Some(Outcome::Failed(e)),
        (_, o) => o,
    };
    app.unregister_turn(&sid, &state.turn_id);
    app.metrics.turns_running.fetch_sub(1, Ordering::Relaxed);
    app.metrics.observe_turn(started.elapsed().as_millis() as u64);
    let rid = state.request_id.clone();
    let release = || async {
        if let Err(e) = app.backends.leases.release(&sid, &state.turn_id).await {
            tracing::warn!(error = %e, session_id = %sid, "lease release failed");
        }
    };
    match outcome {
        Some(Outcome::Parked) => {
            // Hand the slot over to the parked state only now that the renewer is stopped, so it cannot put
            // this pod back as the holder of a turn no pod runs.
            if let Err(e) = hand_over_parked(&app, &state).await {
                tracing::warn!(error = %e, session_id = %sid, "could not hand the parked turn's lease over");
            }
        }
        Some(Outcome::Completed { text, message_id }) => {
            // Release first so a client that answers the final event at once is not told TURN_IN_PROGRESS.
            release().await;
            if let Err(e) = app.emit(&sid, &out::eventual_response(&rid, &message_id, &text, state.usage)).await {
                tracing::error!(error = %e, session_id = %sid, "could not emit eventual_response");
            }
        }
        Some(Outcome::Failed(err)) => {
            release().await;
            app.emit_turn_error(&sid, &rid, &err).await;
        }
        None => {
            // A park that raced the cancel must not be resumable.
            let _ = app.backends.confirms.take(&sid).await;
            release().await;
            if let Err(e) = app.emit(&sid, &out::cancelled(&rid)).await {
                tracing::error!(error = %e, session_id = %sid, "could not emit cancelled");
            }
        }
    }
}

async fn renew_loop(app: Arc<App>, sid: String, info: TurnInfo) {
    let every = Duration::from_millis((app.config.turn.lease_ms / 3).max(100));
    loop {
        tokio::time::sleep(every).await;
        match app.backends.leases.renew(&sid, &info, app.config.turn.lease_ms).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::warn!(session_id = %sid, "turn lease lost; re-acquiring");
                let _ = app.backends.leases.acquire(&sid, &info, app.config.turn.lease_ms).await;
            }
            Err(e) => tracing::warn!(session_id = %sid, error = %e, "turn lease renewal failed"),
        }
    }
}

/// Group commit for a turn's events: the turn queues events without waiting; one task appends whatever has
/// queued up while the previous append was in flight, and within `turn.coalesce_ms` of a batch's first event,
/// as one batch (consecutive seqs, one bus message). Order is the queue's order; `flush` cuts the wait short
/// and returns once everything queued is in the log.
struct Emitter {
    /// Sender side of the turn's event queue; the emitter task owns the receiver.
    tx: mpsc::UnboundedSender<EmitCmd>,
    /// Wakes the emitter task out of its coalescing wait; shared by this handle (`flush`) and the task.
    flush_now: Arc<tokio::sync::Notify>,
}

enum EmitCmd {
    Event(String),
    Flush(oneshot::Sender<Result<(), ClientError>>),
}

/// Largest batch per append (bounds one script call).
const EMIT_BATCH: usize = 256;

impl Emitter {
    fn start(app: Arc<App>, session_id: String) -> Emitter {
        let (tx, mut rx) = mpsc::unbounded_channel::<EmitCmd>();
        let flush_now = Arc::new(tokio::sync::Notify::new());
        let wake = flush_now.clone();
        let coalesce = Duration::from_millis(app.config.turn.coalesce_ms);
        tokio::spawn(async move {
            let mut failed: Option<ClientError> = None;
            // The turn's first event (time to first token) is appended at once.
            let mut first_batch = true;
            while let Some(first) = rx.recv().await {
                if !first_batch && !coalesce.is_zero() && matches!(first, EmitCmd::Event(_)) {
                    // Sleeping on a timer, not on the queue: tokens sent meanwhile do not wake this task.
                    tokio::select! {
                        _ = tokio::time::sleep(coalesce) => {}
                        _ = wake.notified() => {}
                    }
                }
                first_batch = false;
                let mut events = Vec::new();
                let mut flushes = Vec::new();
                let mut next = Some(first);
                while let Some(cmd) = next.take() {
                    match cmd {
                        EmitCmd::Event(e) => events.push(e),
                        EmitCmd::Flush(f) => flushes.push(f),
                    }
                    if events.len() < EMIT_BATCH {
                        next = rx.try_recv().ok();
                    }
                }
                if !events.is_empty() && failed.is_none() {
                    let n = events.len() as u64;
                    match app.backends.log.append_batch(&session_id, events).await {
                        Ok(_) => {
                            app.metrics.events_published.fetch_add(n, Ordering::Relaxed);
                        }
                        Err(e) => failed = Some(e.into()),
                    }
                }
                for f in flushes {
                    let _ = f.send(failed.clone().map_or(Ok(()), Err));
                }
            }
        });
        Emitter { tx, flush_now }
    }

    fn send(&self, event: &Value) {
        self.send_text(event.to_string());
    }

    fn send_text(&self, event: String) {
        let _ = self.tx.send(EmitCmd::Event(event));
    }

    /// Ends the current coalescing wait now, without waiting for the append (the model's burst is complete).
    fn kick(&self) {
        self.flush_now.notify_one();
    }

    async fn flush(&self) -> Result<(), ClientError> {
        let (tx, rx) = oneshot::channel();
        if self.tx.send(EmitCmd::Flush(tx)).is_err() {
            return Err(ClientError::new(ErrorCode::Internal, "event emitter stopped"));
        }
        // A permit left over when the task was not waiting only ends a later wait early.
        self.flush_now.notify_one();
        rx.await.unwrap_or_else(|_| Err(ClientError::new(ErrorCode::Internal, "event emitter stopped")))
    }
}

/// `stream_*` events are skipped for `stream: false`.
fn emit_stream(em: &Emitter, state: &TurnState, event: &Value) {
    if state.stream {
        em.send(event);
    }
}

async fn drive(app: &Arc<App>, em: &Emitter, state: &mut TurnState, mut decision: Option<Decision>) -> Outcome {
    match drive_inner(app, em, state, &mut decision).await {
        Ok(o) => o,
        Err(e) => Outcome::Failed(e),
    }
}

async fn drive_inner(
    app: &Arc<App>,
    em: &Emitter,
    state: &mut TurnState,
    decision: &mut Option<Decision>,
) -> Result<Outcome, ClientError> {
    let agent = app
        .agents
        .get(&state.agent_id)
        .ok_or_else(|| ClientError::new(ErrorCode::AgentNotFound, "the session's agent is no longer configured"))?;
    loop {
        while let Some(call) = state.pending.first().cloned() {
            let name = call.function.name.clone();
            let tool = agent.tools.iter().find(|t| t.name == name);
            let gated = tool.is_some() && needs_confirmation(&agent, &name);
            let outcome = if gated {
                match decision.take().filter(|d| d.tool_call_id == call.id) {
                    None => {
                        park(app, em, state, &call).await?;
                        return Ok(Outcome::Parked);
                    }
                    Some(d) if d.approved => run_tool(app, state, &agent, &call).await,
                    Some(d) => ToolOutcome { is_error: true, result: format!("User denied: {}", d.reason) },
                }
            } else {
                emit_stream(em, state, &out::tool_call_chunk(&state.request_id, &name, &call.function.arguments));
                match tool {
                    Some(_) => run_tool(app, state, &agent, &call).await,
                    None => ToolOutcome { is_error: true, result: format!("unknown tool '{name}'") },
                }
            };
            emit_stream(
                em,
                state,
                &out::tool_result_chunk(&state.request_id, &name, outcome.is_error, &outcome.result),
            );
            state.messages.push(ChatMessage::tool_result(&call.id, &outcome.result));
            state.pending.remove(0);
        }

        if state.iteration >= app.config.turn.max_iterations {
            return Err(ClientError::new(
                ErrorCode::AgentError,
                format!("the agent did not finish within {} model calls", app.config.turn.max_iterations),
            ));
        }
        state.iteration += 1;
        let request =
            ChatRequest { model: state.model.clone(), messages: state.messages.clone(), tools: tool_specs(&agent) };
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
        let mut stream = app.model.stream(request).instrument(chat_span.clone()).await.map_err(llm_err)?;
        let mut first = true;
        let mut text = String::new();
        let mut calls: Vec<ToolCall> = Vec::new();
        while let Some(ev) = stream.next().await {
            if first {
                first = false;
                app.metrics.observe_ttft(t0.elapsed().as_millis() as u64);
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
                    app.metrics.tokens_prompt.fetch_add(u.prompt_tokens, Ordering::Relaxed);
                    app.metrics.tokens_completion.fetch_add(u.completion_tokens, Ordering::Relaxed);
                }
            }
        }
        chat_span.record("gen_ai.usage.input_tokens", state.usage.prompt_tokens - usage_before.prompt_tokens);
        chat_span.record("gen_ai.usage.output_tokens", state.usage.completion_tokens - usage_before.completion_tokens);
        chat_span
            .record("gen_ai.response.finish_reasons", if calls.is_empty() { "[\"stop\"]" } else { "[\"tool_calls\"]" });
        drop(chat_span);
        if !calls.is_empty() {
            state.messages.push(ChatMessage {
                role: "assistant".into(),
                content: (!text.is_empty()).then(|| Value::String(text.clone())),
                tool_calls: Some(calls.clone()),
                tool_call_id: None,
            });
            state.pending = calls;
            continue;
        }
        let message_id = new_id();
        let stored = StoredMessage {
            id: message_id.clone(),
            direction: "outbound".into(),
            text: text.clone(),
            created_at: now_rfc3339(),
        };
        app.backends.sessions.append_message(&state.conversation_id, &stored, now_ms()).await?;
        return Ok(Outcome::Completed { text, message_id });
    }
}

/// The slot stays taken while parked, held by no pod, a little past the confirmation deadline so the timeout
/// sweeper (not the dead-pod sweeper) ends it. A decision that already resumed the turn elsewhere keeps it.
async fn hand_over_parked(app: &App, state: &TurnState) -> Result<(), ClientError> {
    let parked_info =
        TurnInfo { turn_id: state.turn_id.clone(), request_id: state.request_id.clone(), pod_id: String::new() };
    let hold_ms = app.config.confirm.timeout_s * 1000 + app.config.turn.lease_ms + 5_000;
    if app.backends.confirms.get(&state.session_id).await?.is_some_and(|p| p.turn_id == state.turn_id) {
        app.backends.leases.renew(&state.session_id, &parked_info, hold_ms).await?;
    }
    Ok(())
}

/// Stores the parked turn, then announces the gated call; the task then ends.
///
/// The record is written first so that a pod dying right after a client saw `write_confirmation_required`
/// cannot lose the confirmation. Until the lease is handed over (last step) the turn still counts as running
/// on this pod, so a cancel in between goes through this task and `cancelled` stays the last event.
async fn park(app: &Arc<App>, em: &Emitter, state: &TurnState, call: &ToolCall) -> Result<(), ClientError> {
    let name = &call.function.name;
    let expires_at_ms = now_ms() + (app.config.confirm.timeout_s as i64) * 1000;
    let parked = ParkedTurn {
        session_id: state.session_id.clone(),
        turn_id: state.turn_id.clone(),
        request_id: state.request_id.clone(),
        call: PendingCall {
            tool_call_id: call.id.clone(),
            tool_name: name.clone(),
            arguments: call.function.arguments.clone(),
        },
        expires_at_ms,
        state: {
            let mut stored = state.clone();
            stored.traceparent = crate::telemetry::current_traceparent().or_else(|| state.traceparent.clone());
            serde_json::to_value(&stored).map_err(|e| ClientError::new(ErrorCode::Internal, e.to_string()))?
        },
    };
    app.backends.confirms.park(&parked).await?;
    em.send(&out::write_confirmation_required(
        &state.request_id,
        name,
        &format!("Tool '{name}' requires confirmation. Allow?"),
    ));
    emit_stream(em, state, &out::tool_call_chunk(&state.request_id, name, &call.function.arguments));
    em.flush().await?;
    Ok(())
}

async fn run_tool(app: &App, state: &TurnState, agent: &AgentConfig, call: &ToolCall) -> ToolOutcome {
    let Some(tool) = agent.tools.iter().find(|t| t.name == call.function.name) else {
        return ToolOutcome { is_error: true, result: format!("unknown tool '{}'", call.function.name) };
    };
    let ctx = ToolContext {
        session_id: &state.session_id,
        tool_call_id: &call.id,
        agent_id: &state.agent_id,
        files: &state.files,
    };
    let span = tracing::info_span!(
        "execute_tool",
        otel.name = %format!("execute_tool {}", tool.name),
        gen_ai.operation.name = "execute_tool",
        gen_ai.tool.name = %tool.name,
        gen_ai.tool.call.id = %call.id,
    );
    app.tools.call(tool, &call.function.arguments, ctx).instrument(span).await
}
