//! Namespaces: the REST and orra name of a session. A namespace is an ordinary session (and conversation) of
//! its caller, whose ids are derived from (org, user, namespace), so two callers may use the same name without
//! meeting, and another caller's namespace is simply not there (404, as an unknown one).

use ring::digest::{digest, SHA256};

use crate::app::App;
use crate::auth::Identity;
use crate::backend::{ConversationRecord, SessionRecord};
use crate::error::ClientError;
use crate::util::{new_id, now_ms};

/// Longest namespace, in bytes.
pub(crate) const MAX_NAMESPACE: usize = 128;

/// A namespace the caller may use: 1–128 of `A-Z a-z 0-9 : _ . @ -`, never `..`.
pub(crate) fn validate(ns: &str) -> Result<(), ClientError> {
    let allowed = |c: char| c.is_ascii_alphanumeric() || matches!(c, ':' | '_' | '.' | '@' | '-');
    if ns.is_empty() || ns.len() > MAX_NAMESPACE || !ns.chars().all(allowed) || ns.contains("..") {
        return Err(ClientError::validation(format!(
            "namespace must be 1-{MAX_NAMESPACE} of A-Z a-z 0-9 : _ . @ - (no '..')"
        )));
    }
    Ok(())
}

/// A fresh namespace for a request that gives none.
pub(crate) fn fresh() -> String {
    format!("web:{}", uuid::Uuid::new_v4())
}

/// The id of `kind` (session or conversation) for the caller's namespace: a UUID from a SHA-256 of the three.
fn derived_id(kind: &str, who: &Identity, ns: &str) -> String {
    let input = format!("switchboard-namespace\0{kind}\0{}\0{}\0{ns}", who.org_id, who.user_id);
    let hash = digest(&SHA256, input.as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&hash.as_ref()[..16]);
    uuid::Builder::from_custom_bytes(bytes).into_uuid().to_string()
}

pub(crate) fn session_id(who: &Identity, ns: &str) -> String {
    derived_id("session", who, ns)
}

/// The conversation of the caller's namespace (it outlives the session's idle TTL).
pub(crate) fn conversation_id(who: &Identity, ns: &str) -> String {
    derived_id("conversation", who, ns)
}

/// The caller's session for `ns`, if it exists.
pub(crate) async fn find(app: &App, who: &Identity, ns: &str) -> Result<Option<SessionRecord>, ClientError> {
    crate::tenancy::find_session(app, &session_id(who, ns), who).await
}

/// The caller's session for `ns`, created (with its conversation) on first use with `agent_id`.
pub(crate) async fn open(
    app: &App,
    who: &Identity,
    ns: &str,
    agent_id: &str,
    agent_name: &str,
) -> Result<SessionRecord, ClientError> {
    if let Some(s) = find(app, who, ns).await? {
        return Ok(s);
    }
    // A new namespace is a new session: the caller's session budget, as on every door.
    app.turns.take_session(who).await?;
    let now = now_ms();
    let conversation_id = conversation_id(who, ns);
    // The conversation outlives the session's idle TTL; a session created again finds it and keeps its history.
    let existing = app.backends.sessions.get_conversation(&conversation_id).await?;
    let conversation = ConversationRecord {
        conversation_id: conversation_id.clone(),
        user_id: who.user_id.clone(),
        org_id: who.org_id.clone(),
        agent_id: agent_id.to_string(),
        title: String::new(),
        created_at_ms: now,
        updated_at_ms: now,
        message_count: 0,
        namespace: Some(ns.to_string()),
        supports: None,
    };
    let session = SessionRecord {
        session_id: session_id(who, ns),
        conversation_id,
        agent_id: agent_id.to_string(),
        agent_name: agent_name.to_string(),
        user_id: who.user_id.clone(),
        org_id: who.org_id.clone(),
        user_participant_id: new_id(),
        agent_participant_id: new_id(),
        created_at_ms: now,
        namespace: Some(ns.to_string()),
        // A gateway caller is answered 202 `pending_interaction` with the card (an AG-UI client gets an
        // interrupt): every card parks, none falls back to asking in words.
        supports: crate::interactions::Kind::ALL.iter().map(|k| k.capability().to_string()).collect(),
    };
    let new_conversation = existing.is_none().then_some(&conversation);
    app.backends.sessions.create_session(&session, new_conversation).await?;
    Ok(session)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn who(user: &str, org: &str) -> Identity {
        Identity {
            user_id: user.into(),
            org_id: org.into(),
            expires_at: None,
            role: crate::auth::Role::Basic,
            address: None,
        }
    }

    #[test]
    fn names_are_checked() {
        for ok in ["web:1b2c", "orders-42", "a.b@c_d", &"x".repeat(MAX_NAMESPACE)] {
            assert!(validate(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a/b", "a..b", "..", &"x".repeat(300), "tab\there", "nul\0", "é"] {
            assert!(validate(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_belong_to_the_caller() {
        let a = session_id(&who("u", "o"), "ns");
        assert_eq!(a, session_id(&who("u", "o"), "ns"), "stable");
        assert_ne!(a, session_id(&who("u2", "o"), "ns"), "another user");
        assert_ne!(a, session_id(&who("u", "o2"), "ns"), "another org");
        assert_ne!(a, derived_id("conversation", &who("u", "o"), "ns"));
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
