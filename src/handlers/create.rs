//! `create_conversation_session`: a new session on a new or an existing conversation of the caller's, with
//! the agent's origin and widget checks, the caller's session budget, and (extended clients) the agent's
//! greeting and a `resumeToken` in the ack.

use serde_json::json;

use super::session_data;
use crate::backend::{ConversationRecord, SessionRecord};
use crate::conn::Conn;
use crate::error::{ClientError, ErrorCode};
use crate::protocol::inbound::CreateSession;
use crate::protocol::outbound as out;
use crate::util::{new_id, now_ms};

pub(super) async fn create_session(conn: &mut Conn, rid: Option<&str>, c: CreateSession) -> Result<(), ClientError> {
    conn.may_follow_another_session()?;
    let app = conn.app.clone();
    let agent = app
        .agents
        .get(&c.agent_id)
        .ok_or_else(|| ClientError::new(ErrorCode::AgentNotFound, format!("agent '{}' not found", c.agent_id)))?;
    crate::widget::auth::check_origin(&agent, conn.origin.as_deref())?;
    if let Some(ctx) = &c.auth_context {
        let who = crate::widget::auth::verify(&agent, ctx, chrono::Utc::now().timestamp())?;
        // Only an anonymous socket takes a widget's identity (or one already acting as it): a token's user is
        // not replaced by a page's claim.
        let same = conn.identity.user_id == who.user_id && conn.identity.org_id == who.org_id;
        if conn.identity.user_id != crate::auth::ANONYMOUS_USER && !same {
            return Err(ClientError::new(ErrorCode::AuthContextInvalid, "this connection is already authenticated"));
        }
        conn.act_as(who).await?;
    }
    // Checked before anything is written, so a refused create leaves nothing behind.
    let existing = match &c.conversation_id {
        Some(cid) => Some(crate::tenancy::agent_conversation(&app, cid, &conn.identity, &c.agent_id).await?),
        None => None,
    };
    app.turns.take_session(&conn.identity).await?;
    let now = now_ms();
    let (conversation_id, new_conv, inherited) = match (c.conversation_id, existing) {
        (Some(cid), Some(existing)) => (cid, None, existing.supports),
        _ => {
            let cid = new_id();
            let conv = ConversationRecord {
                conversation_id: cid.clone(),
                user_id: conn.identity.user_id.clone(),
                org_id: conn.identity.org_id.clone(),
                agent_id: c.agent_id.clone(),
                title: String::new(),
                created_at_ms: now,
                updated_at_ms: now,
                message_count: 0,
                namespace: None,
                supports: c.supports.clone(),
            };
            (cid, Some(conv), None)
        }
    };
    // Declared capabilities replace the conversation's; none declared inherits them (a reconnect is not a
    // downgrade to text-only).
    let supports = match (&c.supports, new_conv.is_none()) {
        (Some(declared), true) => {
            app.backends.sessions.set_conversation_supports(&conversation_id, declared).await?;
            declared.clone()
        }
        (Some(declared), false) => declared.clone(),
        (None, _) => inherited.unwrap_or_default(),
    };
    let session = SessionRecord {
        session_id: new_id(),
        conversation_id,
        agent_id: c.agent_id.clone(),
        agent_name: agent.name.clone(),
        user_id: conn.identity.user_id.clone(),
        org_id: conn.identity.org_id.clone(),
        user_participant_id: new_id(),
        agent_participant_id: new_id(),
        created_at_ms: now,
        namespace: None,
        supports,
    };
    app.backends.sessions.create_session(&session, new_conv.as_ref()).await?;
    if c.user_name.is_some() || c.user_email.is_some() {
        // An email that is not one stays off the session (the OTP gate would send codes to it).
        let email = c.user_email.as_deref().and_then(crate::interactions::validate::normalise_email);
        let name = c.user_name.as_deref().map(str::trim).filter(|n| !n.is_empty() && n.chars().count() <= 200);
        app.backends.identity.stamp(&session.session_id, name, email.as_deref(), None).await?;
    }
    conn.attach_session(&session.session_id, None).await?;
    conn.attach_agent(&c.agent_id).await?;
    let mut data = session_data(&session);
    // The agent's greeting, for a client that shows it (extended: v1's ack has a fixed shape).
    if let (true, Some(greeting)) = (conn.extended, &agent.greeting) {
        data["greeting"] = json!(greeting);
    }
    if conn.extended {
        data["resumeToken"] = json!(super::resume::token_for(&app, &session.session_id, &conn.identity));
    }
    conn.reply(&out::immediate(rid, 200, "Session created", data));
    Ok(())
}
