//! The HTTP surface: `/ws`, `/health`, `/readyz`, `/metrics`, `POST /admin/publish` and
//! `GET /admin/connections`, with the REST gateway's `/api/*` routes merged in ([`crate::gateway`]).

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use crate::app::App;
use crate::backend::{Channel, SocketFilter};
use crate::metrics::ClusterGauges;

pub(crate) fn router(app: Arc<App>) -> Router {
    Router::new()
        .route("/ws", get(crate::ws::upgrade))
        .route("/health", get(|| async { "ok" }))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/admin/publish", post(publish))
        .route("/admin/connections", get(connections))
        .with_state(app.clone())
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
    let count = tokio::time::timeout(Duration::from_millis(500), app.backends.confirms.pending_count()).await;
    let cluster = ClusterGauges { pending_confirmations: count.ok().and_then(Result::ok) };
    let content_type = "application/openmetrics-text; version=1.0.0; charset=utf-8";
    ([("content-type", content_type)], app.metrics.render(&cluster)).into_response()
}

fn authorized(app: &App, headers: &HeaderMap) -> bool {
    app.auth.publish_key_ok(crate::auth::bearer(headers))
}

fn problem(status: StatusCode, code: &str, message: &str) -> Response {
    (status, Json(json!({"error": {"code": code, "message": message}}))).into_response()
}

/// `POST /admin/publish {"target": {"type", "id"}, "event": {...}}` → 202 `{"accepted": true, "seq"?}`.
async fn publish(State(app): State<Arc<App>>, headers: HeaderMap, body: axum::body::Bytes) -> Response {
    if !authorized(&app, &headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid publish key is required (Authorization: Bearer <key>)",
        );
    }
    if body.len() > app.config.limits.max_frame_bytes {
        return problem(StatusCode::PAYLOAD_TOO_LARGE, "VALIDATION_ERROR", "event larger than limits.max_frame_bytes");
    }
    let Ok(v) = serde_json::from_slice::<Value>(&body) else {
        return problem(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "body must be JSON");
    };
    let kind = v.pointer("/target/type").and_then(Value::as_str);
    let id = v.pointer("/target/id").and_then(Value::as_str).filter(|s| !s.is_empty() && s.len() <= 256);
    let event = v.get("event").filter(|e| e.is_object());
    let (Some(kind), Some(id), Some(event)) = (kind, id, event) else {
        return problem(
            StatusCode::BAD_REQUEST,
            "VALIDATION_ERROR",
            "expected {\"target\": {\"type\": \"connection|session|user|org|agent\", \"id\": \"...\"}, \"event\": {...}}",
        );
    };
    let result = match kind {
        "session" => match app.emit(id, event).await {
            Ok(seq) => return (StatusCode::ACCEPTED, Json(json!({"accepted": true, "seq": seq}))).into_response(),
            Err(e) => Err(e.message),
        },
        "user" | "org" | "agent" => {
            let channel = match kind {
                // A user is a user of an org (`target.org`, default `default`: the org of anonymous auth).
                "user" => Channel::user(v.pointer("/target/org").and_then(Value::as_str).unwrap_or("default"), id),
                "org" => Channel::Org(id.into()),
                _ => Channel::Agent(id.into()),
            };
            app.backends.bus.publish(&channel, &event.to_string()).await.map_err(|e| e.to_string())
        }
        "connection" => {
            let filter = SocketFilter { connection: Some(id.to_string()), ..Default::default() };
            match app.backends.registry.list(&filter, 1).await {
                Ok(found) => match found.first() {
                    Some(entry) => {
                        let msg = json!({"kind": "deliver", "connectionId": id, "event": event}).to_string();
                        app.backends
                            .bus
                            .publish(&Channel::Pod(entry.pod_id.clone()), &msg)
                            .await
                            .map_err(|e| e.to_string())
                    }
                    None => Ok(()), // at-most-once: an unknown connection is simply not there
                },
                Err(e) => Err(e.to_string()),
            }
        }
        _ => {
            return problem(
                StatusCode::BAD_REQUEST,
                "VALIDATION_ERROR",
                "target.type must be connection, session, user, org or agent",
            )
        }
    };
    match result {
        Ok(()) => (StatusCode::ACCEPTED, Json(json!({"accepted": true}))).into_response(),
        Err(e) => {
            tracing::error!(error = %e, "publish failed");
            problem(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR", "publish failed, retry")
        }
    }
}

#[derive(serde::Deserialize)]
struct ConnQuery {
    session: Option<String>,
    user: Option<String>,
    org: Option<String>,
}

/// `GET /admin/connections?session=|user=|org=`: live sockets across all pods.
async fn connections(State(app): State<Arc<App>>, headers: HeaderMap, Query(q): Query<ConnQuery>) -> Response {
    if !authorized(&app, &headers) {
        return problem(
            StatusCode::UNAUTHORIZED,
            "UNAUTHORIZED",
            "a valid publish key is required (Authorization: Bearer <key>)",
        );
    }
    if q.session.is_none() && q.user.is_none() && q.org.is_none() {
        return problem(StatusCode::BAD_REQUEST, "VALIDATION_ERROR", "give one of session=, user=, org=");
    }
    let filter = SocketFilter { session: q.session, user: q.user, org: q.org, connection: None };
    match app.backends.registry.list(&filter, 1000).await {
        Ok(list) => Json(json!({"connections": list.iter().map(|e| json!({
            "connectionId": e.connection_id, "podId": e.pod_id, "userId": e.user_id, "orgId": e.org_id,
            "sessions": e.sessions, "agents": e.agents, "connectedAt": crate::util::rfc3339_from_ms(e.connected_at_ms)
        })).collect::<Vec<_>>()}))
        .into_response(),
        Err(e) => {
            tracing::error!(error = %e, "registry list failed");
            problem(StatusCode::SERVICE_UNAVAILABLE, "INTERNAL_ERROR", "registry unavailable")
        }
    }
}
