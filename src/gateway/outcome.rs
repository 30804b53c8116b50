//! What a turn's logged events mean to a REST caller: the turn answered, parked on an approval, or failed.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::watch::SessionWatch;
use super::ApiError;
use crate::app::App;
use crate::backend::PendingCall;
use crate::error::{ClientError, ErrorCode};

/// Where a turn stopped, as far as its caller is concerned.
pub(crate) enum Stop {
    Answered {
        text: String,
        input_tokens: u64,
        output_tokens: u64,
    },
    /// Waiting for a human's decision on this call.
    Parked(PendingCall),
    Failed(ApiError),
}

/// One logged event, read for the turn `request_id`.
pub(crate) enum Seen {
    /// A streamed piece of the reply.
    Delta(String),
    /// `write_confirmation_required`: the parked record says which call.
    Approval,
    /// The turn's terminal event.
    End(Stop),
    /// Anything else (tool steps, reasoning, another turn's events, publishes).
    Other,
}

/// Reads one event of the session's log for the turn `request_id`.
pub(crate) fn read(event: &Value, request_id: &str) -> Seen {
    if event.get("requestId").and_then(Value::as_str) != Some(request_id) {
        return Seen::Other;
    }
    match event.get("type").and_then(Value::as_str) {
        Some("stream_token") => Seen::Delta(event.get("token").and_then(Value::as_str).unwrap_or("").to_string()),
        Some("write_confirmation_required") => Seen::Approval,
        Some("eventual_response") => {
            let data = &event["data"]["data"];
            let text = data["response"]["responseParts"]
                .as_array()
                .map(|parts| parts.iter().filter_map(Value::as_str).collect::<String>())
                .unwrap_or_default();
            Seen::End(Stop::Answered {
                text,
                input_tokens: data["usage"]["promptTokens"].as_u64().unwrap_or(0),
                output_tokens: data["usage"]["completionTokens"].as_u64().unwrap_or(0),
            })
        }
        Some("cancelled") => {
            Seen::End(Stop::Failed(ApiError::new(StatusCode::CONFLICT, "cancelled", "the turn was cancelled")))
        }
        Some("error") => {
            let code = event["error"]["code"].as_str().unwrap_or("INTERNAL_ERROR");
            let message = event["error"]["message"].as_str().unwrap_or("the turn failed").to_string();
            let code = ErrorCode::ALL.into_iter().find(|c| c.as_str() == code).unwrap_or(ErrorCode::Internal);
            Seen::End(Stop::Failed(ClientError::new(code, message).into()))
        }
        _ => Seen::Other,
    }
}

/// The call a `write_confirmation_required` of turn `request_id` asks about, if it is still pending.
pub(crate) async fn pending_call(
    app: &App,
    session_id: &str,
    request_id: &str,
) -> Result<Option<PendingCall>, ApiError> {
    let parked = app.turns.parked(session_id).await?;
    Ok(parked.filter(|p| p.request_id == request_id).map(|p| p.call))
}

/// Follows the session's log until the turn `request_id` answers, parks or fails.
pub(crate) async fn follow(
    app: &App,
    watch: &mut SessionWatch,
    session_id: &str,
    request_id: &str,
) -> Result<Stop, ApiError> {
    loop {
        let Some(batch) = watch.next_while_held(Some(request_id)).await? else {
            return Ok(Stop::Failed(ended_without_answer()));
        };
        for (_, event) in batch {
            match read(&event, request_id) {
                Seen::End(stop) => return Ok(stop),
                Seen::Approval => {
                    // Already decided (a fast approver elsewhere): the turn goes on, keep following.
                    if let Some(call) = pending_call(app, session_id, request_id).await? {
                        return Ok(Stop::Parked(call));
                    }
                }
                Seen::Delta(_) | Seen::Other => {}
            }
        }
    }
}

/// A turn that let go of its session without a final event the log shows.
pub(crate) fn ended_without_answer() -> ApiError {
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "runtime_error",
        "the turn ended without an answer (see GET /api/sessions/{namespace})",
    )
}

/// The orra answer for a stop: 200 `{message, namespace, usage, agent}`, 202 `pending_approval`, or the error.
pub(crate) fn answer(stop: Stop, namespace: &str, agent: &str) -> Result<(StatusCode, Value), ApiError> {
    match stop {
        Stop::Answered { text, input_tokens, output_tokens } => Ok((
            StatusCode::OK,
            json!({"message": text, "namespace": namespace, "agent": agent, "usage": {
                "input_tokens": input_tokens, "output_tokens": output_tokens,
                "total_tokens": input_tokens + output_tokens}}),
        )),
        Stop::Parked(call) => Ok((StatusCode::ACCEPTED, approval_body(namespace, &call))),
        Stop::Failed(e) => Err(e),
    }
}

/// The 202 body of a parked turn.
pub(crate) fn approval_body(namespace: &str, call: &PendingCall) -> Value {
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments.clone()));
    json!({"status": "pending_approval", "namespace": namespace,
           "approval": {"call_id": call.tool_call_id, "tool_name": call.tool_name, "arguments": arguments}})
}
