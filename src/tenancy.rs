//! Tenancy in the lookup: a door reads a caller's session or conversation only through these, which answer
//! "not found" for another caller's record exactly as for one that does not exist (never revealing that it
//! does). Every door (both socket dialects, REST, SSE) uses them, so no door filters after the fact.

use crate::app::App;
use crate::auth::Identity;
use crate::backend::{ConversationRecord, SessionRecord};
use crate::error::{ClientError, ErrorCode};
use crate::protocol::inbound::OwnerProof;

fn owns(who: &Identity, org_id: &str, user_id: &str) -> bool {
    who.org_id == org_id && who.user_id == user_id
}

/// The caller's session `id`, or `None` (missing, or another caller's).
pub(crate) async fn find_session(app: &App, id: &str, who: &Identity) -> Result<Option<SessionRecord>, ClientError> {
    let session = app.backends.sessions.get_session(id).await?;
    Ok(session.filter(|s| owns(who, &s.org_id, &s.user_id)))
}

/// The caller's session `id`; otherwise `SESSION_NOT_FOUND`.
pub(crate) async fn owned_session(app: &App, id: &str, who: &Identity) -> Result<SessionRecord, ClientError> {
    find_session(app, id, who).await?.ok_or_else(|| ClientError::session_not_found(id))
}

/// The caller's conversation `id`, or `None` (missing, or another caller's).
pub(crate) async fn find_conversation(
    app: &App,
    id: &str,
    who: &Identity,
) -> Result<Option<ConversationRecord>, ClientError> {
    let conversation = app.backends.sessions.get_conversation(id).await?;
    Ok(conversation.filter(|c| owns(who, &c.org_id, &c.user_id)))
}

/// A conversation the caller may read in the admin API: their own, or any of their org's for a curator or an
/// admin; otherwise `CONVERSATION_NOT_FOUND` (another org's is never visible).
pub(crate) async fn readable_conversation(
    app: &App,
    id: &str,
    who: &Identity,
) -> Result<ConversationRecord, ClientError> {
    let conversation = app.backends.sessions.get_conversation(id).await?;
    conversation
        .filter(|c| c.org_id == who.org_id && (c.user_id == who.user_id || who.role >= crate::auth::Role::Curator))
        .ok_or_else(|| conversation_not_found(id))
}

/// The caller's conversation `id`; otherwise `CONVERSATION_NOT_FOUND`.
pub(crate) async fn owned_conversation(app: &App, id: &str, who: &Identity) -> Result<ConversationRecord, ClientError> {
    find_conversation(app, id, who).await?.ok_or_else(|| conversation_not_found(id))
}

/// The caller's conversation `id` with `agent_id`: a conversation belongs to its agent, so opening it on
/// another is `CONVERSATION_NOT_FOUND`, as for another caller's.
pub(crate) async fn agent_conversation(
    app: &App,
    id: &str,
    who: &Identity,
    agent_id: &str,
) -> Result<ConversationRecord, ClientError> {
    let found = find_conversation(app, id, who).await?;
    found.filter(|c| c.agent_id == agent_id).ok_or_else(|| conversation_not_found(id))
}

/// The identity that owns `session`: what a proof of ownership (a resume token, a widget `authContext`)
/// must vouch for.
pub(crate) fn owner_of(session: &SessionRecord) -> Identity {
    Identity {
        user_id: session.user_id.clone(),
        org_id: session.org_id.clone(),
        expires_at: None,
        role: crate::auth::Role::Basic,
        address: None,
    }
}

/// Session `id` for a socket acting as `who` that proves it may act as the session's owner (`proof`: the
/// session's resume token, or a widget `authContext` of its agent naming its owner). Returns the session and
/// its owner; `SESSION_NOT_FOUND` for a missing session, a proof that does not hold, or a caller that already
/// acts as someone else (a token's user is never replaced).
pub(crate) async fn proven_session(
    app: &App,
    id: &str,
    who: &Identity,
    proof: &OwnerProof,
) -> Result<(SessionRecord, Identity), ClientError> {
    let not_found = || ClientError::session_not_found(id);
    let session = app.backends.sessions.get_session(id).await?.ok_or_else(not_found)?;
    let owner = owner_of(&session);
    let now_s = chrono::Utc::now().timestamp();
    let holds = match proof {
        OwnerProof::Token(token) => app.auth.resume().verify(token, id, &owner, now_s),
        OwnerProof::AuthContext(ctx) => app.agents.get(&session.agent_id).is_some_and(|agent| {
            crate::widget::auth::verify(&agent, ctx, now_s)
                .is_ok_and(|w| w.user_id == owner.user_id && w.org_id == owner.org_id)
        }),
    };
    let free = who.user_id == crate::auth::ANONYMOUS_USER || owns(who, &owner.org_id, &owner.user_id);
    if !holds || !free {
        return Err(not_found());
    }
    Ok((session, owner))
}

fn conversation_not_found(id: &str) -> ClientError {
    ClientError::new(ErrorCode::ConversationNotFound, format!("conversation '{id}' not found"))
}
