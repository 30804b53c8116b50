//! Answers to a parked turn, from any door on any pod: an approval decision, an interaction card, an OTP code
//! ([`Turns::answer`]). Each takes the durable park once (the first answer wins across pods), tells the door
//! what happened (before the resumed turn's first event, so an ack precedes it), then resumes the turn here;
//! the pod that parked it may be gone.

use std::sync::Arc;

use serde_json::Value;

use super::task::{resume_parked, resume_with};
use super::{Resolution, Turns};
use crate::backend::{Decided, Gate, OtpAttempt, ParkedTurn, SessionRecord};
use crate::error::{ClientError, ErrorCode};
use crate::ids::RequestId;
use crate::interactions::{self, validate, Kind};
use crate::protocol::outbound as out;
use crate::tools::ToolOutcome;
use crate::util::now_ms;

/// A person's answer, as a door parsed it.
pub(crate) enum Answer<'a> {
    /// Approve or deny the parked call (`call`: that call only; `None`: whichever is pending).
    Confirm { call: Option<&'a str>, approved: bool },
    /// The person's card: its values, or declined.
    Interaction { interaction_id: &'a str, kind: Option<&'a str>, values: Option<&'a Value>, declined: bool },
    /// A one-time code for the session's OTP gate.
    Otp { code: &'a str, request_id: &'a str },
}

/// What an answer did, for the door to render.
#[derive(Debug, Clone)]
pub(crate) enum Verdict {
    /// This answer decided the call; the turn `request_id` resumes.
    Decided { approved: bool, request_id: RequestId },
    /// An earlier answer (on any pod) decided it; this one changed nothing.
    AlreadyDecided { approved: bool, request_id: RequestId },
    /// The card's values do not fit its spec: the park stays, the person corrects and submits again.
    InteractionInvalid { interaction_id: String, kind: String, errors: Value },
    /// The card was answered (`values`, canonical) or declined (`values` is `None`); the turn resumes.
    InteractionAnswered { interaction_id: String, kind: String, values: Option<Value> },
    /// The code was right: the session is verified (`otp_verified` is in the log) and a waiting call resumes.
    OtpVerified,
    /// The code was not accepted: `error` is the v1 `otp_invalid` reason.
    OtpRefused { error: &'static str, attempts_left: u32, message: String },
}

impl Turns {
    /// Answers the session's parked turn. `ack` gets the verdict before the turn resumes (a socket replies
    /// then, so its ack goes out before the resumed turn's events). The door has checked that `session` is the
    /// caller's. `NO_PENDING_CONFIRMATION` / `NO_PENDING_INTERACTION` when nothing of that kind waits.
    pub(crate) async fn answer(
        self: &Arc<Self>,
        session: &SessionRecord,
        answer: Answer<'_>,
        ack: impl FnOnce(&Verdict),
    ) -> Result<Verdict, ClientError> {
        let sid = session.session_id.as_str();
        match answer {
            Answer::Confirm { call, approved } => self.confirm(sid, call, approved, ack).await,
            Answer::Interaction { interaction_id, kind, values, declined } => {
                self.interaction(sid, interaction_id, kind, values, declined, ack).await
            }
            Answer::Otp { code, request_id } => self.verify_otp(sid, code, request_id, ack).await,
        }
    }

    async fn confirm(
        self: &Arc<Self>,
        sid: &str,
        call: Option<&str>,
        approved: bool,
        ack: impl FnOnce(&Verdict),
    ) -> Result<Verdict, ClientError> {
        // The parked record is stored before `write_confirmation_required` is published (see `park`), so a
        // decision never arrives before it: no waiting here.
        let verdict = match self.backends.confirms.decide(sid, call, approved).await? {
            Decided::Claimed(parked) => {
                let verdict = Verdict::Decided { approved, request_id: parked.request_id.as_str().into() };
                ack(&verdict);
                resume_parked(self.clone(), *parked, approved, "user rejected the action").await;
                return Ok(verdict);
            }
            Decided::AlreadyDecided { approved, request_id, .. } => {
                Verdict::AlreadyDecided { approved, request_id: request_id.into() }
            }
            Decided::NoPending => {
                // A repeat (naming no call) while the decided turn still runs: the first decision stands.
                let repeat = match call {
                    Some(_) => None,
                    None => match (self.backends.confirms.last_decision(sid).await?, self.holder(sid).await?) {
                        (Some((_, first, rid)), Some(cur)) if cur.request_id == rid && !cur.pod_id.is_empty() => {
                            Some(Verdict::AlreadyDecided { approved: first, request_id: rid.into() })
                        }
                        _ => None,
                    },
                };
                repeat.ok_or_else(|| no_pending_confirmation(sid))?
            }
        };
        ack(&verdict);
        Ok(verdict)
    }

    async fn interaction(
        self: &Arc<Self>,
        sid: &str,
        interaction_id: &str,
        kind: Option<&str>,
        values: Option<&Value>,
        declined: bool,
        ack: impl FnOnce(&Verdict),
    ) -> Result<Verdict, ClientError> {
        let parked = self.backends.confirms.get(sid).await?.ok_or_else(|| no_pending_interaction(sid))?;
        let Gate::Interaction { interaction_id: waiting, interaction_kind, spec, .. } = &parked.gate else {
            return Err(no_pending_interaction(sid));
        };
        if interaction_id != waiting || kind.is_some_and(|k| k != interaction_kind) {
            return Err(ClientError::new(
                ErrorCode::InteractionMismatch,
                format!(
                    "interaction '{interaction_id}' is not the one waiting (it is '{waiting}', kind {interaction_kind})"
                ),
            ));
        }
        let card = Kind::parse(interaction_kind).unwrap_or(Kind::IdentityIntake);
        let call = parked.call.tool_call_id.as_str();
        let answered = |values: Option<Value>| Verdict::InteractionAnswered {
            interaction_id: waiting.clone(),
            kind: interaction_kind.clone(),
            values,
        };
        if declined {
            let taken =
                self.backends.confirms.take(sid, Some(call)).await?.ok_or_else(|| no_pending_interaction(sid))?;
            let verdict = answered(None);
            ack(&verdict);
            let outcome = ToolOutcome { is_error: false, result: interactions::declined(card) };
            resume_with(self.clone(), taken, Resolution::Result(outcome)).await;
            return Ok(verdict);
        }
        let values = values.ok_or_else(|| ClientError::validation("missing 'values' (or 'declined': true)"))?;
        let values = match validate::validate(card, spec, values) {
            Ok(v) => v,
            Err(errors) => {
                let errors = serde_json::to_value(&errors).unwrap_or(Value::Null);
                let verdict = Verdict::InteractionInvalid {
                    interaction_id: waiting.clone(),
                    kind: interaction_kind.clone(),
                    errors,
                };
                ack(&verdict);
                return Ok(verdict);
            }
        };
        // The answer's side effect first: a store that fails it fails the answer and leaves the card waiting
        // (taken first, the park would be gone with the answer unapplied). Two answers racing may both stamp;
        // of the two, one takes the park.
        if card == Kind::IdentityIntake {
            super::stamp_identity(self, sid, &values).await?;
        }
        let taken = self.backends.confirms.take(sid, Some(call)).await?.ok_or_else(|| no_pending_interaction(sid))?;
        let outcome = ToolOutcome { is_error: false, result: interactions::submitted(&values) };
        let verdict = answered(Some(values));
        ack(&verdict);
        resume_with(self.clone(), taken, Resolution::Result(outcome)).await;
        Ok(verdict)
    }

    async fn verify_otp(
        self: &Arc<Self>,
        sid: &str,
        code: &str,
        request_id: &str,
        ack: impl FnOnce(&Verdict),
    ) -> Result<Verdict, ClientError> {
        self.take_otp_attempt(sid).await?;
        let refused = |error: &'static str, attempts_left: u32, message: &str| Verdict::OtpRefused {
            error,
            attempts_left,
            message: message.to_string(),
        };
        let new_code = "Ask again to get a new code.";
        let verdict = match self.backends.identity.attempt(sid, now_ms()).await? {
            OtpAttempt::NotFound => refused("NOT_FOUND", 0, &format!("No verification is in progress. {new_code}")),
            OtpAttempt::Expired => {
                let verdict = refused("EXPIRED", 0, &format!("This code has expired. {new_code}"));
                ack(&verdict);
                self.refuse_otp_park(sid, "the verification code expired before it was entered").await?;
                return Ok(verdict);
            }
            OtpAttempt::Locked => refused("MAX_ATTEMPTS", 0, &format!("Too many wrong codes. {new_code}")),
            OtpAttempt::Check { code: stored, .. } if crate::otp::matches(&stored, code) => {
                if !self.backends.identity.consume_code(sid).await? {
                    // Another pod took the same right code a moment ago; that pod resumes the turn.
                    refused("NOT_FOUND", 0, "This code was already used.")
                } else {
                    self.backends.identity.set_verified(sid).await?;
                    // No ack: `otp_verified` in the log is the answer every socket of the session sees.
                    self.emit(sid, &out::otp_verified(request_id)).await?;
                    if let Some(parked) = self.take_otp_park(sid).await? {
                        resume_with(self.clone(), parked, Resolution::Verified).await;
                    }
                    return Ok(Verdict::OtpVerified);
                }
            }
            OtpAttempt::Check { code: stored, used } => {
                let left = stored.max_attempts.saturating_sub(used);
                if left > 0 {
                    refused("INVALID_CODE", left, &format!("Invalid code. {left} attempt(s) remaining."))
                } else {
                    let verdict = refused("MAX_ATTEMPTS", 0, &format!("Too many wrong codes. {new_code}"));
                    ack(&verdict);
                    if let Err(e) = self.backends.identity.consume_code(sid).await {
                        tracing::warn!(error = %e, session_id = %sid, "could not drop a locked code (it lapses)");
                    }
                    self.refuse_otp_park(sid, "the person entered a wrong verification code too many times").await?;
                    return Ok(verdict);
                }
            }
        };
        ack(&verdict);
        Ok(verdict)
    }

    /// Takes the session's park if it waits for a code (only that park: never an approval or a card parked since).
    async fn take_otp_park(&self, sid: &str) -> Result<Option<ParkedTurn>, ClientError> {
        match self.backends.confirms.get(sid).await? {
            Some(p) if matches!(p.gate, Gate::Otp { .. }) => {
                Ok(self.backends.confirms.take(sid, Some(&p.call.tool_call_id)).await?)
            }
            _ => Ok(None),
        }
    }

    /// Ends an OTP park without verification: the tool is refused and the turn goes on.
    async fn refuse_otp_park(self: &Arc<Self>, sid: &str, why: &str) -> Result<(), ClientError> {
        if let Some(parked) = self.take_otp_park(sid).await? {
            let result = format!("tool '{}' was not run: {why}", parked.call.tool_name);
            resume_with(self.clone(), parked, Resolution::Result(ToolOutcome { is_error: true, result })).await;
        }
        Ok(())
    }
}

impl Answer<'_> {
    /// What this answer gets when nothing of its kind waits, also for an unknown or another caller's session
    /// (the same answer reveals nothing).
    pub(crate) fn nothing_pending(&self, sid: &str) -> ClientError {
        match self {
            Answer::Confirm { .. } => no_pending_confirmation(sid),
            Answer::Interaction { .. } => no_pending_interaction(sid),
            // A code is checked against the session itself, which v1 names as missing.
            Answer::Otp { .. } => ClientError::session_not_found(sid),
        }
    }
}

fn no_pending_confirmation(sid: &str) -> ClientError {
    ClientError::new(
        ErrorCode::NoPendingConfirmation,
        format!("no tool action is awaiting confirmation for session '{sid}'"),
    )
}

fn no_pending_interaction(sid: &str) -> ClientError {
    ClientError::new(ErrorCode::NoPendingInteraction, format!("no interaction is waiting on session '{sid}'"))
}
