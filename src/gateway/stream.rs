//! `POST /api/chat/stream`: the same turn as `/api/chat`, as Server-Sent Events (`text_delta`,
//! `tool_approval_request`, `response`, `error`), each with `id:` = the event's position in the session log,
//! `<seq>:<epoch>`. A caller whose connection dropped posts again with `Last-Event-ID` and the namespace: no new
//! turn starts, the events after that id are replayed from the log and the turn is followed to its end. The id
//! is read with the socket resume's rule (`protocol::position`): an id from another epoch of the log (it was
//! lost and started again) replays from the oldest event kept, as a socket resume does.
//!
//! The stream is produced as the client reads it (events are read from the log on demand), so a client that
//! stops reading holds one connection and no growing buffer.

use std::collections::VecDeque;
use std::convert::Infallible;
use std::sync::Arc;

use axum::body::Body;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{json, Value};

use super::outcome::{self, Seen};
use super::rest::{self, ChatRequest};
use super::watch::SessionWatch;
use super::{namespace, Api, ApiError, Caller};
use crate::app::App;
use crate::error::ClientError;
use crate::protocol::position::{recovered, replay_from, LogNow, StreamPosition};

/// A resume: only the namespace is needed (a message, if sent, is ignored).
#[derive(Deserialize)]
struct Resume {
    namespace: String,
}

/// State of one SSE response.
struct Follow {
    app: Arc<App>,
    watch: SessionWatch,
    session_id: String,
    namespace: String,
    agent: String,
    /// The turn followed; on a resume, the first turn seen after `Last-Event-ID`.
    request_id: Option<String>,
    ready: VecDeque<Event>,
    done: bool,
    /// The epoch the ids count in, read with the first event sent (a new namespace has none before).
    epoch: Option<String>,
}

pub(super) async fn chat_stream(
    State(api): State<Arc<Api>>,
    Caller(who): Caller,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let last_id = match headers.get("last-event-id").map(|v| v.to_str().ok().and_then(StreamPosition::parse)) {
        None => None,
        Some(Some(pos)) => Some(pos),
        Some(None) => {
            return ApiError::invalid("Last-Event-ID must be an event id of this stream (<seq>:<epoch>, or <seq>)")
                .into_response()
        }
    };
    let follow = async {
        match last_id {
            Some(pos) => {
                let r: Resume = api.json(body).await?;
                namespace::validate(&r.namespace)?;
                let session = namespace::find(&api.app, &who, &r.namespace)
                    .await?
                    .ok_or_else(|| ApiError::not_found(format!("namespace '{}' not found", r.namespace)))?;
                let log = &api.app.backends.log;
                let (epoch, bounds) = tokio::join!(log.epoch(&session.session_id), log.bounds(&session.session_id));
                let (epoch, (oldest, latest)) = (epoch.map_err(ClientError::from)?, bounds.map_err(ClientError::from)?);
                let now = LogNow { epoch: epoch.as_deref(), oldest, latest };
                let after = if pos.in_epoch(epoch.as_deref()) {
                    if pos.seq > latest {
                        return Err(ApiError::invalid(format!(
                            "Last-Event-ID {} is beyond this namespace's log ({latest})",
                            pos.seq
                        )));
                    }
                    if !recovered(&pos, now) {
                        return Err(ApiError::invalid(format!(
                            "Last-Event-ID {} is older than the log keeps (it starts at {oldest}); \
                             GET /api/sessions/{{namespace}} has the messages",
                            pos.seq
                        )));
                    }
                    pos.seq
                } else {
                    // The log started again since that id: everything it holds is new to this caller.
                    replay_from(&pos, now).0
                };
                let running = api.app.turns.holder(&session.session_id).await?;
                if after == latest && running.is_none() {
                    return Err(ApiError::not_found("nothing to resume: no turn runs and no event follows that id"));
                }
                let watch = SessionWatch::open(&api.app, &session.session_id, Some(after)).await?;
                Ok::<_, ApiError>(Follow::new(
                    &api.app,
                    watch,
                    session.session_id,
                    r.namespace,
                    session.agent_name,
                    None,
                ))
            }
            None => {
                let req: ChatRequest = api.json(body).await?;
                let t = rest::start(&api, &who, req).await?;
                Ok(Follow::new(
                    &api.app,
                    t.watch,
                    t.session.session_id,
                    t.namespace,
                    t.session.agent_name,
                    Some(t.request_id),
                ))
            }
        }
    }
    .await;
    match follow {
        Ok(f) => {
            let events = futures_util::stream::unfold(f, |mut f| async move {
                let event = f.next_event().await?;
                Some((Ok::<_, Infallible>(event), f))
            });
            Sse::new(events).keep_alive(KeepAlive::default()).into_response()
        }
        Err(e) => e.into_response(),
    }
}

impl Follow {
    fn new(
        app: &Arc<App>,
        watch: SessionWatch,
        session_id: String,
        namespace: String,
        agent: String,
        request_id: Option<String>,
    ) -> Follow {
        Follow {
            app: app.clone(),
            watch,
            session_id,
            namespace,
            agent,
            request_id,
            ready: VecDeque::new(),
            done: false,
            epoch: None,
        }
    }

    /// The next SSE event; None once the turn's last event was sent.
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(e) = self.ready.pop_front() {
                return Some(e);
            }
            if self.done {
                return None;
            }
            match self.watch.next_while_held(self.request_id.as_deref()).await {
                Ok(None) => self.finish(None, "error", error_data(&outcome::ended_without_answer())),
                Ok(Some(batch)) => {
                    for (seq, event) in batch {
                        if !self.done {
                            self.take(seq, &event).await;
                        }
                    }
                }
                Err(e) => self.finish(None, "error", json!({"error": e.message, "code": "runtime_error"})),
            }
        }
    }

    async fn take(&mut self, seq: u64, event: &Value) {
        if self.request_id.is_none() {
            // A resume follows the first turn it sees.
            let turn_event =
                event.get("requestId").is_some() && event.get("type").and_then(Value::as_str) != Some("keepalive");
            if !turn_event {
                return;
            }
            self.request_id = event.get("requestId").and_then(Value::as_str).map(str::to_string);
        }
        let rid = self.request_id.clone().unwrap_or_default();
        if self.epoch.is_none() {
            self.epoch = self.app.backends.log.epoch(&self.session_id).await.ok().flatten();
        }
        match outcome::read(event, &rid) {
            Seen::Delta(text) => self.push(Some(seq), "text_delta", json!({"content": text})),
            Seen::Park => match outcome::pending_park(&self.app, &self.session_id, &rid).await {
                Ok(Some(p)) => {
                    let (kind, data) = outcome::park_event(&self.namespace, &p);
                    self.finish(Some(seq), &kind, data)
                }
                Ok(None) => {}
                Err(e) => self.finish(Some(seq), "error", error_data(&e)),
            },
            Seen::End(stop) => match outcome::answer(stop, &self.namespace, &self.agent) {
                Ok((_, body)) => self.finish(Some(seq), "response", body),
                Err(e) => self.finish(Some(seq), "error", error_data(&e)),
            },
            Seen::Other => {}
        }
    }

    fn push(&mut self, id: Option<u64>, kind: &str, data: Value) {
        let mut event = Event::default().event(kind).data(data.to_string());
        if let Some(seq) = id {
            event = event.id(StreamPosition { seq, epoch: self.epoch.clone() }.to_string());
        }
        self.ready.push_back(event);
    }

    fn finish(&mut self, id: Option<u64>, kind: &str, data: Value) {
        self.push(id, kind, data);
        self.done = true;
    }
}

fn error_data(e: &ApiError) -> Value {
    json!({"error": e.message(), "code": e.code()})
}
