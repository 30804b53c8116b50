//! Answers to a parked turn from a smooth-operator socket: `confirm_tool_action`, `submit_interaction` and
//! `verify_otp`. Each checks the caller's session, follows it, and hands the answer to [`crate::turn::Turns`],
//! rendering its verdict as this dialect's reply (sent before the resumed turn's events).

use serde_json::{json, Value};

use super::owned_session;
use crate::conn::Conn;
use crate::error::{ClientError, ErrorCode};
use crate::protocol::inbound::SubmitInteraction;
use crate::protocol::outbound as out;
use crate::turn::{Answer, Verdict};

fn confirm_ack(rid: Option<&str>, session_id: &str, approved: bool) -> Value {
    let message = if approved { "Tool action approved" } else { "Tool action rejected" };
    out::immediate(rid, 200, message, json!({"approved": approved, "sessionId": session_id}))
}

pub(super) async fn confirm(
    conn: &mut Conn,
    rid: Option<&str>,
    session_id: &str,
    approved: bool,
    tool_call_id: Option<String>,
) -> Result<(), ClientError> {
    let app = conn.app.clone();
    let answer = Answer::Confirm { call: tool_call_id.as_deref(), approved };
    // An unknown or foreign session has nothing pending either: the same answer reveals nothing.
    let session = owned_session(conn, session_id).await.map_err(|e| unless_missing(e, &answer, session_id))?;
    conn.attach_session(session_id, None).await?;
    app.turns
        .answer(&session, answer, |verdict| match verdict {
            Verdict::Decided { approved, .. } | Verdict::AlreadyDecided { approved, .. } => {
                conn.reply(&confirm_ack(rid, session_id, *approved))
            }
            _ => {}
        })
        .await?;
    Ok(())
}

pub(super) async fn submit_interaction(
    conn: &mut Conn,
    rid: Option<&str>,
    s: SubmitInteraction,
) -> Result<(), ClientError> {
    let app = conn.app.clone();
    let sid = s.session_id.as_str();
    let answer = Answer::Interaction {
        interaction_id: &s.interaction_id,
        kind: s.kind.as_deref(),
        values: s.values.as_ref(),
        declined: s.declined,
    };
    let session = owned_session(conn, sid).await.map_err(|e| unless_missing(e, &answer, sid))?;
    conn.attach_session(sid, None).await?;
    app.turns
        .answer(&session, answer, |verdict| match verdict {
            Verdict::InteractionAnswered { interaction_id, values: None, .. } => conn.reply(&out::immediate(
                rid,
                200,
                "Interaction declined",
                json!({"sessionId": sid, "interactionId": interaction_id, "declined": true}),
            )),
            Verdict::InteractionAnswered { interaction_id, kind, values: Some(values) } => conn.reply(&out::immediate(
                rid,
                200,
                "Interaction submitted",
                json!({"sessionId": sid, "interactionId": interaction_id, "kind": kind, "values": values}),
            )),
            Verdict::InteractionInvalid { interaction_id, kind, errors } => {
                conn.reply(&out::interaction_invalid(rid.unwrap_or_default(), interaction_id, kind, errors.clone()))
            }
            _ => {}
        })
        .await?;
    Ok(())
}

pub(super) async fn verify_otp(conn: &mut Conn, rid: Option<&str>, sid: &str, code: &str) -> Result<(), ClientError> {
    let app = conn.app.clone();
    let session = owned_session(conn, sid).await?;
    conn.attach_session(sid, None).await?;
    let rid = rid.unwrap_or_default();
    app.turns
        .answer(&session, Answer::Otp { code, request_id: rid }, |verdict| {
            if let Verdict::OtpRefused { error, attempts_left, message } = verdict {
                conn.reply(&out::otp_invalid(rid, error, *attempts_left, message));
            }
        })
        .await?;
    Ok(())
}

/// An unknown or foreign session is answered as "nothing pending" (the same answer reveals nothing); a store
/// that failed stays an error the client can retry on.
fn unless_missing(e: ClientError, answer: &Answer<'_>, session_id: &str) -> ClientError {
    if e.code == ErrorCode::SessionNotFound {
        answer.nothing_pending(session_id)
    } else {
        e
    }
}
