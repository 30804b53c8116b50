//! AG-UI interrupts on Switchboard's parks. A turn parked on an approval, an interaction card or an OTP code
//! ends its run with `RUN_FINISHED {outcome: {type: "interrupt", interrupts: [..]}}`; the interrupt's id is the
//! park's (the call id for an approval or a code, the interaction id for a card). A later run whose `resume`
//! answers it goes through `Turns::answer`, so the parked turn continues wherever the answer lands.

use std::sync::Arc;

use serde_json::{json, Value};

use super::render::Renderer;
use super::wire::{ResumeStatus, RunAgentInput};
use super::{thread_session, RunStream};
use crate::app::App;
use crate::auth::Identity;
use crate::backend::{Gate, ParkedTurn, SessionRecord};
use crate::error::{ClientError, ErrorCode};
use crate::gateway::watch::SessionWatch;
use crate::gateway::ApiError;
use crate::turn::{Answer, Verdict};

/// The interrupt's id for a park.
fn interrupt_id(p: &ParkedTurn) -> &str {
    match &p.gate {
        Gate::Interaction { interaction_id, .. } => interaction_id,
        Gate::Confirm | Gate::Otp { .. } => &p.call.tool_call_id,
    }
}

/// The AG-UI interrupt a park asks (with `extra` in its metadata: why an answer was refused).
fn interrupt(p: &ParkedTurn, extra: Option<Value>) -> Value {
    let expires = crate::util::rfc3339_from_ms(p.expires_at_ms);
    let (reason, message, schema, mut metadata) = match &p.gate {
        Gate::Confirm => (
            "confirmation",
            format!("Allow '{}' to run?", p.call.tool_name),
            json!({"type": "object", "properties": {"approved": {"type": "boolean"}}, "required": ["approved"]}),
            json!({"kind": "approval", "toolName": p.call.tool_name}),
        ),
        Gate::Interaction { interaction_kind, spec, reason, .. } => (
            "input_required",
            reason.clone(),
            json!({"type": "object"}),
            json!({"kind": interaction_kind, "spec": spec}),
        ),
        Gate::Otp { .. } => (
            "input_required",
            format!("Enter the verification code we sent you to continue with '{}'.", p.call.tool_name),
            json!({"type": "object", "properties": {"code": {"type": "string"}}, "required": ["code"]}),
            json!({"kind": "otp", "toolName": p.call.tool_name}),
        ),
    };
    if let (Some(extra), Some(m)) = (extra, metadata.as_object_mut()) {
        m.insert("refused".into(), extra);
    }
    json!({"id": interrupt_id(p), "reason": reason, "message": message, "toolCallId": p.call.tool_call_id,
           "responseSchema": schema, "expiresAt": expires, "metadata": metadata})
}

/// The end of a run whose turn just parked: the parked call's tool-call events (once) and the interrupt. None
/// when the park is no longer this turn's (answered already): the run goes on.
pub(super) async fn ending(
    app: &App,
    session: &SessionRecord,
    renderer: &mut Renderer,
) -> Result<Option<Vec<Value>>, ClientError> {
    let Some(p) = app.turns.parked(&session.session_id).await? else { return Ok(None) };
    if p.request_id != renderer.request_id() {
        return Ok(None);
    }
    let mut out = Vec::new();
    renderer.show_call(&p.call.tool_call_id, &p.call.tool_name, &p.call.arguments, &mut out);
    out.push(renderer.finished(json!({"type": "interrupt", "interrupts": [interrupt(&p, None)]})));
    Ok(Some(out))
}

/// A run that answers the thread's interrupt (`resume`), then follows the parked turn.
pub(super) async fn resume(app: &Arc<App>, who: &Identity, input: &RunAgentInput) -> Result<RunStream, ApiError> {
    let session = thread_session(app, who, &input.thread_id).await?;
    let sid = session.session_id.clone();
    let parked = app.turns.parked(&sid).await?;
    let entry = match (&parked, input.resume.as_slice()) {
        (Some(p), [entry]) if entry.interrupt_id == interrupt_id(p) => entry,
        _ => {
            let ids: Vec<&str> = input.resume.iter().map(|e| e.interrupt_id.as_str()).collect();
            return Err(ApiError::not_found(format!("no interrupt {ids:?} is pending on this thread")));
        }
    };
    let Some(p) = parked else { return Err(ApiError::not_found("no interrupt is pending on this thread")) };
    // Opened before the answer, so the resumed turn's first event is not missed.
    let watch = SessionWatch::open(app, &sid, None).await?;
    let from = watch.position();
    let mut run = RunStream::new(
        app,
        session.clone(),
        watch,
        Renderer::new(&input.thread_id, &input.run_id, &p.request_id),
        from,
    )
    .await?;
    // The tool call was shown by the run that ended on it: the resumed run shows only its result.
    run.renderer.mark_shown(&p.call.tool_call_id);
    let resolved = entry.status == ResumeStatus::Resolved;
    let payload = &entry.payload;
    let answer = match &p.gate {
        Gate::Confirm => Answer::Confirm {
            call: Some(&p.call.tool_call_id),
            approved: resolved && payload.get("approved").and_then(Value::as_bool) == Some(true),
        },
        Gate::Interaction { interaction_id, .. } => {
            let declined = !resolved || payload.get("declined").and_then(Value::as_bool) == Some(true);
            // The values, as `{values: {...}}` or the object itself.
            let values = payload.get("values").filter(|v| v.is_object()).unwrap_or(payload);
            Answer::Interaction { interaction_id, kind: None, values: (!declined).then_some(values), declined }
        }
        Gate::Otp { .. } if !resolved => {
            app.turns.cancel(&sid).await?;
            return Ok(run);
        }
        Gate::Otp { .. } => {
            let code = payload.get("code").and_then(Value::as_str).unwrap_or_default();
            Answer::Otp { code, request_id: &p.request_id }
        }
    };
    match app.turns.answer(&session, answer, |_| {}).await {
        // The park stays: the run ends asking again, with why the answer was refused.
        Ok(Verdict::InteractionInvalid { errors, .. }) => {
            run.push_final(vec![refused(&run, &p, json!({"errors": errors}))]);
        }
        Ok(Verdict::OtpRefused { error, attempts_left, message }) => {
            let why = json!({"error": error, "attemptsRemaining": attempts_left, "message": message});
            run.push_final(vec![refused(&run, &p, why)]);
        }
        Ok(_) => {}
        Err(e) if matches!(e.code, ErrorCode::NoPendingConfirmation | ErrorCode::NoPendingInteraction) => {
            return Err(ApiError::not_found(format!("interrupt '{}' is no longer pending", entry.interrupt_id)));
        }
        Err(e) => return Err(e.into()),
    }
    Ok(run)
}

fn refused(run: &RunStream, p: &ParkedTurn, why: Value) -> Value {
    run.renderer.finished(json!({"type": "interrupt", "interrupts": [interrupt(p, Some(why))]}))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::PendingCall;

    fn park(gate: Gate) -> ParkedTurn {
        ParkedTurn {
            session_id: "s".into(),
            turn_id: "t".into(),
            request_id: "q".into(),
            call: PendingCall { tool_call_id: "c1".into(), tool_name: "delete_record".into(), arguments: "{}".into() },
            gate,
            expires_at_ms: 1_800_000_000_000,
            state: Value::Null,
        }
    }

    #[test]
    fn each_park_is_an_interrupt_with_its_own_id() {
        let confirm = interrupt(&park(Gate::Confirm), None);
        assert_eq!((confirm["id"].as_str(), confirm["reason"].as_str()), (Some("c1"), Some("confirmation")));
        assert_eq!(confirm["responseSchema"]["required"], json!(["approved"]));
        let card = park(Gate::Interaction {
            interaction_id: "i9".into(),
            interaction_kind: "choices".into(),
            spec: json!({"options": []}),
            reason: "pick one".into(),
        });
        let card = interrupt(&card, Some(json!({"errors": []})));
        assert_eq!((card["id"].as_str(), card["toolCallId"].as_str()), (Some("i9"), Some("c1")));
        assert_eq!(card["metadata"]["kind"], "choices");
        assert!(card["metadata"]["refused"].is_object());
        let otp = interrupt(&park(Gate::Otp { auth_level: "end_user".into() }), None);
        assert_eq!(otp["responseSchema"]["required"], json!(["code"]));
        assert!(otp["expiresAt"].as_str().is_some_and(|t| t.ends_with('Z')), "{otp}");
    }
}
