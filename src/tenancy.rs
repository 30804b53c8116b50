//! Tenancy in the lookup: a door reads a caller's session or conversation only through these, which answer
//! "not found" for another caller's record exactly as for one that does not exist (never revealing that it
//! does). Every door (both socket dialects, REST, SSE) uses them, so no door filters after the fact.

use crate::app::App;
use crate::auth::Identity;
use crate::backend::{ConversationRecord, SessionRecord};
use crate::error::{ClientError, ErrorCode};

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

fn conversation_not_found(id: &str) -> ClientError {
    ClientError::new(ErrorCode::ConversationNotFound, format!("conversation '{id}' not found"))
}
