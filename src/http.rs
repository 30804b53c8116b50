//! The HTTP surface: `/ws`, `/health`, `/readyz`, `/metrics` and `POST /admin/publish`, with the REST
//! gateway's `/api/*` ([`crate::gateway`]), the admin API ([`crate::admin`]) and the widget merged in.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::app::App;
use crate::backend::{Channel, Claim, SocketFilter};
use crate::metrics::ClusterGauges;
use crate::pod::PodMessage;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/health", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/publish", post(publish))
        .with_state(app.clone())
        .merge(crate::widget::router(app.clone()))
        .merge(crate::admin::router(app.clone()))
        .merge(crate::gateway::router(app))
}

async fn readyz(State(app): State<Arc<App>>) -> Response {
    match app.ready().await {
        Ok(()) => (StatusCode::OK, "ready").into_response(),
        Err(why) => (StatusCode::SERVICE_UNAVAILABLE, why).into_response(),
    }
}

async fn metrics(State(app): State<Arc<App>>) -> Response {
    // Cluster-wide, read at scrape time: a per-pod count would go down on whichever pod resumes a turn, not
    // on the one that parked it. Left out of this scrape when the backend does not answer in time.
    let count = tokio::time::timeout(Duration::from_millis(500), app.turns.pending_count()).await;
    let cluster = ClusterGauges { pending_confirmations: count.ok().and_then(Result::ok) };
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([("content-type", content_type)], app.metrics.render(&cluster)).into_response()
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    app.auth.publish_key_ok(crate::auth::bearer(headers))
}

fn problem(status: StatusCode, code: &'static str, message: &str) -> Response {
    crate::admin::AdminError::new(status, code, message).into_response()
}

/// `POST /admin/publish {"target": {"type", "id"}, "event": {...}}` → 202 `{"accepted": true, "seq"?}`.
async fn publish(State(app): State<Arc<App>>, headers: HeaderMap, body: axum::body::Body) -> Response {
    // The same codes as the rest of `/admin`: no credentials, or credentials that are not a publish key.
    if crate::auth::bearer(&headers).is_none() {
        return problem(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "a publish key is required (Authorization: Bearer <key>)",
        );
    }
    if !authorized(&app, &headers) {
        return problem(StatusCode::UNAUTHORIZED, "INVALID_TOKEN", "this is not a valid publish key");
    }
    // Refused from its Content-Length before a byte of it is read, else read up to the limit and no further: a
    // huge body gets the JSON error, never buffered whole.
    let max = app.config.limits.max_frame_bytes;
    let too_large = || {
        problem(
            StatusCode::PAYLOAD_TOO_LARGE,
            "VALIDATION_ERROR",
            &format!("the body is larger than limits.max_frame_bytes ({max} bytes)"),
        )
    };
    let declared = headers.get(axum::http::header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<usize>().ok());
    if declared.is_some_and(|n| n > max) {
        return too_large();
    }
    let Ok(body) = axum::body::to_bytes(body, max).await else {
        return too_large();
    };
    let body: PublishBody = match serde_json::from_slice(&body) {
        Ok(b) => b,
        Err(e) => {
            return problem(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                &format!(
                    "expected {{\"target\": {{\"type\": \"connection|session|user|org|agent\", \"id\": \"...\"}}, \
                     \"event\": {{...}}}}: {e}"
                ),
            )
        }
    };
    let (target, event) = (body.target, Value::Object(body.event));
    let id = target.id();
    if id.is_empty() || id.len() > 256 {
        return problem(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "target.id must be 1-256 characters");
    }
    if let Some(field) = ["seq", "sessionId", "epoch"].into_iter().find(|f| event.get(*f).is_some()) {
        return problem(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            &format!("event.{field} is set by the server, not by a publisher"),
        );
    }
    let Some(key) = headers.get("idempotency-key") else {
        return deliver(&app, &target, &event).await.map_or_else(|r| r, |body| accepted(&body));
    };
    let key = match key.to_str().ok().filter(|k| !k.is_empty() && k.len() <= 200) {
        Some(k) => format!("publish:{k}"),
        None => {
            return problem(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "Idempotency-Key must be 1-200 visible characters",
            )
        }
    };
    idempotent(&app, &key, deliver(&app, &target, &event)).await
}

/// How long a publish's `Idempotency-Key` answers a retry with the first answer.
const PUBLISH_IDEMPOTENCY_MS: u64 = 10 * 60 * 1000;

fn accepted(body: &Value) -> Response {
    (StatusCode::ACCEPTED, Json(body.clone())).into_response()
}

/// Runs `publish` once per key (on any pod): a retry gets the first answer, and waits while the first request
/// is still publishing. A failed publish gives the key back, so the retry publishes.
async fn idempotent(
    app: &App,
    key: &str,
    publish: impl std::future::Future<Output = Result<Value, Response>>,
) -> Response {
    let store = &app.backends.idempotency;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    let mut backoff = crate::util::Backoff::new(Duration::from_millis(20), Duration::from_millis(250));
    loop {
        match store.claim(key, PUBLISH_IDEMPOTENCY_MS).await {
            Ok(Claim::Claimed) => break,
            Ok(Claim::Done(answer)) => {
                let body = serde_json::from_str(&answer).unwrap_or_else(|_| json!({"accepted": true}));
                return accepted(&body);
            }
            Ok(Claim::InFlight) if tokio::time::Instant::now() < deadline => backoff.wait().await,
            Ok(Claim::InFlight) => {
                return problem(
                    StatusCode::CONFLICT,
                    "IN_PROGRESS",
                    "a publish with this Idempotency-Key is in progress",
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "idempotency store failed");
                return problem(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR", "publish failed, retry");
            }
        }
    }
    match publish.await {
        Ok(body) => {
            if let Err(e) = store.complete(key, &body.to_string(), PUBLISH_IDEMPOTENCY_MS).await {
                tracing::warn!(error = %e, "could not record a publish's answer under its Idempotency-Key");
            }
            accepted(&body)
        }
        Err(response) => {
            let _ = store.abandon(key).await;
            response
        }
    }
}

/// `POST /admin/publish`'s body. Unknown fields are refused, so a misspelt `target` key is an error, not a
/// publish to the wrong place.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishBody {
    target: Target,
    /// A JSON object, sent to its targets as is.
    event: serde_json::Map<String, Value>,
}

/// Where a publish goes.
#[derive(Deserialize)]
#[serde(tag = "type", rename_all = "lowercase", deny_unknown_fields)]
enum Target {
    /// One socket, on whichever pod holds it (at-most-once).
    Connection {
        id: String,
    },
    /// A session's log: appended with a seq, so every attached socket gets it in order and repairs gaps.
    Session {
        id: String,
    },
    /// A user of an org (`org`, default `default`: the org of anonymous auth).
    User {
        id: String,
        #[serde(default = "default_org")]
        org: String,
    },
    Org {
        id: String,
    },
    Agent {
        id: String,
    },
}

fn default_org() -> String {
    "default".into()
}

impl Target {
    fn id(&self) -> &str {
        match self {
            Target::Connection { id }
            | Target::Session { id }
            | Target::User { id, .. }
            | Target::Org { id }
            | Target::Agent { id } => id,
        }
    }
}

/// Publishes `event` to the target: the answer body, or the error response.
async fn deliver(app: &App, target: &Target, event: &Value) -> Result<Value, Response> {
    let unavailable = |e: String| {
        tracing::error!(error = %e, "publish failed");
        problem(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR", "publish failed, retry")
    };
    let channel = match target {
        Target::Session { id } => {
            // One step in the backend: appended only if the session exists (one round trip, no race with a
            // deletion).
            return match app.emit_live(id, event).await.map_err(|e| unavailable(e.message))? {
                Some(seq) => Ok(json!({"accepted": true, "seq": seq})),
                None => Err(problem(StatusCode::NOT_FOUND, "SESSION_NOT_FOUND", &format!("session '{id}' not found"))),
            };
        }
        Target::Connection { id } => {
            let filter = SocketFilter { connection: Some(id.to_string()), ..Default::default() };
            let found = app.backends.registry.list(&filter, 1).await.map_err(|e| unavailable(e.to_string()))?;
            // At-most-once: an unknown connection is simply not there.
            if let Some(entry) = found.first() {
                let msg = PodMessage::Deliver { connection_id: id.to_string(), event: event.clone() }.encode();
                let pod = Channel::Pod(entry.pod_id.clone());
                app.backends.bus.publish(&pod, &msg).await.map_err(|e| unavailable(e.to_string()))?;
            }
            return Ok(json!({"accepted": true}));
        }
        Target::User { id, org } => Channel::user(org, id),
        Target::Org { id } => Channel::Org(id.clone()),
        Target::Agent { id } => Channel::Agent(id.clone()),
    };
    app.backends.bus.publish(&channel, &event.to_string()).await.map_err(|e| unavailable(e.to_string()))?;
    Ok(json!({"accepted": true}))
}
