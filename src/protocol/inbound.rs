//! Client → server frames. Parsing is lenient (unknown fields are ignored) but a known field of the wrong
//! type is a `VALIDATION_ERROR`, and every error echoes the `requestId` when one could be read.

use serde_json::Value;

use super::fields::Fields;
use super::MAX_MESSAGE_CHARS;
use crate::error::{ClientError, ErrorCode};

/// One parsed client frame.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Request {
    pub request_id: Option<String>,
    pub action: Action,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Action {
    CreateSession(CreateSession),
    SendMessage(SendMessage),
    GetSession {
        session_id: String,
    },
    GetMessages {
        session_id: String,
        limit: usize,
        cursor: Option<String>,
    },
    ConfirmTool {
        session_id: String,
        approved: bool,
        tool_call_id: Option<String>,
    },
    Cancel {
        session_id: Option<String>,
    },
    Ping,
    ListConversations {
        limit: usize,
        cursor: Option<String>,
    },
    RenameConversation {
        conversation_id: String,
        title: String,
    },
    /// Extension: replay a session's log after `after_seq`, then go live. `epoch` is the log epoch the client's
    /// `after_seq` counts in (from the last ack or event); another epoch means the log restarted.
    ResumeSession {
        session_id: String,
        after_seq: u64,
        epoch: Option<String>,
        /// Proves ownership on a socket without the owner's credentials: the create ack's `resumeToken`, or a
        /// fresh widget `authContext`.
        proof: Option<OwnerProof>,
    },
    /// The person's answer to a parked interaction: values, or `declined`.
    SubmitInteraction(SubmitInteraction),
    /// A one-time code for the session's OTP gate.
    VerifyOtp {
        session_id: String,
        code: String,
    },
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SubmitInteraction {
    pub session_id: String,
    /// Empty when the frame carried none (then it matches no park: `INTERACTION_MISMATCH`).
    pub interaction_id: String,
    pub kind: Option<String>,
    /// As sent: its shape is the kind validator's business (`interaction_invalid`), not the parser's.
    pub values: Option<Value>,
    pub declined: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CreateSession {
    pub agent_id: String,
    pub conversation_id: Option<String>,
    pub user_name: Option<String>,
    /// The contact the OTP gate sends codes to, stamped on the session.
    pub user_email: Option<String>,
    /// Render capabilities; `None` = inherit the conversation's.
    pub supports: Option<Vec<String>>,
    /// A widget's signed identity, checked against the agent's `widget_secret`.
    pub auth_context: Option<AuthContext>,
}

/// How a `resume_session` proves the socket may act as the session's owner.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum OwnerProof {
    Token(String),
    AuthContext(AuthContext),
}

/// `authContext {userId, timestamp, signature}` as sent; verified by `widget::auth`.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct AuthContext {
    pub user_id: String,
    /// Unix seconds.
    pub timestamp: i64,
    pub signature: String,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct SendMessage {
    pub session_id: String,
    pub message: String,
    pub stream: bool,
    pub model: Option<String>,
    pub skill: Option<String>,
    pub images: Vec<Image>,
    pub files: Vec<Value>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Image {
    pub url: String,
    pub detail: Option<String>,
}

/// A parse failure: the error and the `requestId` to echo, if one could be read.
#[derive(Debug, Clone)]
pub(crate) struct ParseError {
    pub request_id: Option<String>,
    pub error: ClientError,
}

/// Parses one text frame.
/// The `requestId` of a frame that is refused without being handled (to answer it by its id).
pub(crate) fn request_id_of(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Id {
        #[serde(rename = "requestId")]
        request_id: Option<String>,
    }
    serde_json::from_str::<Id>(text).ok()?.request_id
}

pub(crate) fn parse(text: &str) -> Result<Request, ParseError> {
    let fail = |request_id: Option<String>, message: String| ParseError {
        request_id,
        error: ClientError::validation(message),
    };
    let value: Value = serde_json::from_str(text).map_err(|e| fail(None, format!("invalid JSON frame: {e}")))?;
    let Value::Object(obj) = value else {
        return Err(fail(None, "a frame must be a JSON object".into()));
    };
    let request_id = match obj.get("requestId") {
        None | Some(Value::Null) => None,
        Some(Value::String(s)) if s.len() <= 256 => Some(s.clone()),
        Some(Value::String(_)) => return Err(fail(None, "'requestId' must be at most 256 characters".into())),
        Some(_) => return Err(fail(None, "'requestId' must be a string".into())),
    };
    let action = match obj.get("action") {
        None | Some(Value::Null) => return Err(fail(request_id, "missing 'action' field".into())),
        Some(Value::String(a)) => a.clone(),
        Some(_) => return Err(fail(request_id, "'action' must be a string".into())),
    };
    let f = Fields { obj: &obj };
    if request_id.is_none() && matches!(action.as_str(), "submit_interaction" | "verify_otp") {
        return Err(fail(None, "missing 'requestId' (it ties the answer to the waiting turn)".into()));
    }
    let parsed = parse_action(&action, &f);
    match parsed {
        Ok(action) => Ok(Request { request_id, action }),
        Err(error) => Err(ParseError { request_id, error }),
    }
}

fn parse_action(action: &str, f: &Fields<'_>) -> Result<Action, ClientError> {
    Ok(match action {
        "create_conversation_session" => Action::CreateSession(CreateSession {
            agent_id: f.req_str("agentId")?,
            conversation_id: f.opt_str("conversationId")?,
            user_name: f.opt_str("userName")?,
            user_email: f.opt_str("userEmail")?,
            supports: f.opt_str_list("supports", 32, 64)?,
            auth_context: parse_auth_context(f.obj.get("authContext"))?,
        }),
        "send_message" => Action::SendMessage(parse_send(f)?),
        "get_session" => Action::GetSession { session_id: f.req_str("sessionId")? },
        "get_conversation_messages" => {
            Action::GetMessages { session_id: f.req_str("sessionId")?, limit: f.limit()?, cursor: f.opt_str("cursor")? }
        }
        "confirm_tool_action" => Action::ConfirmTool {
            session_id: f.req_str("sessionId")?,
            approved: f.req_bool("approved")?,
            tool_call_id: f.opt_str("toolCallId")?,
        },
        "cancel" => Action::Cancel { session_id: f.opt_str("sessionId")? },
        "ping" => Action::Ping,
        "list_conversations" => Action::ListConversations { limit: f.limit()?, cursor: f.opt_str("cursor")? },
        "rename_conversation" => {
            let title = f.req_str("title")?;
            if title.trim().is_empty() || title.chars().count() > 200 {
                return Err(ClientError::validation("'title' must be 1-200 characters"));
            }
            Action::RenameConversation {
                conversation_id: f.req_str("conversationId")?,
                title: title.trim().to_string(),
            }
        }
        "resume_session" => Action::ResumeSession {
            session_id: f.req_str("sessionId")?,
            after_seq: f.req_u64("afterSeq")?,
            epoch: f.opt_str("epoch")?,
            proof: match (f.opt_str("resumeToken")?, parse_auth_context(f.obj.get("authContext"))?) {
                (Some(token), _) if token.len() <= 256 => Some(OwnerProof::Token(token)),
                (Some(_), _) => return Err(ClientError::validation("'resumeToken' is at most 256 characters")),
                (None, ctx) => ctx.map(OwnerProof::AuthContext),
            },
        },
        "submit_interaction" => {
            // The requestId ties the answer to the parked turn's events: required here (the parser reads it
            // before the action, so its absence is checked by the caller of `parse_action`).
            Action::SubmitInteraction(SubmitInteraction {
                session_id: f.req_str("sessionId")?,
                interaction_id: f.opt_str("interactionId")?.unwrap_or_default(),
                kind: f.opt_str("kind")?,
                values: f.obj.get("values").filter(|v| !v.is_null()).cloned(),
                declined: f.opt_bool("declined")?.unwrap_or(false),
            })
        }
        "verify_otp" => {
            let session_id = f.req_str("sessionId")?;
            let code = f.opt_str("code")?.unwrap_or_default();
            if code.trim().is_empty() || code.chars().count() > 32 {
                return Err(ClientError::validation("'code' must be 1-32 characters"));
            }
            Action::VerifyOtp { session_id, code: code.trim().to_string() }
        }
        other => {
            let shown: String = other.chars().take(64).collect();
            return Err(ClientError::new(
                ErrorCode::UnsupportedAction,
                format!("action '{shown}' is not supported by this server"),
            ));
        }
    })
}

fn parse_auth_context(v: Option<&Value>) -> Result<Option<AuthContext>, ClientError> {
    let bad =
        || ClientError::validation("'authContext' must be {userId: 1-256 chars, timestamp: Unix seconds, signature}");
    let obj = match v {
        None | Some(Value::Null) => return Ok(None),
        Some(Value::Object(o)) => o,
        Some(_) => return Err(bad()),
    };
    let user_id = obj.get("userId").and_then(Value::as_str).filter(|u| !u.is_empty() && u.len() <= 256);
    let timestamp = obj.get("timestamp").and_then(Value::as_i64);
    let signature = obj.get("signature").and_then(Value::as_str).filter(|s| s.len() <= 256);
    match (user_id, timestamp, signature) {
        (Some(u), Some(t), Some(s)) => Ok(Some(AuthContext { user_id: u.into(), timestamp: t, signature: s.into() })),
        _ => Err(bad()),
    }
}

fn parse_send(f: &Fields<'_>) -> Result<SendMessage, ClientError> {
    let session_id = f.req_str("sessionId")?;
    let message = f.opt_str("message")?.unwrap_or_default();
    let images = match f.obj.get("images") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items
            .iter()
            .map(|item| {
                // Only what a model fetches safely: https, or the image inline as a data: URL. Never http or a
                // scheme that points inside the network the model provider or the pod sits in.
                let url = item.get("url").and_then(Value::as_str).filter(|u| {
                    u.len() > "https://".len() && (u.starts_with("https://") || u.starts_with("data:image/"))
                });
                let detail = item.get("detail").and_then(Value::as_str);
                match (url, detail) {
                    (Some(url), d) if d.is_none_or(|d| matches!(d, "low" | "high" | "auto")) => {
                        Ok(Image { url: url.to_string(), detail: d.map(str::to_string) })
                    }
                    _ => Err(ClientError::validation(
                        "each of 'images' needs an https: or data:image/ 'url' and an optional 'detail' of low|high|auto",
                    )),
                }
            })
            .collect::<Result<_, _>>()?,
        Some(_) => return Err(ClientError::validation("'images' must be an array")),
    };
    let files = match f.obj.get("files") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => {
            // Forwarded to tool webhooks as `{name, url, mimeType}` only: nothing else a client sends rides along.
            let mut files = Vec::with_capacity(items.len());
            for item in items {
                let name = item.get("name").and_then(Value::as_str).filter(|n| !n.is_empty() && n.len() <= 255);
                let url = item.get("url").and_then(Value::as_str).filter(|u| !u.is_empty() && u.len() <= 2048);
                let mime = match item.get("mimeType") {
                    None | Some(Value::Null) => None,
                    Some(Value::String(m)) if m.len() <= 255 => Some(m.clone()),
                    Some(_) => return Err(ClientError::validation("a file's 'mimeType' must be a string")),
                };
                let (Some(name), Some(url)) = (name, url) else {
                    return Err(ClientError::validation("each of 'files' needs a 'name' (1-255 chars) and a 'url'"));
                };
                let mut file = serde_json::json!({"name": name, "url": url});
                if let Some(m) = mime {
                    file["mimeType"] = Value::String(m);
                }
                files.push(file);
            }
            files
        }
        Some(_) => return Err(ClientError::validation("'files' must be an array")),
    };
    if message.trim().is_empty() && images.is_empty() && files.is_empty() {
        return Err(ClientError::validation(
            "missing or empty 'message' (an empty message needs at least one 'images' or 'files' attachment)",
        ));
    }
    if message.chars().count() > MAX_MESSAGE_CHARS {
        return Err(ClientError::validation(format!("'message' is longer than {MAX_MESSAGE_CHARS} characters")));
    }
    let skill = f.opt_str("skill")?;
    Ok(SendMessage {
        session_id,
        message,
        stream: f.opt_bool("stream")?.unwrap_or(true),
        model: f.opt_str("model")?,
        skill,
        images,
        files,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn err(text: &str) -> (Option<String>, ErrorCode, String) {
        let e = parse(text).expect_err("should fail");
        (e.request_id, e.error.code, e.error.message)
    }

    #[test]
    fn reference_errors() {
        assert_eq!(err("this is not json").1, ErrorCode::ValidationError);
        assert!(err("this is not json").2.starts_with("invalid JSON frame"));
        assert_eq!(
            err(r#"{"requestId":"r","message":"hi"}"#),
            (Some("r".into()), ErrorCode::ValidationError, "missing 'action' field".into())
        );
        let (rid, code, msg) = err(r#"{"action":"frobnicate","requestId":"r-bad"}"#);
        assert_eq!((rid.as_deref(), code), (Some("r-bad"), ErrorCode::UnsupportedAction));
        assert_eq!(msg, "action 'frobnicate' is not supported by this server");
        let (_, code, msg) = err(r#"{"action":"send_message","requestId":"r","sessionId":"s","message":""}"#);
        assert_eq!(code, ErrorCode::ValidationError);
        assert!(msg.contains("missing or empty 'message'"));
    }

    #[test]
    fn wrong_types_are_validation_errors() {
        for frame in [
            r#"{"action":"send_message","requestId":"r","sessionId":5,"message":"x"}"#,
            r#"{"action":"send_message","requestId":"r","sessionId":"s","message":"x","stream":"yes"}"#,
            r#"{"action":"confirm_tool_action","requestId":"r","sessionId":"s","approved":"true"}"#,
            r#"{"action":"get_conversation_messages","requestId":"r","sessionId":"s","limit":0}"#,
            r#"{"action":"get_conversation_messages","requestId":"r","sessionId":"s","limit":101}"#,
            r#"{"action":"get_conversation_messages","requestId":"r","sessionId":"s","limit":"5"}"#,
            r#"{"action":"resume_session","requestId":"r","sessionId":"s","afterSeq":-1}"#,
            r#"{"action":5,"requestId":"r"}"#,
        ] {
            let (rid, code, _) = err(frame);
            assert_eq!(code, ErrorCode::ValidationError, "{frame}");
            assert_eq!(rid.as_deref(), Some("r"), "{frame}");
        }
        assert_eq!(err(r#"{"action":"ping","requestId":7}"#).0, None);
        assert_eq!(err("[1,2]").1, ErrorCode::ValidationError);
    }

    #[test]
    fn answers_to_parked_turns_need_their_ids() {
        // No requestId: nothing to tie the answer to.
        let (rid, code, _) = err(r#"{"action":"submit_interaction","sessionId":"s","interactionId":"i","values":{}}"#);
        assert_eq!((rid, code), (None, ErrorCode::ValidationError));
        assert_eq!(err(r#"{"action":"verify_otp","sessionId":"s","code":"123456"}"#).1, ErrorCode::ValidationError);
        assert_eq!(
            err(r#"{"action":"submit_interaction","requestId":"r","interactionId":"i"}"#).1,
            ErrorCode::ValidationError
        );
        for code in [r#""""#, r#""   ""#, r#""123456""#, "123456", "null"] {
            let f = format!(r#"{{"action":"verify_otp","requestId":"r","sessionId":"s","code":{code}}}"#);
            assert_eq!(parse(&f).is_ok(), code == r#""123456""#, "{f}");
        }
        let long =
            format!(r#"{{"action":"verify_otp","requestId":"r","sessionId":"s","code":"{}"}}"#, "9".repeat(10_000));
        assert_eq!(err(&long), (Some("r".into()), ErrorCode::ValidationError, "'code' must be 1-32 characters".into()));
        // Values of any shape reach the validator (which answers `interaction_invalid`), not the parser.
        let f = r#"{"action":"submit_interaction","requestId":"r","sessionId":"s","interactionId":"i","values":"x"}"#;
        match parse(f).expect("ok").action {
            Action::SubmitInteraction(s) => assert_eq!(s.values, Some(Value::String("x".into()))),
            other => panic!("{other:?}"),
        }
        let f = r#"{"action":"create_conversation_session","agentId":"a","supports":["identity_form",3]}"#;
        assert_eq!(err(f).1, ErrorCode::ValidationError);
    }

    #[test]
    fn message_length_bounds() {
        let ok =
            format!(r#"{{"action":"send_message","sessionId":"s","message":"{}"}}"#, "é".repeat(MAX_MESSAGE_CHARS));
        assert!(parse(&ok).is_ok());
        let long =
            format!(r#"{{"action":"send_message","sessionId":"s","message":"{}"}}"#, "a".repeat(MAX_MESSAGE_CHARS + 1));
        assert_eq!(err(&long).1, ErrorCode::ValidationError);
        let img = r#"{"action":"send_message","sessionId":"s","message":"","images":[{"url":"https://x/a.png"}]}"#;
        assert!(parse(img).is_ok());
    }

    #[test]
    fn images_are_https_or_data_and_files_carry_three_fields() {
        for url in ["https://cdn.example/a.png", "data:image/png;base64,iVBORw0KGgo="] {
            let f =
                format!(r#"{{"action":"send_message","sessionId":"s","message":"m","images":[{{"url":"{url}"}}]}}"#);
            assert!(parse(&f).is_ok(), "{url}");
        }
        for url in
            ["http://x/a.png", "file:///etc/passwd", "ftp://x/a", "https://", "data:text/html,<b>", "javascript:1"]
        {
            let f =
                format!(r#"{{"action":"send_message","sessionId":"s","message":"m","images":[{{"url":"{url}"}}]}}"#);
            assert_eq!(err(&f).1, ErrorCode::ValidationError, "{url}");
        }
        let f = r#"{"action":"send_message","sessionId":"s","message":"m","files":[{"name":"a.pdf","url":"https://x/a.pdf","mimeType":"application/pdf","token":"secret","nested":{"x":1}}]}"#;
        match parse(f).expect("ok").action {
            Action::SendMessage(m) => assert_eq!(
                m.files,
                vec![serde_json::json!({"name": "a.pdf", "url": "https://x/a.pdf", "mimeType": "application/pdf"})]
            ),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn unknown_fields_are_ignored() {
        let r = parse(r#"{"action":"ping","requestId":"p","extra":{"a":1}}"#).expect("ok");
        assert_eq!(r, Request { request_id: Some("p".into()), action: Action::Ping });
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        /// Any input gets either a request or a clear error; never a panic.
        #[test]
        fn never_panics_on_arbitrary_text(s in ".{0,300}") {
            let _ = parse(&s);
        }

        #[test]
        fn never_panics_on_arbitrary_objects(
            action in prop_oneof![Just("send_message".to_string()), Just("confirm_tool_action".to_string()),
                Just("get_conversation_messages".to_string()), Just("create_conversation_session".to_string()),
                Just("resume_session".to_string()), Just("cancel".to_string()), "[a-z_]{0,12}"],
            key in prop_oneof![Just("sessionId"), Just("message"), Just("approved"), Just("limit"), Just("afterSeq"), Just("images"), Just("stream")],
            val in prop_oneof![Just("null".to_string()), Just("1".to_string()), Just("-5".to_string()), Just("true".to_string()),
                Just("[]".to_string()), Just("{}".to_string()), Just("[{}]".to_string()), "\"[a-z]{0,8}\""],
        ) {
            let frame = format!(r#"{{"action":"{action}","requestId":"q","{key}":{val}}}"#);
            match parse(&frame) {
                Ok(_) => {}
                Err(e) => {
                    prop_assert_eq!(e.request_id.as_deref(), Some("q"));
                    prop_assert!(!e.error.message.is_empty());
                }
            }
        }
    }
}
