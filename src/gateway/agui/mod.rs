//! AG-UI 1.0, a door on the same sessions: `POST /agui` (and `/agui/{agentId}`) takes a `RunAgentInput` and
//! answers an SSE stream of AG-UI events; `GET /agui/threads/{threadId}/messages` is the stored thread. A
//! `threadId` is a session of the caller (an orra namespace under another name), so its turns are logged,
//! cross-pod and visible to every other door. A run starts with `RUN_STARTED` and `MESSAGES_SNAPSHOT` (the
//! stored thread), streams the turn ([`render`]), and ends with `RUN_FINISHED` (success, cancelled, or an
//! interrupt when the turn parks on an approval, a card or an OTP code) or `RUN_ERROR`. A run whose `resume`
//! answers the interrupt continues the parked turn, from any pod ([`interrupts`]). Each event from the log has
//! the SSE id `<seq>:<epoch>:<from>`: a client whose stream dropped posts the same input again with
//! `Last-Event-ID` and gets the rest of the run, not a new one.

mod interrupts;
mod render;
mod wire;

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use self::render::{Rendered, Renderer};
use super::rest::{self, ChatRequest};
use super::watch::SessionWatch;
use super::{namespace, Api, ApiError, Caller};
use crate::app::App;
use crate::backend::SessionRecord;
use crate::error::ClientError;

/// Messages of the stored thread in a run's `MESSAGES_SNAPSHOT` (the newest).
const SNAPSHOT_MESSAGES: usize = 100;

pub(super) async fn run_default(State(api): State<Arc<Api>>, Caller(who): Caller, h: HeaderMap, b: Body) -> Response {
    run(api, who, None, h, b).await
}

pub(super) async fn run_agent(
    State(api): State<Arc<Api>>,
    Path(agent): Path<String>,
    Caller(who): Caller,
    h: HeaderMap,
    b: Body,
) -> Response {
    run(api, who, Some(agent), h, b).await
}

/// `GET /agui/threads/{threadId}/messages` → `{threadId, messages}` (AG-UI messages, oldest first).
pub(super) async fn messages(State(api): State<Arc<Api>>, Path(thread): Path<String>, Caller(who): Caller) -> Response {
    let answer = async {
        namespace::validate(&thread)?;
        let session = thread_session(&api.app, &who, &thread).await?;
        api.app.turns.take_read(&who).await?;
        let messages = snapshot(&api.app, &session, usize::MAX / 2).await?;
        Ok::<_, ApiError>(Json(json!({"threadId": thread, "messages": messages})))
    };
    match answer.await {
        Ok(body) => body.into_response(),
        Err(e) => e.into_response(),
    }
}

async fn thread_session(app: &App, who: &crate::auth::Identity, thread: &str) -> Result<SessionRecord, ApiError> {
    namespace::find(app, who, thread).await?.ok_or_else(|| ApiError::not_found(format!("thread '{thread}' not found")))
}

/// The stored thread as AG-UI messages, oldest first (at most `max`).
async fn snapshot(app: &App, session: &SessionRecord, max: usize) -> Result<Vec<Value>, ClientError> {
    let page = app.backends.sessions.messages_page(&session.conversation_id, None, max.min(1_000)).await?;
    Ok(page.messages.iter().rev().map(wire::stored_message).collect())
}

async fn run(
    api: Arc<Api>,
    who: crate::auth::Identity,
    agent: Option<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let started = async {
        let input: wire::RunAgentInput = api.json(body).await?;
        namespace::validate(&input.thread_id)
            .map_err(|_| ApiError::invalid("threadId must be 1-128 of A-Z a-z 0-9 : _ . @ - (a UUID is fine)"))?;
        if let Some(last) = headers.get("last-event-id") {
            let pos = last.to_str().ok().and_then(StreamId::parse).ok_or_else(|| {
                ApiError::invalid("Last-Event-ID must be an event id of this stream (<seq>:<epoch>:<from>)")
            })?;
            return reconnect(&api.app, &who, &input, pos).await;
        }
        if !input.resume.is_empty() {
            return interrupts::resume(&api.app, &who, &input).await;
        }
        start(&api, &who, agent, &input).await
    };
    match started.await {
        Ok(run) => {
            let events = futures_util::stream::unfold(run, |mut run| async move {
                let event = run.next_event().await?;
                Some((Ok::<_, Infallible>(event), run))
            });
            Sse::new(events).into_response()
        }
        Err(e) => e.into_response(),
    }
}

/// A new run: the input's last message is the user's (a frontend tool's result continues the turn that
/// called it).
async fn start(
    api: &Api,
    who: &crate::auth::Identity,
    agent: Option<String>,
    input: &wire::RunAgentInput,
) -> Result<RunStream, ApiError> {
    let Some(last) = input.messages.last() else {
        return Err(ApiError::invalid("messages is empty: the run needs the user's message"));
    };
    let tools = wire::client_tools(&input.tools).map_err(ApiError::invalid)?;
    let (message, continuation) = match last.role.as_str() {
        "user" => (last.text(), Vec::new()),
        // A frontend tool ran: the turn goes on with its result.
        "tool" => (String::new(), wire::continuation(&input.messages).map_err(ApiError::invalid)?),
        other => {
            return Err(ApiError::invalid(format!(
                "the last message is a '{other}' message: a run starts from the user's message or a tool's result"
            )))
        }
    };
    let req = ChatRequest {
        message,
        namespace: Some(input.thread_id.clone()),
        agent,
        model: None,
        client: crate::turn::ClientSide { tools, continuation },
    };
    let t = rest::start(api, who, req).await?;
    let from = t.watch.position();
    RunStream::new(&api.app, t.session, t.watch, Renderer::new(&input.thread_id, &input.run_id, &t.request_id), from)
        .await
}

/// `Last-Event-ID` of a dropped stream: the rest of that run, rendered again from where it began.
async fn reconnect(
    app: &Arc<App>,
    who: &crate::auth::Identity,
    input: &wire::RunAgentInput,
    pos: StreamId,
) -> Result<RunStream, ApiError> {
    let session = thread_session(app, who, &input.thread_id).await?;
    let sid = &session.session_id;
    let epoch = app.backends.log.epoch(sid).await.map_err(ClientError::from)?;
    if epoch.as_deref() != Some(pos.epoch.as_str()) {
        return Err(ApiError::invalid("the thread's event log started again since that id: GET its messages"));
    }
    // The turn the run followed: the first turn event after where the run began.
    let first = app.backends.log.read_after(sid, pos.from, 64).await.map_err(ClientError::from)?;
    let request_id = first
        .iter()
        .filter_map(|(_, e)| serde_json::from_str::<Value>(e).ok())
        .find_map(|e| e.get("requestId").and_then(Value::as_str).map(str::to_string))
        .ok_or_else(|| ApiError::not_found("nothing of that run is left to send"))?;
    let watch = SessionWatch::open(app, sid, Some(pos.from)).await?;
    let mut run =
        RunStream::new(app, session, watch, Renderer::new(&input.thread_id, &input.run_id, &request_id), pos.from)
            .await?;
    // The client has what it saw: the run's opening and every event up to its last id.
    run.ready.clear();
    run.skip_through = pos.seq;
    Ok(run)
}

/// An SSE id: the log position of the event, the log's epoch, and where the run began in the log.
struct StreamId {
    seq: u64,
    epoch: String,
    from: u64,
}

impl StreamId {
    fn parse(s: &str) -> Option<StreamId> {
        let mut parts = s.splitn(3, ':');
        let seq = parts.next()?.parse().ok()?;
        let epoch = parts.next().filter(|e| !e.is_empty())?.to_string();
        let from = parts.next()?.parse().ok()?;
        (from <= seq).then_some(StreamId { seq, epoch, from })
    }
}

/// One run's SSE stream, produced as the client reads it (events are read from the log on demand).
struct RunStream {
    app: Arc<App>,
    session: SessionRecord,
    watch: SessionWatch,
    renderer: Renderer,
    /// Where in the log the run began (the ids carry it, for a reconnect).
    from: u64,
    /// Rendered but not sent: a reconnect re-renders what the client already saw.
    skip_through: u64,
    ready: VecDeque<Event>,
    done: bool,
    epoch: Option<String>,
}

impl RunStream {
    /// A run on `session` from log position `from`, opened with `RUN_STARTED` and the thread's snapshot.
    async fn new(
        app: &Arc<App>,
        session: SessionRecord,
        watch: SessionWatch,
        renderer: Renderer,
        from: u64,
    ) -> Result<RunStream, ApiError> {
        let mut ready = VecDeque::new();
        ready.push_back(sse(&renderer.started(), None));
        ready.push_back(sse(&wire::messages_snapshot(snapshot(app, &session, SNAPSHOT_MESSAGES).await?), None));
        Ok(RunStream {
            app: app.clone(),
            session,
            watch,
            renderer,
            from,
            skip_through: 0,
            ready,
            done: false,
            epoch: None,
        })
    }

    /// A run that ends at once with `last` (an answer the park refused: it asks again).
    fn push_final(&mut self, events: Vec<Value>) {
        for e in events {
            self.ready.push_back(sse(&e, None));
        }
        self.done = true;
    }

    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            let rid = self.renderer.request_id().to_string();
            let batch = match self.watch.next_while_held(Some(&rid)).await {
                Ok(Some(b)) => b,
                Ok(None) => {
                    self.push_final(vec![wire::run_error(
                        "the run ended without an answer (GET the thread's messages)",
                        "RUN_LOST",
                    )]);
                    continue;
                }
                Err(e) => {
                    self.push_final(vec![wire::run_error(&e.message, e.code.as_str())]);
                    continue;
                }
            };
            if self.epoch.is_none() {
                self.epoch = self.app.backends.log.epoch(&self.session.session_id).await.ok().flatten();
            }
            for (seq, event) in batch {
                if self.done {
                    break;
                }
                let id = format!("{seq}:{}:{}", self.epoch.as_deref().unwrap_or("-"), self.from);
                let send = seq > self.skip_through;
                let (events, end) = match self.renderer.event(seq, &event) {
                    Rendered::Events(v) => (v, false),
                    Rendered::End(v) => (v, true),
                    Rendered::Parked { mut before } => {
                        match interrupts::ending(&self.app, &self.session, &mut self.renderer).await {
                            Ok(Some(mut ending)) => {
                                before.append(&mut ending);
                                (before, true)
                            }
                            // Already answered (a fast approver elsewhere): the turn goes on.
                            Ok(None) => (before, false),
                            Err(e) => (vec![wire::run_error(&e.message, e.code.as_str())], true),
                        }
                    }
                };
                if send {
                    self.ready.extend(events.iter().map(|e| sse(e, Some(&id))));
                }
                self.done |= end;
            }
        }
    }
}

fn sse(event: &Value, id: Option<&str>) -> Event {
    let e = Event::default().data(event.to_string());
    match id {
        Some(id) => e.id(id),
        None => e,
    }
}
