//! The admin API for support teams and dashboards: who am I, an org's conversations and their messages,
//! per-org settings used by the next turn on every pod, and the live connections. Callers present a bearer JWT
//! whose `role` claim says what they may do (`admin` > `curator` > `basic`); everything is scoped to the
//! caller's org, and another org's ids answer 404 as if they did not exist. `/admin/publish` stays with the
//! publish keys (see `http`), which also open `/admin/connections` across orgs for operators.

mod settings;
mod usage;

use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::App;
use crate::auth::{AuthError, Identity, Role};
use crate::backend::{ConversationRecord, SocketFilter};
use crate::protocol::cursor::{decode_cursor, encode_cursor};
use crate::util::rfc3339_from_ms;

/// An `/admin/*` failure (the admin API's and `/admin/publish`'s): an HTTP status and `{error: {code, message}}`.
pub(crate) struct AdminError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// What failed inside (a backend error), never sent: logged once when the response is made.
    detail: Option<String>,
}

impl AdminError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> AdminError {
        AdminError { status, code, message: message.into(), detail: None }
    }
    fn forbidden(need: Role) -> AdminError {
        AdminError::new(StatusCode::FORBIDDEN, "FORBIDDEN", format!("this needs the {} role", need.as_str()))
    }
    fn not_found() -> AdminError {
        AdminError::new(StatusCode::NOT_FOUND, "NOT_FOUND", "not found")
    }
    /// A storage failure: 503, the detail kept for the log.
    fn unavailable(detail: String) -> AdminError {
        let e = AdminError::new(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR", "storage unavailable, retry");
        AdminError { detail: Some(detail), ..e }
    }
    fn invalid(message: impl Into<String>) -> AdminError {
        AdminError::new(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", message)
    }
}

impl IntoResponse for AdminError {
    fn into_response(self) -> Response {
        if let Some(detail) = &self.detail {
            tracing::error!(error = %detail, code = self.code, "admin API error");
        }
        (self.status, Json(json!({"error": {"code": self.code, "message": self.message}}))).into_response()
    }
}

impl From<crate::backend::BackendError> for AdminError {
    fn from(e: crate::backend::BackendError) -> AdminError {
        AdminError::unavailable(e.to_string())
    }
}

impl From<crate::error::ClientError> for AdminError {
    fn from(e: crate::error::ClientError) -> AdminError {
        use crate::error::ErrorCode;
        match e.code {
            ErrorCode::SessionNotFound | ErrorCode::ConversationNotFound => AdminError::not_found(),
            ErrorCode::Internal => AdminError::unavailable(e.detail.unwrap_or(e.message)),
            _ => AdminError::invalid(e.message),
        }
    }
}

type AdminResult = Result<Response, AdminError>;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/admin/me", get(me))
        .route("/admin/conversations", get(conversations))
        .route("/admin/conversations/{id}/messages", get(messages))
        .route("/admin/settings", get(settings::read).put(settings::write))
        .route("/admin/connections", get(connections))
        .route("/admin/usage", get(usage::usage))
        .with_state(app)
}

/// The caller, from the bearer token; `need` is the least role the route allows.
/// The authenticated caller of an `/admin` route; the route then says which role it needs
/// ([`AdminCaller::need`]). Unauthenticated: 401 `UNAUTHENTICATED` / `INVALID_TOKEN`.
pub(super) struct AdminCaller(Identity);

impl axum::extract::FromRequestParts<Arc<App>> for AdminCaller {
    type Rejection = AdminError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, app: &Arc<App>) -> Result<Self, AdminError> {
        authenticate(app, &parts.headers).await.map(AdminCaller)
    }
}

impl AdminCaller {
    /// The caller, if their role is at least `need` (else 403 `FORBIDDEN`).
    pub(super) fn need(self, need: Role) -> Result<Identity, AdminError> {
        if self.0.role < need {
            return Err(AdminError::forbidden(need));
        }
        Ok(self.0)
    }
}

async fn authenticate(app: &App, headers: &HeaderMap) -> Result<Identity, AdminError> {
    app.auth.authenticate_caller(crate::auth::bearer(headers)).await.map_err(|e| match e {
        AuthError::Missing => {
            AdminError::new(StatusCode::UNAUTHORIZED, "UNAUTHENTICATED", "a bearer token is required")
        }
        // The verifier's reason (a JWT library's words, a JWKS fetch error naming an address) stays in the log.
        AuthError::Invalid(why) => {
            tracing::debug!(reason = %why, "admin request refused: invalid token");
            AdminError::new(
                StatusCode::UNAUTHORIZED,
                "INVALID_TOKEN",
                "the token is not valid (malformed, expired, not yet valid, wrongly signed, or for another issuer or audience)",
            )
        }
    })
}

/// The caller of a route that also accepts another credential (`/admin/connections`: a publish key).
async fn caller(app: &App, headers: &HeaderMap, need: Role) -> Result<Identity, AdminError> {
    AdminCaller(authenticate(app, headers).await?).need(need)
}

async fn me(caller: AdminCaller) -> AdminResult {
    let who = caller.need(Role::Basic)?;
    Ok(Json(json!({"userId": who.user_id, "orgId": who.org_id, "role": who.role.as_str()})).into_response())
}

#[derive(serde::Deserialize)]
struct Page {
    limit: Option<String>,
    cursor: Option<String>,
}

impl Page {
    /// `(offset, limit)`: limit 1–100 (default 50), an opaque cursor of kind `kind`.
    fn read(&self, kind: &str) -> Result<(u64, usize), AdminError> {
        let limit = match &self.limit {
            None => 50,
            Some(l) => l
                .parse::<usize>()
                .ok()
                .filter(|l| (1..=100).contains(l))
                .ok_or_else(|| AdminError::invalid("`limit` must be an integer from 1 to 100"))?,
        };
        let offset = match &self.cursor {
            None => 0,
            Some(c) => {
                decode_cursor(kind, c).ok_or_else(|| AdminError::invalid("`cursor` is not one this server issued"))?
            }
        };
        Ok((offset, limit))
    }
}

fn conversation_json(c: &ConversationRecord) -> Value {
    json!({"id": c.conversation_id, "title": c.title, "userId": c.user_id,
           "createdAt": rfc3339_from_ms(c.created_at_ms), "updatedAt": rfc3339_from_ms(c.updated_at_ms),
           "messageCount": c.message_count})
}

/// Basic callers see their own conversations; curators and admins the whole org's.
async fn conversations(State(app): State<Arc<App>>, caller: AdminCaller, Query(q): Query<Page>) -> AdminResult {
    let who = caller.need(Role::Basic)?;
    let (offset, limit) = q.read("ac")?;
    let store = &app.backends.sessions;
    let page = if who.role >= Role::Curator {
        store.list_org_conversations(&who.org_id, offset as usize, limit).await?
    } else {
        store.list_conversations(&who.org_id, &who.user_id, offset as usize, limit).await?
    };
    let next = page.has_more.then(|| encode_cursor("ac", offset + page.conversations.len() as u64));
    let items: Vec<Value> = page.conversations.iter().map(conversation_json).collect();
    Ok(Json(json!({"conversations": items, "nextCursor": next})).into_response())
}

/// A conversation's messages, newest first: the caller's own, or any of the org's for curators and admins.
async fn messages(
    State(app): State<Arc<App>>,
    caller: AdminCaller,
    Path(id): Path<String>,
    Query(q): Query<Page>,
) -> AdminResult {
    let who = caller.need(Role::Basic)?;
    let (before, limit) = q.read("am")?;
    crate::tenancy::readable_conversation(&app, &id, &who).await?;
    let before = q.cursor.is_some().then_some(before);
    let (page, summary) =
        tokio::join!(app.backends.sessions.messages_page(&id, before, limit), app.backends.sessions.summary(&id));
    let page = page?;
    let items: Vec<Value> = page.messages.iter().map(crate::handlers::message_json).collect();
    let next = page.has_more.then(|| encode_cursor("am", page.oldest_index));
    let mut body = json!({"conversationId": id, "messages": items, "nextCursor": next, "hasMore": page.has_more});
    // What the model is told of the messages it is no longer given (`turn.summarize`).
    if let Some(s) = summary? {
        body["summary"] = json!({"text": s.text, "upto": s.upto});
    }
    Ok(Json(body).into_response())
}

#[derive(serde::Deserialize)]
struct ConnQuery {
    session: Option<String>,
    user: Option<String>,
    org: Option<String>,
}

/// Live sockets on every pod: an org's for its admins; any org's for operators holding a publish key.
/// An org admin's listing: always within their org (so the backend reads the org's index, never another
/// org's sockets); asking for another org is 404.
fn org_filter(mut filter: SocketFilter, org_id: &str) -> Result<SocketFilter, AdminError> {
    if filter.org.as_deref().is_some_and(|o| o != org_id) {
        return Err(AdminError::not_found());
    }
    filter.org = Some(org_id.to_string());
    Ok(filter)
}

async fn connections(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<ConnQuery>) -> AdminResult {
    let operator = app.auth.publish_key_ok(crate::auth::bearer(&headers));
    let asked = SocketFilter { session: q.session, user: q.user, org: q.org, connection: None };
    let (filter, scope) = if operator {
        if asked.session.is_none() && asked.user.is_none() && asked.org.is_none() {
            return Err(AdminError::invalid("give one of session=, user=, org="));
        }
        (asked, None)
    } else {
        let who = caller(&app, &headers, Role::Admin).await?;
        (org_filter(asked, &who.org_id)?, Some(who.org_id))
    };
    let list = app.backends.registry.list(&filter, 1000).await?;
    let items: Vec<Value> = list
        .iter()
        .filter(|e| scope.as_ref().is_none_or(|org| &e.org_id == org))
        .map(|e| {
            json!({"connectionId": e.connection_id, "podId": e.pod_id, "userId": e.user_id, "orgId": e.org_id,
                   "sessions": e.sessions, "agents": e.agents, "connectedAt": rfc3339_from_ms(e.connected_at_ms)})
        })
        .collect();
    Ok(Json(json!({"connections": items})).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_org_admin_lists_within_their_org_only() {
        let by_user = SocketFilter { user: Some("ann".into()), ..Default::default() };
        assert_eq!(org_filter(by_user, "acme").ok().and_then(|f| f.org).as_deref(), Some("acme"), "user= alone");
        let by_session = SocketFilter { session: Some("s1".into()), ..Default::default() };
        assert_eq!(org_filter(by_session, "acme").ok().and_then(|f| f.org).as_deref(), Some("acme"));
        let foreign = SocketFilter { org: Some("globex".into()), ..Default::default() };
        assert!(org_filter(foreign, "acme").is_err());
    }
}
