//! Server → client frames, each built in the exact v1 shape (see [`super::shapes`]). Extensions
//! (`sessionId`/`seq` on session events, `reconnect`) are added only for connections that asked for them.

use serde_json::{json, Value};

use crate::error::ClientError;
use crate::llm::Usage;
use crate::util::now_ms;

fn with_rid(mut v: Value, request_id: Option<&str>) -> Value {
    if let (Some(rid), Some(obj)) = (request_id, v.as_object_mut()) {
        obj.insert("requestId".into(), Value::String(rid.to_string()));
    }
    v
}

/// `immediate_response`: 202 (accepted, `data: {}`) or 200 (final, with data).
pub(crate) fn immediate(request_id: Option<&str>, status: u16, message: &str, data: Value) -> Value {
    with_rid(
        json!({"type": "immediate_response", "status": status, "message": message, "data": data, "timestamp": now_ms()}),
        request_id,
    )
}

/// `error` with the code and message both at the top level and under `data`.
pub(crate) fn error(request_id: Option<&str>, e: &ClientError) -> Value {
    let err = json!({"code": e.code.as_str(), "message": e.message});
    let mut data = json!({"error": err});
    if let (Some(rid), Some(obj)) = (request_id, data.as_object_mut()) {
        obj.insert("requestId".into(), Value::String(rid.to_string()));
    }
    // The v1 error keeps `{code, message}` exactly; extra context goes in `data.details`.
    if let Some(ms) = e.retry_after_ms {
        data["details"] = json!({"retryAfterMs": ms});
    }
    with_rid(json!({"type": "error", "error": err, "data": data, "timestamp": now_ms()}), request_id)
}

/// `stream_token`, `stream_reasoning` or `stream_preamble` as a JSON value: the readable statement of the shape
/// that the hot path's [`token_text`] is tested against.
#[cfg(test)]
pub(crate) fn token(kind: &str, request_id: &str, token: &str) -> Value {
    json!({"type": kind, "requestId": request_id, "token": token,
           "data": {"requestId": request_id, "token": token}, "timestamp": now_ms()})
}

/// [`token`] rendered straight to text: the hot path of a streamed turn (one per model chunk).
pub(crate) fn token_text(kind: &str, request_id: &str, token: &str) -> String {
    // One buffer, strings escaped straight into it: this runs once per streamed token.
    let mut out = Vec::with_capacity(96 + 2 * (request_id.len() + token.len()));
    let push_str = |out: &mut Vec<u8>, v: &str| {
        // Writing JSON for a &str into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut *out, v);
    };
    out.extend_from_slice(b"{\"type\":");
    push_str(&mut out, kind);
    out.extend_from_slice(b",\"requestId\":");
    push_str(&mut out, request_id);
    out.extend_from_slice(b",\"token\":");
    push_str(&mut out, token);
    out.extend_from_slice(b",\"data\":{\"requestId\":");
    push_str(&mut out, request_id);
    out.extend_from_slice(b",\"token\":");
    push_str(&mut out, token);
    out.extend_from_slice(b"},\"timestamp\":");
    out.extend_from_slice(now_ms().to_string().as_bytes());
    out.push(b'}');
    // serde_json writes valid UTF-8 and the rest is ASCII.
    String::from_utf8(out).unwrap_or_default()
}

/// `stream_chunk` for a tool step: `raw` is `{"toolCall": …}` or `{"toolResult": …}`.
pub(crate) fn chunk(request_id: &str, node: &str, raw: Value) -> Value {
    json!({"type": "stream_chunk", "requestId": request_id, "node": node,
           "data": {"requestId": request_id, "node": node, "state": {"rawResponse": raw}}, "timestamp": now_ms()})
}

/// A tool step's `title` (what a visitor reads) rides beside its `name` when there is one.
fn titled(mut step: Value, title: Option<&str>) -> Value {
    if let Some(t) = title {
        step["title"] = Value::String(t.to_string());
    }
    step
}

/// A tool step's chunk; `id` is the model's call id (an AG-UI client ties the call to its result by it).
pub(crate) fn tool_call_chunk(request_id: &str, id: &str, name: &str, arguments: &str, title: Option<&str>) -> Value {
    let step = titled(json!({"id": id, "name": name, "arguments": arguments}), title);
    chunk(request_id, name, json!({"toolCall": step}))
}

pub(crate) fn tool_result_chunk(
    request_id: &str,
    id: &str,
    name: &str,
    is_error: bool,
    result: &str,
    title: Option<&str>,
) -> Value {
    let step = titled(json!({"id": id, "name": name, "isError": is_error, "result": result}), title);
    chunk(request_id, name, json!({"toolResult": step}))
}

/// The envelope of the events whose payload sits at `data.data`: `{type, requestId, data: {requestId, data},
/// timestamp}` (confirmation, interaction and OTP events).
fn nested(kind: &str, request_id: &str, payload: Value) -> Value {
    json!({"type": kind, "requestId": request_id, "data": {"requestId": request_id, "data": payload}, "timestamp": now_ms()})
}

pub(crate) fn write_confirmation_required(request_id: &str, tool_id: &str, description: &str) -> Value {
    nested("write_confirmation_required", request_id, json!({"toolId": tool_id, "actionDescription": description}))
}

/// The single authoritative end of a turn.
/// `citations` is left out when there are none.
pub(crate) fn eventual_response(
    request_id: &str,
    message_id: &str,
    text: &str,
    usage: Usage,
    citations: Option<Value>,
) -> Value {
    let mut v = json!({"type": "eventual_response", "requestId": request_id, "status": 200,
           "data": {"requestId": request_id, "status": 200, "data": {
               "messageId": message_id,
               "needsEscalation": false,
               "response": {
                   "responseParts": [text],
                   "customerHappinessScore": 0.5,
                   "needsSatisfactionScore": 0.5,
                   "requestSummary": "",
                   "resolutionStatus": "in_progress",
                   "suggestedNextActions": []
               },
               "usage": {"promptTokens": usage.prompt_tokens, "completionTokens": usage.completion_tokens}
           }},
           "timestamp": now_ms()});
    // A model without a price has no cost: left out, never 0 (the schema types it as a number).
    if let Some(micro) = usage.cost_micro_usd {
        v["data"]["data"]["usage"]["costUsd"] = json!(micro as f64 / 1e6);
    }
    if let Some(c) = citations {
        v["data"]["data"]["citations"] = c;
    }
    v
}

/// `interaction_required`: the card to render; the turn is parked until `submit_interaction`.
pub(crate) fn interaction_required(
    request_id: &str,
    interaction_id: &str,
    kind: &str,
    spec: &Value,
    reason: &str,
) -> Value {
    let payload = json!({"interactionId": interaction_id, "kind": kind, "spec": spec, "reason": reason});
    nested("interaction_required", request_id, payload)
}

/// `interaction_invalid`: a reply to the submit (the park stays); `errors` is `[{field, message}]`.
pub(crate) fn interaction_invalid(request_id: &str, interaction_id: &str, kind: &str, errors: Value) -> Value {
    let payload = json!({"interactionId": interaction_id, "kind": kind, "errors": errors,
                         "message": crate::interactions::INVALID_SUMMARY});
    nested("interaction_invalid", request_id, payload)
}

/// `otp_verification_required`: the gated tool waits for the session to be verified.
pub(crate) fn otp_verification_required(
    request_id: &str,
    tool_id: &str,
    description: &str,
    channels: &[&str],
    auth_level: &str,
) -> Value {
    let payload = json!({"toolId": tool_id,
                         "actionDescription": description,
                         "availableChannels": channels, "authLevel": auth_level});
    nested("otp_verification_required", request_id, payload)
}

pub(crate) fn otp_sent(request_id: &str, channel: &str, masked: &str) -> Value {
    nested("otp_sent", request_id, json!({"channel": channel, "maskedDestination": masked}))
}

pub(crate) fn otp_verified(request_id: &str) -> Value {
    nested("otp_verified", request_id, json!({"message": "Identity verified successfully."}))
}

/// `otp_invalid`: `error` is `INVALID_CODE`, `MAX_ATTEMPTS`, `EXPIRED` or `NOT_FOUND`.
pub(crate) fn otp_invalid(request_id: &str, error: &str, attempts_remaining: u32, message: &str) -> Value {
    let payload = json!({"error": error, "attemptsRemaining": attempts_remaining, "message": message});
    nested("otp_invalid", request_id, payload)
}

pub(crate) fn cancelled(request_id: &str) -> Value {
    json!({"type": "cancelled", "requestId": request_id, "status": 499,
           "data": {"requestId": request_id, "status": 499}, "timestamp": now_ms()})
}

/// `turn_resumed` (extended clients only): the turn went on at another pod after its own died; its events go
/// on from `fromSeq` (same requestId, no gap).
/// Built with its type first, so a v1 socket can tell it from its first bytes.
pub(crate) fn turn_resumed(request_id: &str, from_seq: u64) -> String {
    let rid = Value::String(request_id.to_string());
    format!(r#"{{"type":"{TURN_RESUMED}","requestId":{rid},"fromSeq":{from_seq},"timestamp":{}}}"#, now_ms())
}

/// The type of [`turn_resumed`], which a v1 client never sees.
pub(crate) const TURN_RESUMED: &str = "turn_resumed";

pub(crate) fn pong(request_id: Option<&str>) -> Value {
    let ts = now_ms();
    with_rid(json!({"type": "pong", "data": {"timestamp": ts}, "timestamp": ts}), request_id)
}

pub(crate) fn keepalive() -> Value {
    json!({"type": "keepalive", "data": {"requestId": ""}, "timestamp": now_ms()})
}

/// Extension: sent before the server closes a socket (drain: 1012, slow consumer: 4000).
pub(crate) fn reconnect(reason: &str, retry_after_ms: u64) -> Value {
    json!({"type": "reconnect", "data": {"reason": reason, "retryAfterMs": retry_after_ms}, "timestamp": now_ms()})
}

/// Adds the extension fields to a session event already serialized in v1 form, without re-parsing it.
pub(crate) fn extend_session_event(v1: &str, session_id: &str, seq: u64, epoch: &str) -> String {
    let body = v1.trim_start();
    let rest = body.strip_prefix('{').unwrap_or(body).trim_start();
    let sid = serde_json::to_string(session_id).unwrap_or_else(|_| "\"\"".into());
    let epoch = serde_json::to_string(epoch).unwrap_or_else(|_| "\"\"".into());
    if rest.starts_with('}') {
        format!("{{\"sessionId\":{sid},\"seq\":{seq},\"epoch\":{epoch}{rest}")
    } else {
        format!("{{\"sessionId\":{sid},\"seq\":{seq},\"epoch\":{epoch},{rest}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_text_equals_token() {
        let mut a: Value = serde_json::from_str(&token_text("stream_token", "r\"1", "he said \"hi\"\n")).expect("json");
        let mut b = token("stream_token", "r\"1", "he said \"hi\"\n");
        a["timestamp"] = 0.into();
        b["timestamp"] = 0.into();
        assert_eq!(a, b);
    }

    #[test]
    fn extension_fields_are_spliced_in() {
        let v: Value =
            serde_json::from_str(&extend_session_event(r#"{"type":"x","a":1}"#, "s\"1", 7, "e1")).expect("json");
        assert_eq!(v, json!({"type": "x", "a": 1, "sessionId": "s\"1", "seq": 7, "epoch": "e1"}));
        let v: Value = serde_json::from_str(&extend_session_event("{}", "s", 1, "e2")).expect("json");
        assert_eq!(v, json!({"sessionId": "s", "seq": 1, "epoch": "e2"}));
    }
}
