//! A turn's logged events as AG-UI events, for one run. The renderer keeps what AG-UI's sequencing needs (the
//! open text message, the tool calls already shown) and says when the run ends: the turn answered, was
//! cancelled or failed, or parked on a person (the door then reads the park and ends the run with an
//! interrupt). Message ids are derived from the turn and the log position, so rendering the same events again
//! (a reconnect) gives the same ids.

use std::collections::HashSet;

use serde_json::{json, Value};

use super::wire;

/// What one logged event meant for the run.
pub(super) enum Rendered {
    /// AG-UI events to send (maybe none).
    Events(Vec<Value>),
    /// The turn parked on a person: the door ends the run with the park's interrupt (after `before`).
    Parked { before: Vec<Value> },
    /// The turn ended: these events, the last being `RUN_FINISHED` or `RUN_ERROR`.
    End(Vec<Value>),
}

pub(super) struct Renderer {
    thread_id: String,
    run_id: String,
    /// The turn this run follows.
    request_id: String,
    /// The text message being streamed, if one is open.
    open_text: Option<String>,
    /// The last assistant text message of the run (tool calls hang under it).
    last_text: Option<String>,
    /// Whether any text was streamed in this run (else the final answer is sent whole).
    streamed: bool,
    /// Tool calls already shown (`TOOL_CALL_START…END`).
    shown: HashSet<String>,
    /// The turn asked for an OTP code: the park is settled once the code is sent (or its sending failed).
    otp_asked: bool,
}

impl Renderer {
    pub(super) fn new(thread_id: &str, run_id: &str, request_id: &str) -> Renderer {
        Renderer {
            thread_id: thread_id.to_string(),
            run_id: run_id.to_string(),
            request_id: request_id.to_string(),
            open_text: None,
            last_text: None,
            streamed: false,
            shown: HashSet::new(),
            otp_asked: false,
        }
    }

    pub(super) fn request_id(&self) -> &str {
        &self.request_id
    }

    /// Ends the open text message, if any.
    pub(super) fn close_text(&mut self, out: &mut Vec<Value>) {
        if let Some(id) = self.open_text.take() {
            out.push(wire::text_end(&id));
        }
    }

    /// A call the client already has (the run that ended on it showed it).
    pub(super) fn mark_shown(&mut self, id: &str) {
        self.shown.insert(id.to_string());
    }

    /// The events of a tool call not shown yet (a parked call whose chunk the run ends before).
    pub(super) fn show_call(&mut self, id: &str, name: &str, arguments: &str, out: &mut Vec<Value>) {
        self.close_text(out);
        if self.shown.insert(id.to_string()) {
            out.extend(wire::tool_call(id, name, arguments, self.last_text.as_deref()));
        }
    }

    pub(super) fn started(&self) -> Value {
        wire::run_started(&self.thread_id, &self.run_id)
    }

    pub(super) fn finished(&self, outcome: Value) -> Value {
        wire::run_finished(&self.thread_id, &self.run_id, outcome)
    }

    /// One logged event at `seq`.
    pub(super) fn event(&mut self, seq: u64, event: &Value) -> Rendered {
        if event.get("requestId").and_then(Value::as_str) != Some(self.request_id.as_str()) {
            return Rendered::Events(Vec::new());
        }
        let mut out = Vec::new();
        match event.get("type").and_then(Value::as_str).unwrap_or("") {
            "stream_token" => {
                let delta = event.get("token").and_then(Value::as_str).unwrap_or("");
                let id = match &self.open_text {
                    Some(id) => id.clone(),
                    None => {
                        let id = format!("{}-{seq}", self.request_id);
                        out.push(wire::text_start(&id));
                        self.open_text = Some(id.clone());
                        self.last_text = Some(id.clone());
                        id
                    }
                };
                self.streamed = true;
                out.push(wire::text_content(&id, delta));
            }
            "stream_chunk" => {
                let raw = &event["data"]["state"]["rawResponse"];
                if let Some(call) = raw.get("toolCall") {
                    let id = call["id"].as_str().unwrap_or_default();
                    let name = call["name"].as_str().unwrap_or_default();
                    self.show_call(id, name, call["arguments"].as_str().unwrap_or("{}"), &mut out);
                } else if let Some(result) = raw.get("toolResult") {
                    self.close_text(&mut out);
                    let id = result["id"].as_str().unwrap_or_default();
                    let content = result["result"].as_str().unwrap_or_default();
                    out.push(wire::tool_result(&format!("{}-result-{seq}", self.request_id), id, content));
                }
            }
            "write_confirmation_required" | "interaction_required" => {
                self.close_text(&mut out);
                return Rendered::Parked { before: out };
            }
            "otp_verification_required" => self.otp_asked = true,
            "otp_sent" if self.otp_asked => {
                self.close_text(&mut out);
                return Rendered::Parked { before: out };
            }
            "eventual_response" => {
                let data = &event["data"]["data"];
                let text = crate::gateway::outcome::answer_text(data);
                self.close_text(&mut out);
                if !self.streamed && !text.is_empty() {
                    let id = format!("{}-{seq}", self.request_id);
                    out.extend([wire::text_start(&id), wire::text_content(&id, &text), wire::text_end(&id)]);
                }
                let mut finished = self.finished(json!({"type": "success"}));
                // AG-UI's token usage (its TokenUsage has no cost: that is in `/admin/usage`).
                let tokens = (data["usage"]["promptTokens"].as_u64(), data["usage"]["completionTokens"].as_u64());
                if let (Some(i), Some(o)) = tokens.0.zip(tokens.1).filter(|(i, o)| i + o > 0).unzip() {
                    finished["usage"] = json!([{"inputTokens": i, "outputTokens": o, "totalTokens": i + o}]);
                }
                out.push(finished);
                return Rendered::End(out);
            }
            "cancelled" => {
                self.close_text(&mut out);
                out.push(self.finished(json!({"type": "cancelled"})));
                return Rendered::End(out);
            }
            "error" => {
                let code = event["error"]["code"].as_str().unwrap_or("INTERNAL_ERROR");
                // Said mid-turn; the turn goes on (its gated call is answered with the failure).
                if code == "OTP_SEND_FAILED" {
                    self.otp_asked = false;
                    return Rendered::Events(out);
                }
                self.close_text(&mut out);
                let message = event["error"]["message"].as_str().unwrap_or("the run failed");
                out.push(wire::run_error(message, code));
                return Rendered::End(out);
            }
            _ => {}
        }
        Rendered::Events(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::outbound as out;

    fn events(r: &Rendered) -> Vec<String> {
        let list = match r {
            Rendered::Events(e) | Rendered::End(e) | Rendered::Parked { before: e } => e,
        };
        list.iter().map(|e| e["type"].as_str().unwrap_or("").to_string()).collect()
    }

    #[test]
    fn a_turn_renders_as_one_well_formed_run() {
        let mut r = Renderer::new("t", "run", "q");
        assert_eq!(
            events(&r.event(1, &out::token("stream_token", "q", "Hel"))),
            ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
        );
        assert_eq!(events(&r.event(2, &out::token("stream_token", "q", "lo"))), ["TEXT_MESSAGE_CONTENT"]);
        assert!(events(&r.event(3, &out::token("stream_token", "other", "x"))).is_empty(), "another turn's");
        let call = out::tool_call_chunk("q", "c1", "lookup", "{\"id\":1}", None);
        assert_eq!(
            events(&r.event(4, &call)),
            ["TEXT_MESSAGE_END", "TOOL_CALL_START", "TOOL_CALL_ARGS", "TOOL_CALL_END"]
        );
        assert!(events(&r.event(5, &call)).is_empty(), "a call is shown once");
        let result = out::tool_result_chunk("q", "c1", "lookup", false, "found", None);
        assert_eq!(events(&r.event(6, &result)), ["TOOL_CALL_RESULT"]);
        assert_eq!(
            events(&r.event(7, &out::token("stream_token", "q", "Done"))),
            ["TEXT_MESSAGE_START", "TEXT_MESSAGE_CONTENT"]
        );
        let end = r.event(
            8,
            &serde_json::json!({"type": "eventual_response", "requestId": "q",
            "data": {"data": {"response": {"responseParts": ["Hello", "Done"]}}}}),
        );
        assert!(matches!(end, Rendered::End(_)));
        assert_eq!(events(&end), ["TEXT_MESSAGE_END", "RUN_FINISHED"]);
    }

    #[test]
    fn parks_end_the_run_and_a_failed_code_delivery_does_not() {
        let mut r = Renderer::new("t", "run", "q");
        let asked = out::otp_verification_required("q", "pay", "Verify", &["email"], "end_user");
        assert!(matches!(r.event(1, &asked), Rendered::Events(_)));
        let failed =
            out::error(Some("q"), &crate::error::ClientError::new(crate::error::ErrorCode::OtpSendFailed, "x"));
        assert!(matches!(r.event(2, &failed), Rendered::Events(_)), "not the end of the turn");
        assert!(matches!(r.event(3, &asked), Rendered::Events(_)));
        assert!(matches!(r.event(4, &out::otp_sent("q", "email", "a***@x.com")), Rendered::Parked { .. }));
        let mut s = Renderer::new("t", "run", "q");
        assert!(matches!(s.event(1, &out::write_confirmation_required("q", "del", "Allow?")), Rendered::Parked { .. }));
        let err =
            out::error(Some("q"), &crate::error::ClientError::new(crate::error::ErrorCode::LlmUnavailable, "down"));
        let end = s.event(2, &err);
        assert_eq!(events(&end), ["RUN_ERROR"]);
    }
}
