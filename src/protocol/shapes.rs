//! The v1 frame shapes, stated in the project's own code. A v1 client (e.g. the official Python client)
//! drops any frame with a field it does not know, so tests check every frame a v1 connection receives
//! against these: required fields present, no unknown field anywhere a shape is closed.

use serde_json::Value;

/// A JSON shape.
#[derive(Debug, Clone)]
pub enum Shape {
    Any,
    Str,
    Int,
    Num,
    Bool,
    /// Any JSON object (open).
    AnyObject,
    Array(Box<Shape>),
    Nullable(Box<Shape>),
    /// A closed object: listed fields only; `required` must be present.
    Object {
        required: Vec<&'static str>,
        fields: Vec<(&'static str, Shape)>,
    },
}

fn obj(required: &[&'static str], fields: Vec<(&'static str, Shape)>) -> Shape {
    Shape::Object { required: required.to_vec(), fields }
}

fn err_obj() -> Shape {
    obj(&["code", "message"], vec![("code", Shape::Str), ("message", Shape::Str)])
}

fn token_event() -> Shape {
    obj(
        &["type", "data"],
        vec![
            ("type", Shape::Str),
            ("requestId", Shape::Str),
            ("token", Shape::Str),
            ("timestamp", Shape::Int),
            ("data", obj(&["requestId", "token"], vec![("requestId", Shape::Str), ("token", Shape::Str)])),
        ],
    )
}

/// The v1 shape of a server event type; `None` for types v1 does not define.
pub fn v1_event(event_type: &str) -> Option<Shape> {
    let base = |required: &[&'static str], data: Shape, extra: Vec<(&'static str, Shape)>| {
        let mut fields =
            vec![("type", Shape::Str), ("requestId", Shape::Str), ("timestamp", Shape::Int), ("data", data)];
        fields.extend(extra);
        obj(required, fields)
    };
    Some(match event_type {
        "immediate_response" => {
            base(&["type", "data"], Shape::AnyObject, vec![("status", Shape::Int), ("message", Shape::Str)])
        }
        "error" => base(
            &["type", "data"],
            obj(&["error"], vec![("requestId", Shape::Str), ("error", err_obj()), ("details", Shape::Any)]),
            vec![("error", err_obj())],
        ),
        "stream_token" | "stream_reasoning" | "stream_preamble" => token_event(),
        "stream_chunk" => base(
            &["type", "data"],
            obj(
                &["requestId", "node", "state"],
                vec![
                    ("requestId", Shape::Str),
                    ("node", Shape::Str),
                    ("done", Shape::Bool),
                    (
                        "state",
                        obj(
                            &[],
                            vec![
                                ("rawResponse", Shape::Any),
                                ("structuredResponse", Shape::Any),
                                ("pendingWriteConfirmation", Shape::Nullable(Box::new(Shape::AnyObject))),
                                ("pendingOtpVerification", Shape::Nullable(Box::new(Shape::AnyObject))),
                            ],
                        ),
                    ),
                ],
            ),
            vec![("node", Shape::Str)],
        ),
        "write_confirmation_required" => base(
            &["type", "data"],
            obj(
                &["requestId", "data"],
                vec![
                    ("requestId", Shape::Str),
                    (
                        "data",
                        obj(
                            &["toolId", "actionDescription"],
                            vec![("toolId", Shape::Str), ("actionDescription", Shape::Str)],
                        ),
                    ),
                ],
            ),
            vec![],
        ),
        "eventual_response" => base(
            &["type", "data"],
            obj(
                &["requestId", "status", "data"],
                vec![
                    ("requestId", Shape::Str),
                    ("status", Shape::Int),
                    (
                        "data",
                        obj(
                            &["messageId", "response"],
                            vec![
                                ("messageId", Shape::Str),
                                ("response", Shape::Any),
                                ("needsEscalation", Shape::Bool),
                                ("escalationReason", Shape::Str),
                                (
                                    "usage",
                                    obj(
                                        &[],
                                        vec![
                                            ("costUsd", Shape::Num),
                                            ("promptTokens", Shape::Int),
                                            ("completionTokens", Shape::Int),
                                        ],
                                    ),
                                ),
                                ("citations", Shape::Array(Box::new(citation()))),
                                ("directive", Shape::Nullable(Box::new(Shape::AnyObject))),
                            ],
                        ),
                    ),
                ],
            ),
            vec![("status", Shape::Int)],
        ),
        "cancelled" => base(
            &["type", "status"],
            obj(&["status"], vec![("requestId", Shape::Str), ("status", Shape::Int)]),
            vec![("status", Shape::Int)],
        ),
        "interaction_required" => base(
            &["type", "data"],
            inner(obj(
                &["interactionId", "kind", "spec", "reason"],
                vec![
                    ("interactionId", Shape::Str),
                    ("kind", Shape::Str),
                    ("spec", Shape::AnyObject),
                    ("reason", Shape::Str),
                ],
            )),
            vec![],
        ),
        "interaction_invalid" => base(
            &["type", "data"],
            inner(obj(
                &["interactionId", "kind", "errors", "message"],
                vec![
                    ("interactionId", Shape::Str),
                    ("kind", Shape::Str),
                    (
                        "errors",
                        Shape::Array(Box::new(obj(
                            &["field", "message"],
                            vec![("field", Shape::Str), ("message", Shape::Str)],
                        ))),
                    ),
                    ("message", Shape::Str),
                ],
            )),
            vec![],
        ),
        "otp_verification_required" => base(
            &["type", "data"],
            inner(obj(
                &["toolId", "actionDescription", "availableChannels", "authLevel"],
                vec![
                    ("toolId", Shape::Str),
                    ("actionDescription", Shape::Str),
                    ("availableChannels", Shape::Array(Box::new(Shape::Str))),
                    ("authLevel", Shape::Str),
                ],
            )),
            vec![],
        ),
        "otp_sent" => base(
            &["type", "data"],
            inner(obj(
                &["channel", "maskedDestination"],
                vec![("channel", Shape::Str), ("maskedDestination", Shape::Str)],
            )),
            vec![],
        ),
        "otp_verified" => base(&["type", "data"], inner(obj(&["message"], vec![("message", Shape::Str)])), vec![]),
        "otp_invalid" => base(
            &["type", "data"],
            inner(obj(
                &["attemptsRemaining", "message"],
                vec![("error", Shape::Str), ("attemptsRemaining", Shape::Int), ("message", Shape::Str)],
            )),
            vec![],
        ),
        "keepalive" => base(&["type", "data"], obj(&["requestId"], vec![("requestId", Shape::Str)]), vec![]),
        "pong" => base(&["type"], obj(&["timestamp"], vec![("timestamp", Shape::Int)]), vec![]),
        _ => return None,
    })
}

/// `data` of the events shaped `{requestId, data: <payload>}`.
fn inner(payload: Shape) -> Shape {
    obj(&["requestId", "data"], vec![("requestId", Shape::Str), ("data", payload)])
}

/// One source of `eventual_response.data.data.citations`.
fn citation() -> Shape {
    obj(
        &["id", "title", "snippet", "score"],
        vec![
            ("id", Shape::Str),
            ("title", Shape::Str),
            ("url", Shape::Str),
            ("snippet", Shape::Str),
            ("score", Shape::Num),
        ],
    )
}

/// The `response` object of `eventual_response` (GeneralAgentResponse).
pub fn agent_response() -> Shape {
    obj(
        &[
            "responseParts",
            "customerHappinessScore",
            "needsSatisfactionScore",
            "requestSummary",
            "resolutionStatus",
            "suggestedNextActions",
        ],
        vec![
            ("responseParts", Shape::Array(Box::new(Shape::Str))),
            ("customerHappinessScore", Shape::Num),
            ("needsSatisfactionScore", Shape::Num),
            ("requestSummary", Shape::Str),
            ("resolutionStatus", Shape::Str),
            ("suggestedNextActions", Shape::Array(Box::new(Shape::Str))),
        ],
    )
}

/// Checks `value` against `shape`; the error names the path.
pub fn check(shape: &Shape, value: &Value, path: &str) -> Result<(), String> {
    let bad = |what: &str| Err(format!("{path}: expected {what}, got {value}"));
    match shape {
        Shape::Any => Ok(()),
        Shape::Str => {
            if value.is_string() {
                Ok(())
            } else {
                bad("string")
            }
        }
        Shape::Int => {
            if value.is_i64() || value.is_u64() {
                Ok(())
            } else {
                bad("integer")
            }
        }
        Shape::Num => {
            if value.is_number() {
                Ok(())
            } else {
                bad("number")
            }
        }
        Shape::Bool => {
            if value.is_boolean() {
                Ok(())
            } else {
                bad("boolean")
            }
        }
        Shape::AnyObject => {
            if value.is_object() {
                Ok(())
            } else {
                bad("object")
            }
        }
        Shape::Nullable(inner) => {
            if value.is_null() {
                Ok(())
            } else {
                check(inner, value, path)
            }
        }
        Shape::Array(item) => match value.as_array() {
            Some(items) => items.iter().enumerate().try_for_each(|(i, v)| check(item, v, &format!("{path}[{i}]"))),
            None => bad("array"),
        },
        Shape::Object { required, fields } => {
            let Some(map) = value.as_object() else {
                return bad("object");
            };
            for r in required {
                if !map.contains_key(*r) {
                    return Err(format!("{path}: missing required field '{r}'"));
                }
            }
            for (k, v) in map {
                match fields.iter().find(|(name, _)| name == k) {
                    Some((_, s)) => check(s, v, &format!("{path}.{k}"))?,
                    None => return Err(format!("{path}: unknown field '{k}'")),
                }
            }
            Ok(())
        }
    }
}

/// Checks a whole server frame as a v1 client sees it.
pub fn check_v1_frame(frame: &Value) -> Result<(), String> {
    let t = frame.get("type").and_then(Value::as_str).ok_or("frame without a string 'type'")?;
    let shape = v1_event(t).ok_or_else(|| format!("'{t}' is not a v1 event type"))?;
    check(&shape, frame, "$")?;
    if t == "eventual_response" {
        if let Some(resp) = frame.pointer("/data/data/response") {
            check(&agent_response(), resp, "$.data.data.response")?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::{ClientError, ErrorCode};
    use crate::protocol::outbound as out;

    #[test]
    fn every_builder_matches_its_v1_shape() {
        let frames = vec![
            out::immediate(Some("r"), 202, "Processing your request...", serde_json::json!({})),
            out::error(Some("r"), &ClientError::new(ErrorCode::SessionNotFound, "nope")),
            out::error(None, &ClientError::validation("bad")),
            out::token("stream_token", "r", "he"),
            out::tool_call_chunk("r", "c1", "t", "{}", Some("Doing t")),
            out::tool_result_chunk("r", "c1", "t", false, "ok", None),
            out::write_confirmation_required("r", "t", "Allow?"),
            out::eventual_response(
                "r",
                "m",
                "done",
                crate::llm::Usage { prompt_tokens: 1, completion_tokens: 2, cost_micro_usd: Some(1_500) },
                None,
            ),
            out::cancelled("r"),
            out::eventual_response(
                "r",
                "m",
                "cited",
                crate::llm::Usage::default(),
                crate::knowledge::citations::citations(
                    &[crate::knowledge::Hit {
                        id: "d".into(),
                        title: "t".into(),
                        url: Some("https://x/y".into()),
                        snippet: "s".into(),
                        score: 1.5,
                    }],
                    &[],
                ),
            ),
            out::interaction_required("r", "i", "identity_intake", &serde_json::json!({"fields": []}), "why"),
            out::interaction_invalid(
                "r",
                "i",
                "choices",
                serde_json::json!([{"field": "Plan", "message": "this question must be answered"}]),
            ),
            out::otp_verification_required("r", "pay", "Verify your identity to continue.", &["email"], "end_user"),
            out::otp_sent("r", "email", "a***@example.com"),
            out::otp_verified("r"),
            out::otp_invalid("r", "INVALID_CODE", 2, "Invalid code. 2 attempt(s) remaining."),
            out::cancelled("r"),
            out::pong(Some("r")),
            out::keepalive(),
        ];
        for f in frames {
            check_v1_frame(&f).unwrap_or_else(|e| panic!("{e}\n{f}"));
        }
    }

    #[test]
    fn unknown_fields_are_caught() {
        let mut f = out::cancelled("r");
        f.as_object_mut().expect("obj").insert("seq".into(), 1.into());
        assert!(check_v1_frame(&f).unwrap_err().contains("unknown field 'seq'"));
        assert!(check_v1_frame(&out::reconnect("drain", 1)).is_err());
    }
}
