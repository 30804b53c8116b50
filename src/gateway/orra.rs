//! The orra WebSocket dialect on `/ws`: a socket whose first frame has `type` (and no `action`) speaks it for
//! its life. `chat` runs a turn in a namespace (the socket follows that session), `tool_approval_response`
//! decides a parked call, `ping` answers `pong`; the session's events are rendered as `text_delta`,
//! `tool_approval_request`, `response` and `error` frames ([`render`]). Errors never close the socket.

use serde_json::{json, Value};

use super::outcome::{self, Seen};
use super::rest::{self, ChatRequest};
use super::{namespace, ApiError};
use crate::app::App;
use crate::conn::Conn;
use crate::error::{ClientError, ErrorCode};
use crate::turn::{Answer, Verdict};

fn error_frame(message: impl std::fmt::Display) -> Value {
    json!({"type": "error", "error": message.to_string()})
}

fn invalid(conn: &Conn, why: &str) {
    conn.reply(&error_frame(format!("invalid message: {why}")));
}

/// A frame refused before it is read (the connection's frame budget): an orra `error` with the wait.
pub(crate) fn refuse(conn: &Conn, e: &ClientError) {
    conn.app.metrics.error(e.code);
    let mut frame = error_frame(&e.message);
    frame["code"] = json!(e.code.as_str());
    if let Some(ms) = e.retry_after_ms {
        frame["retry_after_ms"] = json!(ms);
    }
    conn.reply(&frame);
}

/// One client frame of an orra socket.
pub(crate) async fn handle(conn: &mut Conn, text: &str) {
    let Ok(frame) = serde_json::from_str::<Value>(text) else {
        return invalid(conn, "not JSON");
    };
    let Some(obj) = frame.as_object() else {
        return invalid(conn, "not a JSON object");
    };
    if obj.contains_key("action") {
        let why = if obj.contains_key("type") {
            "a frame has either `type` or `action`, not both"
        } else {
            "this connection speaks the orra dialect (`type` frames); open another socket for `action` frames"
        };
        return invalid(conn, why);
    }
    let result = match obj.get("type").and_then(Value::as_str) {
        Some("ping") => {
            conn.reply(&json!({"type": "pong"}));
            Ok(())
        }
        Some("chat") => chat(conn, &frame).await,
        Some("tool_approval_response") => approval(conn, &frame).await,
        Some(other) => return invalid(conn, &format!("unknown type '{other}'")),
        None => return invalid(conn, "`type` must be a string"),
    };
    if let Err(e) = result {
        conn.reply(&error_frame(e.message()));
    }
}

/// `{type: "chat", message, namespace?, model?, agent?}`: runs a turn; this socket follows the namespace.
async fn chat(conn: &mut Conn, frame: &Value) -> Result<(), ApiError> {
    let Some(message) = frame.get("message").and_then(Value::as_str).filter(|m| !m.trim().is_empty()) else {
        return Err(ApiError::invalid("invalid message: chat needs a non-empty `message`"));
    };
    let text_field = |k: &str| frame.get(k).and_then(Value::as_str).map(str::to_string);
    let req = ChatRequest {
        client: Default::default(),
        message: message.to_string(),
        namespace: text_field("namespace"),
        agent: text_field("agent"),
        model: text_field("model"),
    };
    let app = conn.app.clone();
    if conn.rate_limited() {
        let max = app.config.limits.messages_per_minute;
        return Err(ApiError::invalid(format!("rate limited: more than {max} messages per minute")));
    }
    let r = rest::resolve(&app, &conn.identity, req, conn.origin.as_deref()).await?;
    conn.attach_session(&r.session.session_id, None).await?;
    let who = conn.identity.clone();
    rest::run(&app, &who, r).await?;
    Ok(())
}

/// `{type: "tool_approval_response", call_id, approved, namespace?}`: decides the parked call, found in the
/// given namespace or among the sessions this socket follows. The resumed turn streams to this socket.
async fn approval(conn: &mut Conn, frame: &Value) -> Result<(), ApiError> {
    let Some(call_id) = frame.get("call_id").and_then(Value::as_str).filter(|c| !c.is_empty()) else {
        return Err(ApiError::invalid("invalid message: tool_approval_response needs `call_id`"));
    };
    let Some(approved) = frame.get("approved").and_then(Value::as_bool) else {
        return Err(ApiError::invalid("invalid message: tool_approval_response needs `approved` (true or false)"));
    };
    let app = conn.app.clone();
    let candidates: Vec<String> = match frame.get("namespace").and_then(Value::as_str) {
        Some(ns) => {
            namespace::validate(ns)?;
            vec![namespace::session_id(&conn.identity, ns)]
        }
        None => {
            // The sessions this socket follows, then the caller's namespaces (an answer may come from a socket
            // that never chatted there, on any pod).
            let mut sids: Vec<String> = conn.sessions.iter().cloned().collect();
            let page =
                app.backends.sessions.list_conversations(&conn.identity.org_id, &conn.identity.user_id, 0, 100).await;
            for c in page.map_err(ClientError::from)?.conversations {
                if let Some(ns) = c.namespace.as_deref() {
                    let sid = namespace::session_id(&conn.identity, ns);
                    if !sids.contains(&sid) {
                        sids.push(sid);
                    }
                }
            }
            sids
        }
    };
    for sid in candidates {
        let Some(parked) = app.turns.parked(&sid).await? else { continue };
        if parked.call.tool_call_id != call_id || parked.session_id != sid {
            continue;
        }
        // Only the caller's own sessions: the derived id or an attached (owned) session.
        let Some(session) = crate::tenancy::find_session(&app, &sid, &conn.identity).await? else { continue };
        conn.attach_session(&sid, None).await?;
        let answer = Answer::Confirm { call: Some(call_id), approved };
        return match app.turns.answer(&session, answer, |_| {}).await {
            Ok(Verdict::AlreadyDecided { approved: first, .. }) => {
                // Another answer won the race (on this pod or another): this one changes nothing.
                Err(ApiError::invalid(format!("approval '{call_id}' was already answered (approved: {first})")))
            }
            Ok(_) => Ok(()),
            Err(e) if e.code == ErrorCode::NoPendingConfirmation => {
                Err(ApiError::not_found(format!("no approval '{call_id}' is pending")))
            }
            Err(e) => Err(e.into()),
        };
    }
    Err(ApiError::not_found(format!("no approval '{call_id}' is pending")))
}

/// A logged session event as an orra socket sees it; None for what orra has no frame for (tool steps,
/// reasoning). Events that are not a turn's (publishes) pass through unchanged.
pub(crate) async fn render(app: &App, session_id: &str, event: &str) -> Option<String> {
    let v: Value = serde_json::from_str(event).ok()?;
    let Some(rid) = v.get("requestId").and_then(Value::as_str) else {
        return Some(event.to_string());
    };
    let frame = match outcome::read(&v, rid) {
        Seen::Delta(content) => json!({"type": "text_delta", "content": content}),
        Seen::Park => {
            let p = outcome::pending_park(app, session_id, rid).await.ok()??;
            let (ns, _) = namespace_and_agent(app, session_id).await;
            let (kind, mut frame) = outcome::park_event(&ns, &p);
            frame["type"] = json!(kind);
            frame
        }
        Seen::End(stop) => {
            let (ns, agent) = namespace_and_agent(app, session_id).await;
            match outcome::answer(stop, &ns, &agent) {
                Ok((_, mut body)) => {
                    body["type"] = json!("response");
                    body
                }
                Err(e) => error_frame(e.message()),
            }
        }
        Seen::Other => return None,
    };
    Some(frame.to_string())
}

/// The session's namespace and agent's display name, for the frames that name them (empty when unreadable).
async fn namespace_and_agent(app: &App, session_id: &str) -> (String, String) {
    match app.backends.sessions.get_session(session_id).await.ok().flatten() {
        Some(s) => (s.namespace.unwrap_or_default(), s.agent_name),
        None => (String::new(), String::new()),
    }
}
