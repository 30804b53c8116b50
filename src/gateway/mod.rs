//! The orra gateway family: REST turns for server-side callers (`/api/*`, [`rest`], [`stream`]) and the orra
//! WebSocket dialect ([`orra`]), on the same sessions, logs, leases and pods as the smooth-operator protocol.
//! A namespace ([`namespace`]) is an ordinary session of its caller; a request runs a turn like
//! `send_message` and follows the session's log ([`watch`]) to its end, so a turn started on one pod and
//! approved on another answers wherever the caller waits.

mod agui;
mod herald;
pub(crate) mod namespace;
pub(crate) mod orra;
mod outcome;
mod rest;
mod stream;
mod watch;

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Body;
use axum::http::{header, HeaderMap, HeaderName, HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use parking_lot::Mutex;
use serde_json::{json, Value};
use tower_http::cors::{AllowOrigin, CorsLayer};
use tower_http::set_header::SetResponseHeaderLayer;

use crate::app::App;
use crate::auth::Identity;
use crate::error::{ClientError, ErrorCode};
use crate::util::{now_ms, MinuteWindow};

/// State of the `/api` routes.
pub(crate) struct Api {
    app: Arc<App>,
    /// Turns started per caller (org and user) in the last minute (`limits.messages_per_minute`, per pod).
    /// Shared by every request of the pod; idle callers are pruned at most once a second.
    recent: Mutex<(HashMap<String, MinuteWindow>, i64)>,
}

/// The `/api` routes with their security headers and CORS.
pub(crate) fn router(app: Arc<App>) -> Router {
    let cors = cors(&app.config.http.cors_origins);
    let api = Arc::new(Api { app, recent: Mutex::new((HashMap::new(), 0)) });
    let headers = [
        (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "strict-origin-when-cross-origin"),
    ];
    let mut router = Router::new()
        .route("/api/chat", post(rest::chat))
        .route("/api/chat/stream", post(stream::chat_stream))
        .route("/api/sessions", get(herald::list))
        .route("/api/sessions/{namespace}/name", put(herald::rename))
        .route("/api/sessions/{namespace}/interactions/{interaction_id}", post(herald::interaction))
        .route("/api/sessions/{namespace}/otp", post(herald::otp))
        .route("/api/agents", get(herald::agents))
        .route("/api/status", get(herald::status))
        .route("/api/sessions/{namespace}", get(rest::show).delete(rest::delete))
        .route("/api/sessions/{namespace}/approvals/{call_id}", post(rest::approve))
        .route("/agui", post(agui::run_default))
        .route("/agui/{agent_id}", post(agui::run_agent))
        .route("/agui/threads/{thread_id}/messages", get(agui::messages))
        .with_state(api);
    for (name, value) in headers {
        router = router.layer(SetResponseHeaderLayer::overriding(name, HeaderValue::from_static(value)));
    }
    match cors {
        Some(cors) => router.layer(cors),
        None => router,
    }
}

/// CORS for `http.cors_origins` (`*` or exact origins); none configured = no CORS headers at all, so a
/// browser on another origin is refused.
fn cors(origins: &[String]) -> Option<CorsLayer> {
    if origins.is_empty() {
        return None;
    }
    let allow = if origins.iter().any(|o| o == "*") {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(origins.iter().filter_map(|o| HeaderValue::from_str(o).ok()))
    };
    Some(
        CorsLayer::new()
            .allow_origin(allow)
            .allow_methods([Method::GET, Method::POST, Method::PUT, Method::DELETE])
            .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("last-event-id")])
            .max_age(std::time::Duration::from_secs(600)),
    )
}

/// An `/api` error: HTTP status and `{error, code}`.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    /// A budget's wait (`retry_after_ms` and a `Retry-After` header, whole seconds rounded up).
    retry_after_ms: Option<u64>,
    /// What to fix (`details`: a card's field errors, the attempts left).
    details: Option<Value>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into(), retry_after_ms: None, details: None }
    }
    fn with_details(mut self, details: Value) -> ApiError {
        self.details = Some(details);
        self
    }
    fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "invalid_request", message)
    }
    fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }
    /// The orra error's `code`, for the SSE `error` event.
    pub(crate) fn code(&self) -> &'static str {
        self.code
    }
    pub(crate) fn message(&self) -> &str {
        &self.message
    }
}

impl From<ClientError> for ApiError {
    fn from(e: ClientError) -> ApiError {
        e.log_at_edge("api response");
        let (status, code) = match e.code {
            ErrorCode::ValidationError | ErrorCode::SkillNotFound => (StatusCode::BAD_REQUEST, "invalid_request"),
            ErrorCode::SessionNotFound
            | ErrorCode::ConversationNotFound
            | ErrorCode::AgentNotFound
            | ErrorCode::NoPendingConfirmation
            | ErrorCode::NoPendingInteraction
            | ErrorCode::InteractionMismatch => (StatusCode::NOT_FOUND, "not_found"),
            ErrorCode::TurnInProgress => (StatusCode::CONFLICT, "turn_in_progress"),
            ErrorCode::RateLimited => (StatusCode::TOO_MANY_REQUESTS, "rate_limited"),
            ErrorCode::QuotaExceeded => (StatusCode::TOO_MANY_REQUESTS, "quota_exceeded"),
            ErrorCode::OriginNotAllowed => (StatusCode::FORBIDDEN, "origin_not_allowed"),
            ErrorCode::LlmUnavailable => (StatusCode::BAD_GATEWAY, "model_unavailable"),
            ErrorCode::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            _ => (StatusCode::INTERNAL_SERVER_ERROR, "runtime_error"),
        };
        ApiError { retry_after_ms: e.retry_after_ms, ..ApiError::new(status, code, e.message) }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": self.message, "code": self.code});
        if let Some(d) = self.details {
            body["details"] = d;
        }
        let Some(ms) = self.retry_after_ms else { return (self.status, Json(body)).into_response() };
        body["retry_after_ms"] = json!(ms);
        let seconds = ms.div_ceil(1_000).to_string();
        (self.status, [(header::RETRY_AFTER, seconds)], Json(body)).into_response()
    }
}

/// The authenticated caller of an `/api` route (an API key, a JWT in `jwt` mode, or anonymous where allowed):
/// a route that takes it cannot run for an unauthenticated request, which gets 401 `unauthorized`.
pub(crate) struct Caller(pub(crate) Identity);

impl axum::extract::FromRequestParts<Arc<Api>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut axum::http::request::Parts, api: &Arc<Api>) -> Result<Self, ApiError> {
        let who = api.caller(&parts.headers).await?;
        let trusted = &api.app.trusted_proxies;
        Ok(Caller(who.seen_from(crate::client_addr::client_address(
            crate::client_addr::peer(&parts.extensions),
            &parts.headers,
            trusted,
        ))))
    }
}

impl Api {
    /// The caller: an API key, a JWT in `jwt` mode, or anonymous where allowed (see `Authenticator`).
    async fn caller(&self, headers: &HeaderMap) -> Result<Identity, ApiError> {
        self.app.auth.authenticate_caller(crate::auth::bearer(headers)).await.map_err(|e| {
            tracing::info!(error = %e, "api request refused");
            ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "a valid API key or token is required")
        })
    }

    /// The request body as JSON of type `T`, at most `http.max_body_bytes`.
    async fn json<T: serde::de::DeserializeOwned>(&self, body: Body) -> Result<T, ApiError> {
        let limit = self.app.config.http.max_body_bytes;
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", format!("the body exceeds {limit} bytes"))
        })?;
        serde_json::from_slice(&bytes).map_err(|e| ApiError::invalid(format!("invalid JSON body: {e}")))
    }

    /// Counts a turn against the caller's per-minute budget.
    fn rate_limited(&self, who: &Identity) -> bool {
        let now = now_ms();
        let max = self.app.config.limits.messages_per_minute as usize;
        let mut guard = self.recent.lock();
        let (callers, pruned_at) = &mut *guard;
        if now - *pruned_at >= 1_000 {
            callers.retain(|_, w| !w.is_idle(now));
            *pruned_at = now;
        }
        !callers.entry(format!("{}\0{}", who.org_id, who.user_id)).or_default().take(now, max)
    }
}
