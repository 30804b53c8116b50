//! Answers to a parked turn, from any pod: `confirm_tool_action` (§2), `submit_interaction` (§9) and
//! `verify_otp` (§10). Each takes the durable park once (first answer wins across pods), replies to the asking
//! socket, then resumes the turn here; the pod that parked it may be gone.

use serde_json::{json, Value};

use super::owned_session;
use crate::backend::{Decided, Gate, OtpAttempt, ParkedTurn};
use crate::conn::Conn;
use crate::error::{ClientError, ErrorCode};
use crate::interactions::{self, validate, Kind};
use crate::protocol::inbound::SubmitInteraction;
use crate::protocol::outbound as out;
use crate::tools::ToolOutcome;
use crate::turn::{self, Resolution};
use crate::util::now_ms;

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
    let no_pending = || {
        ClientError::new(
            ErrorCode::NoPendingConfirmation,
            format!("no tool action is awaiting confirmation for session '{session_id}'"),
        )
    };
    // An unknown or foreign session has nothing pending either (§2): the same answer reveals nothing.
    owned_session(conn, session_id).await.map_err(|e| unless_missing(e, no_pending))?;
    conn.attach_session(session_id, None).await?;
    // The parked record is stored before `write_confirmation_required` is published (turn::park), so a
    // decision never arrives before it: no waiting here.
    match app.backends.confirms.decide(session_id, tool_call_id.as_deref(), approved).await? {
        Decided::Claimed(parked) => {
            conn.reply(&confirm_ack(rid, session_id, approved));
            turn::resume_parked(app.clone(), *parked, approved, "user rejected the action").await;
            Ok(())
        }
        Decided::AlreadyDecided { approved: first, .. } => {
            conn.reply(&confirm_ack(rid, session_id, first));
            Ok(())
        }
        Decided::NoPending => {
            if tool_call_id.is_none() {
                let current = app.backends.leases.current(session_id).await?;
                if let (Some((_, first, turn_rid)), Some(cur)) =
                    (app.backends.confirms.last_decision(session_id).await?, &current)
                {
                    if cur.request_id == turn_rid && !cur.pod_id.is_empty() {
                        // A repeat while the decided turn still runs: the first decision stands.
                        conn.reply(&confirm_ack(rid, session_id, first));
                        return Ok(());
                    }
                }
            }
            Err(no_pending())
        }
    }
}

pub(super) async fn submit_interaction(
    conn: &mut Conn,
    rid: Option<&str>,
    s: SubmitInteraction,
) -> Result<(), ClientError> {
    let app = conn.app.clone();
    let sid = s.session_id.as_str();
    let no_pending =
        || ClientError::new(ErrorCode::NoPendingInteraction, format!("no interaction is waiting on session '{sid}'"));
    owned_session(conn, sid).await.map_err(|e| unless_missing(e, no_pending))?;
    let parked = app.backends.confirms.get(sid).await?.ok_or_else(no_pending)?;
    let Gate::Interaction { interaction_id, interaction_kind, spec, .. } = &parked.gate else {
        return Err(no_pending());
    };
    if &s.interaction_id != interaction_id || s.kind.as_ref().is_some_and(|k| k != interaction_kind) {
        return Err(ClientError::new(
            ErrorCode::InteractionMismatch,
            format!(
                "interaction '{}' is not the one waiting (it is '{interaction_id}', kind {interaction_kind})",
                s.interaction_id
            ),
        ));
    }
    let kind = Kind::parse(interaction_kind).unwrap_or(Kind::IdentityIntake);
    let call = parked.call.tool_call_id.as_str();
    conn.attach_session(sid, None).await?;
    if s.declined {
        let parked = app.backends.confirms.take(sid, Some(call)).await?.ok_or_else(no_pending)?;
        conn.reply(&out::immediate(
            rid,
            200,
            "Interaction declined",
            json!({"sessionId": sid, "interactionId": s.interaction_id, "declined": true}),
        ));
        let outcome = ToolOutcome { is_error: false, result: interactions::declined(kind) };
        turn::resume_with(app, parked, Resolution::Result(outcome)).await;
        return Ok(());
    }
    let values = s.values.as_ref().ok_or_else(|| ClientError::validation("missing 'values' (or 'declined': true)"))?;
    let values = match validate::validate(kind, spec, values) {
        Ok(v) => v,
        Err(errors) => {
            // The park stays: the person corrects the card and submits again.
            let errors = serde_json::to_value(&errors).unwrap_or(Value::Null);
            conn.reply(&out::interaction_invalid(rid.unwrap_or_default(), interaction_id, interaction_kind, errors));
            return Ok(());
        }
    };
    // Of two answers racing on two pods, one takes the park.
    let parked = app.backends.confirms.take(sid, Some(call)).await?.ok_or_else(no_pending)?;
    if kind == Kind::IdentityIntake {
        turn::stamp_identity(&app, sid, &values).await?;
    }
    // The ack goes out before the resumed turn's toolResult chunk.
    conn.reply(&out::immediate(
        rid,
        200,
        "Interaction submitted",
        json!({"sessionId": sid, "interactionId": s.interaction_id, "kind": interaction_kind, "values": values}),
    ));
    let outcome = ToolOutcome { is_error: false, result: interactions::submitted(&values) };
    turn::resume_with(app, parked, Resolution::Result(outcome)).await;
    Ok(())
}

pub(super) async fn verify_otp(conn: &mut Conn, rid: Option<&str>, sid: &str, code: &str) -> Result<(), ClientError> {
    let app = conn.app.clone();
    owned_session(conn, sid).await?;
    let per_minute = app.config.otp.verify_per_minute;
    if !app.backends.quotas.take(&format!("otp:{sid}"), per_minute, 60_000).await? {
        return Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("more than {per_minute} verification attempts per minute on this session (otp.verify_per_minute)"),
        ));
    }
    conn.attach_session(sid, None).await?;
    let rid_s = rid.unwrap_or_default();
    let invalid = |error: &str, left: u32, message: &str| out::otp_invalid(rid_s, error, left, message);
    match app.backends.identity.attempt(sid, now_ms()).await? {
        OtpAttempt::NotFound => {
            conn.reply(&invalid("NOT_FOUND", 0, "No verification is in progress. Ask again to get a new code."));
        }
        OtpAttempt::Expired => {
            conn.reply(&invalid("EXPIRED", 0, "This code has expired. Ask again to get a new code."));
            refuse_otp_park(&app, sid, "the verification code expired before it was entered").await?;
        }
        OtpAttempt::Locked => {
            conn.reply(&invalid("MAX_ATTEMPTS", 0, "Too many wrong codes. Ask again to get a new code."));
        }
        OtpAttempt::Check { code: stored, used } => {
            if crate::otp::matches(&stored, code) {
                if !app.backends.identity.consume_code(sid).await? {
                    // Another pod took the same right code a moment ago; that pod resumes the turn.
                    conn.reply(&invalid("NOT_FOUND", 0, "This code was already used."));
                    return Ok(());
                }
                app.backends.identity.set_verified(sid).await?;
                app.emit(sid, &out::otp_verified(rid_s)).await?;
                if let Some(parked) = take_otp_park(&app, sid).await? {
                    turn::resume_with(app, parked, Resolution::Verified).await;
                }
                return Ok(());
            }
            let left = stored.max_attempts.saturating_sub(used);
            if left > 0 {
                conn.reply(&invalid("INVALID_CODE", left, &format!("Invalid code. {left} attempt(s) remaining.")));
            } else {
                conn.reply(&invalid("MAX_ATTEMPTS", 0, "Too many wrong codes. Ask again to get a new code."));
                let _ = app.backends.identity.consume_code(sid).await;
                refuse_otp_park(&app, sid, "the person entered a wrong verification code too many times").await?;
            }
        }
    }
    Ok(())
}

/// Takes the session's park if it waits for a code (only that park: never an approval or a card parked since).
async fn take_otp_park(app: &crate::app::App, sid: &str) -> Result<Option<ParkedTurn>, ClientError> {
    match app.backends.confirms.get(sid).await? {
        Some(p) if matches!(p.gate, Gate::Otp { .. }) => {
            Ok(app.backends.confirms.take(sid, Some(&p.call.tool_call_id)).await?)
        }
        _ => Ok(None),
    }
}

/// Ends an OTP park without verification: the tool is refused and the turn goes on.
async fn refuse_otp_park(app: &std::sync::Arc<crate::app::App>, sid: &str, why: &str) -> Result<(), ClientError> {
    if let Some(parked) = take_otp_park(app, sid).await? {
        let result = format!("tool '{}' was not run: {why}", parked.call.tool_name);
        turn::resume_with(app.clone(), parked, Resolution::Result(ToolOutcome { is_error: true, result })).await;
    }
    Ok(())
}

/// An unknown or foreign session is answered as "nothing pending" (the same answer reveals nothing); a store
/// that failed stays an error the client can retry on.
fn unless_missing(e: ClientError, no_pending: impl Fn() -> ClientError) -> ClientError {
    if e.code == ErrorCode::SessionNotFound {
        no_pending()
    } else {
        e
    }
}
