//! Action handlers: one function per client action. Request errors are replies to the asking socket (never
//! logged); once a turn is accepted (202) its events go through the session log.

use serde_json::{json, Value};

mod answers;
mod create;
mod resume;

use crate::backend::{ConversationRecord, Gate, SessionRecord, StoredMessage};
use crate::conn::Conn;
use crate::error::{ClientError, ErrorCode};
use crate::ids::RequestId;
use crate::protocol::inbound::{Action, ParseError, Request, SendMessage};
use crate::protocol::outbound as out;
use crate::turn::{StartRequest, TurnInput};

pub(crate) async fn handle(conn: &mut Conn, parsed: Result<Request, ParseError>) {
    let req = match parsed {
        Ok(r) => r,
        Err(e) => return conn.reply_error(e.request_id.as_deref(), &e.error),
    };
    let rid = req.request_id.clone();
    if let Err(e) = dispatch(conn, req).await {
        conn.reply_error(rid.as_deref(), &e);
    }
}

async fn dispatch(conn: &mut Conn, req: Request) -> Result<(), ClientError> {
    let rid = req.request_id.as_deref();
    match req.action {
        Action::Ping => conn.reply(&out::pong(rid)),
        Action::CreateSession(c) => create::create_session(conn, rid, c).await?,
        Action::SendMessage(m) => send_message(conn, rid, m).await?,
        Action::GetSession { session_id } => get_session(conn, rid, &session_id).await?,
        Action::GetMessages { session_id, limit, cursor } => {
            get_messages(conn, rid, &session_id, limit, cursor).await?
        }
        Action::ListConversations { limit, cursor } => list_conversations(conn, rid, limit, cursor).await?,
        Action::RenameConversation { conversation_id, title } => rename(conn, rid, &conversation_id, &title).await?,
        Action::ConfirmTool { session_id, approved, tool_call_id } => {
            let tool_call_id = tool_call_id.filter(|_| conn.extended);
            answers::confirm(conn, rid, &session_id, approved, tool_call_id).await?
        }
        Action::SubmitInteraction(s) => answers::submit_interaction(conn, rid, s).await?,
        Action::VerifyOtp { session_id, code } => answers::verify_otp(conn, rid, &session_id, &code).await?,
        Action::Cancel { session_id } => cancel(conn, rid, session_id).await?,
        Action::ResumeSession { session_id, after_seq, epoch, proof } if conn.extended => {
            resume::resume(conn, rid, &session_id, after_seq, epoch.as_deref(), proof).await?
        }
        Action::ResumeSession { .. } => {
            return Err(ClientError::new(
                ErrorCode::UnsupportedAction,
                "action 'resume_session' needs the 'switchboard' WebSocket subprotocol",
            ))
        }
    }
    Ok(())
}

/// The session if it exists and belongs to this socket's identity; otherwise `SESSION_NOT_FOUND`. A page
/// whose origin the session's agent does not allow gets `ORIGIN_NOT_ALLOWED` on every action, not only create.
pub(super) async fn owned_session(conn: &Conn, session_id: &str) -> Result<SessionRecord, ClientError> {
    let session = crate::tenancy::owned_session(&conn.app, session_id, &conn.identity).await?;
    origin_allowed(conn, &session)?;
    Ok(session)
}

/// `ORIGIN_NOT_ALLOWED` when the session's agent does not allow this socket's page.
pub(super) fn origin_allowed(conn: &Conn, session: &SessionRecord) -> Result<(), ClientError> {
    match conn.app.agents.get(&session.agent_id) {
        Some(agent) => crate::widget::auth::check_origin(&agent, conn.origin.as_deref()),
        None => Ok(()),
    }
}

/// The conversation if it exists and belongs to this socket's identity; otherwise `CONVERSATION_NOT_FOUND`.
pub(super) async fn owned_conversation(conn: &Conn, conversation_id: &str) -> Result<ConversationRecord, ClientError> {
    crate::tenancy::owned_conversation(&conn.app, conversation_id, &conn.identity).await
}

pub(super) fn session_data(s: &SessionRecord) -> Value {
    json!({
        "sessionId": s.session_id,
        "conversationId": s.conversation_id,
        "agentId": s.agent_id,
        "agentName": s.agent_name,
        "userParticipantId": s.user_participant_id,
        "agentParticipantId": s.agent_participant_id,
    })
}

async fn send_message(conn: &mut Conn, rid: Option<&str>, m: SendMessage) -> Result<(), ClientError> {
    let app = conn.app.clone();
    let session = owned_session(conn, &m.session_id).await?;
    // This socket's own pace (`limits.messages_per_minute`); the user's budget across doors is the turn's.
    if conn.rate_limited() {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("more than {} messages per minute", app.config.limits.messages_per_minute),
        ));
    }
    // Attached first, so the socket sees the turn's first event; a refused attach starts nothing.
    if let Err(e) = conn.attach_session(&session.session_id, None).await {
        conn.refund_send();
        return Err(e);
    }
    let request = StartRequest {
        request_id: rid.map(RequestId::from),
        model: m.model,
        skill: m.skill,
        input: TurnInput {
            message: m.message,
            stream: m.stream,
            images: m.images,
            files: m.files,
            client: Default::default(),
        },
    };
    match app.turns.start(&conn.identity, &session, request).await {
        Ok(request_id) => {
            conn.reply(&out::immediate(Some(request_id.as_str()), 202, "Processing your request...", json!({})));
            Ok(())
        }
        Err(e) => {
            conn.refund_send();
            Err(e)
        }
    }
}

async fn get_session(conn: &mut Conn, rid: Option<&str>, session_id: &str) -> Result<(), ClientError> {
    let s = owned_session(conn, session_id).await?;
    let mut data = session_data(&s);
    data["status"] = json!("active");
    data["threadId"] = json!(s.conversation_id);
    if conn.extended {
        if let Some(p) = conn.app.turns.parked(session_id).await? {
            let expires_at = crate::util::rfc3339_from_ms(p.expires_at_ms);
            match &p.gate {
                Gate::Confirm => {
                    data["pendingConfirmation"] = json!({
                        "toolId": p.call.tool_name,
                        "toolCallId": p.call.tool_call_id,
                        "arguments": p.call.arguments,
                        "expiresAt": expires_at,
                    })
                }
                Gate::Interaction { interaction_id, interaction_kind, spec, .. } => {
                    data["pendingInteraction"] = json!({
                        "interactionId": interaction_id, "kind": interaction_kind, "spec": spec, "expiresAt": expires_at,
                    })
                }
                Gate::Otp { .. } => {}
            }
        }
    }
    conn.reply(&out::immediate(rid, 200, "Session", data));
    Ok(())
}

use crate::protocol::cursor::encode_cursor;

fn decode_cursor(kind: &str, cursor: &str) -> Result<u64, ClientError> {
    crate::protocol::cursor::decode_cursor(kind, cursor)
        .ok_or_else(|| ClientError::validation("'cursor' is not a cursor this server issued"))
}

async fn get_messages(
    conn: &mut Conn,
    rid: Option<&str>,
    session_id: &str,
    limit: usize,
    cursor: Option<String>,
) -> Result<(), ClientError> {
    let s = owned_session(conn, session_id).await?;
    let before = cursor.as_deref().map(|c| decode_cursor("m", c)).transpose()?;
    conn.app.turns.take_read(&conn.identity).await?;
    let page = conn.app.backends.sessions.messages_page(&s.conversation_id, before, limit).await?;
    let messages: Vec<Value> = page.messages.iter().map(message_json).collect();
    let next = page.has_more.then(|| encode_cursor("m", page.oldest_index));
    conn.reply(&out::immediate(
        rid,
        200,
        "ConversationMessages",
        json!({"conversationId": s.conversation_id, "messages": messages, "nextCursor": next, "hasMore": page.has_more}),
    ));
    Ok(())
}

async fn list_conversations(
    conn: &mut Conn,
    rid: Option<&str>,
    limit: usize,
    cursor: Option<String>,
) -> Result<(), ClientError> {
    let offset = cursor.as_deref().map(|c| decode_cursor("c", c)).transpose()?.unwrap_or(0) as usize;
    conn.app.turns.take_read(&conn.identity).await?;
    let page = conn
        .app
        .backends
        .sessions
        .list_conversations(&conn.identity.org_id, &conn.identity.user_id, offset, limit)
        .await?;
    let items: Vec<Value> = page
        .conversations
        .iter()
        .map(|c| {
            json!({"conversationId": c.conversation_id, "title": c.title,
                   "updatedAt": crate::util::rfc3339_from_ms(c.updated_at_ms), "messageCount": c.message_count})
        })
        .collect();
    let next = page.has_more.then(|| encode_cursor("c", (offset + page.conversations.len()) as u64));
    conn.reply(&out::immediate(
        rid,
        200,
        "Conversations",
        json!({"conversations": items, "nextCursor": next, "hasMore": page.has_more}),
    ));
    Ok(())
}

async fn rename(conn: &mut Conn, rid: Option<&str>, conversation_id: &str, title: &str) -> Result<(), ClientError> {
    owned_conversation(conn, conversation_id).await?;
    if !conn.app.backends.sessions.rename_conversation(conversation_id, title).await? {
        // Gone between the two reads.
        return Err(ClientError::new(
            ErrorCode::ConversationNotFound,
            format!("conversation '{conversation_id}' not found"),
        ));
    }
    conn.reply(&out::immediate(
        rid,
        200,
        "Conversation renamed",
        json!({"conversationId": conversation_id, "title": title}),
    ));
    Ok(())
}

async fn cancel(conn: &mut Conn, rid: Option<&str>, session_id: Option<String>) -> Result<(), ClientError> {
    let app = conn.app.clone();
    let target = match (session_id, rid) {
        (Some(sid), _) => Some(owned_session(conn, &sid).await?.session_id),
        // By requestId: the attached session whose running turn has it.
        (None, Some(rid)) => app.turns.find_request(conn.sessions.iter(), rid).await?,
        (None, None) => None,
    };
    if let Some(sid) = target {
        // Nothing running emits nothing; the turn itself emits `cancelled`.
        app.turns.cancel(&sid).await?;
    }
    Ok(())
}

/// A conversation message as `get_conversation_messages` shows it (v1 `ConversationMessage`).
pub(crate) fn message_json(m: &StoredMessage) -> Value {
    json!({"id": m.id, "direction": m.direction, "content": {"text": m.text}, "createdAt": m.created_at})
}
