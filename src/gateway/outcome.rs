//! What a turn's logged events mean to a REST caller: the turn answered, parked on a person (an approval, an
//! interaction card, an OTP code), or failed.

use axum::http::StatusCode;
use serde_json::{json, Value};

use super::watch::SessionWatch;
use super::ApiError;
use crate::app::App;
use crate::backend::{Gate, ParkedTurn, PendingCall};
use crate::error::{ClientError, ErrorCode};

/// Where a turn stopped, as far as its caller is concerned.
pub(crate) enum Stop {
    Answered {
        text: String,
        input_tokens: u64,
        output_tokens: u64,
        /// The turn's cost, when its model has a price (`llm.prices`).
        cost_usd: Option<f64>,
    },
    /// Waiting for a person: an approval, a card or a code.
    Parked(Box<ParkedTurn>),
    Failed(ApiError),
}

/// One logged event, read for the turn `request_id`.
pub(crate) enum Seen {
    /// A streamed piece of the reply.
    Delta(String),
    /// The turn parked on a person (`write_confirmation_required`, `interaction_required`, or `otp_sent` once
    /// the code is on its way): the parked record says what it waits for.
    Park,
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
        Some("write_confirmation_required" | "interaction_required" | "otp_sent") => Seen::Park,
        Some("eventual_response") => {
            let data = &event["data"]["data"];
            Seen::End(Stop::Answered {
                text: answer_text(data),
                input_tokens: data["usage"]["promptTokens"].as_u64().unwrap_or(0),
                output_tokens: data["usage"]["completionTokens"].as_u64().unwrap_or(0),
                cost_usd: data["usage"]["costUsd"].as_f64(),
            })
        }
        Some("cancelled") => {
            Seen::End(Stop::Failed(ApiError::new(StatusCode::CONFLICT, "cancelled", "the turn was cancelled")))
        }
        Some("error") => {
            let code = event["error"]["code"].as_str().unwrap_or("INTERNAL_ERROR");
            // Said mid-turn (the gated call is answered with the failure): not the turn's end.
            if code == ErrorCode::OtpSendFailed.as_str() {
                return Seen::Other;
            }
            let message = event["error"]["message"].as_str().unwrap_or("the turn failed").to_string();
            let code = ErrorCode::ALL.into_iter().find(|c| c.as_str() == code).unwrap_or(ErrorCode::Internal);
            Seen::End(Stop::Failed(ClientError::new(code, message).into()))
        }
        _ => Seen::Other,
    }
}

/// What turn `request_id` is parked on, if it still waits.
pub(crate) async fn pending_park(
    app: &App,
    session_id: &str,
    request_id: &str,
) -> Result<Option<Box<ParkedTurn>>, ApiError> {
    let parked = app.turns.parked(session_id).await?;
    Ok(parked.filter(|p| p.request_id == request_id).map(Box::new))
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
                Seen::Park => {
                    // Already answered (a fast approver elsewhere): the turn goes on, keep following.
                    if let Some(p) = pending_park(app, session_id, request_id).await? {
                        return Ok(Stop::Parked(p));
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
        Stop::Answered { text, input_tokens, output_tokens, cost_usd } => {
            let mut usage = json!({"input_tokens": input_tokens, "output_tokens": output_tokens,
                                   "total_tokens": input_tokens + output_tokens});
            // Priced models only, as on the socket: never a made-up 0.
            if let Some(cost) = cost_usd {
                usage["cost_usd"] = json!(cost);
            }
            Ok((StatusCode::OK, json!({"message": text, "namespace": namespace, "agent": agent, "usage": usage})))
        }
        Stop::Parked(p) => Ok((StatusCode::ACCEPTED, park_body(namespace, &p))),
        Stop::Failed(e) => Err(e),
    }
}

/// The text of a turn's answer: the `responseParts` of its `eventual_response` payload (`data.data`), joined.
pub(crate) fn answer_text(data: &Value) -> String {
    let parts = data["response"]["responseParts"].as_array();
    parts.map(|parts| parts.iter().filter_map(Value::as_str).collect()).unwrap_or_default()
}

/// A park as a streamed event of the orra family: `tool_approval_request {call_id, tool_name, arguments,
/// namespace}` for an approval, else the 202 body under its status (`pending_interaction` / `pending_otp`). The
/// SSE stream sends it as an event of that name, an orra socket as a frame of that type.
pub(crate) fn park_event(namespace: &str, p: &ParkedTurn) -> (String, Value) {
    if p.gate == Gate::Confirm {
        let mut data = approval_body(namespace, &p.call)["approval"].clone();
        data["namespace"] = json!(namespace);
        return ("tool_approval_request".into(), data);
    }
    let body = park_body(namespace, p);
    (body["status"].as_str().unwrap_or("pending_interaction").to_string(), body)
}

/// The 202 body of a parked turn: `pending_approval {approval}`, `pending_interaction {interaction}` (the card
/// to show, answered at `POST /api/sessions/{namespace}/interactions/{interaction_id}`) or `pending_otp {otp}`
/// (answered at `POST /api/sessions/{namespace}/otp`).
pub(crate) fn park_body(namespace: &str, p: &ParkedTurn) -> Value {
    match &p.gate {
        Gate::Confirm => approval_body(namespace, &p.call),
        Gate::Interaction { interaction_id, interaction_kind, spec, reason } => json!({
            "status": "pending_interaction", "namespace": namespace,
            "interaction": {"interaction_id": interaction_id, "kind": interaction_kind, "spec": spec,
                            "reason": reason, "call_id": p.call.tool_call_id}}),
        Gate::Otp { .. } => json!({
            "status": "pending_otp", "namespace": namespace,
            "otp": {"call_id": p.call.tool_call_id, "tool_name": p.call.tool_name,
                    "expires_at": crate::util::rfc3339_from_ms(p.expires_at_ms)}}),
    }
}

/// The 202 body of a turn parked on an approval.
pub(crate) fn approval_body(namespace: &str, call: &PendingCall) -> Value {
    let arguments: Value = serde_json::from_str(&call.arguments).unwrap_or(Value::String(call.arguments.clone()));
    json!({"status": "pending_approval", "namespace": namespace,
           "approval": {"call_id": call.tool_call_id, "tool_name": call.tool_name, "arguments": arguments}})
}
