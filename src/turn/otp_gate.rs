//! The OTP gate: a tool that needs a verified person on an unverified session parks the turn, a code is
//! issued (stored hashed in the backend, so any pod can check it) and sent to the session's contact. The park
//! is answered by `verify_otp` on any pod, after which the tool runs without the person asking again.

use std::sync::Arc;

use super::emitter::Emitter;
use super::park::Step;
use super::Turns;
use super::{emit_stream, park, TurnState};
use crate::backend::{Contact, Gate};
use crate::config::ToolConfig;
use crate::error::{ClientError, ErrorCode};
use crate::llm::ToolCall;
use crate::otp::Destination;
use crate::protocol::outbound as out;
use crate::tools::ToolOutcome;
use crate::util::now_ms;

/// Parks `call` until the session is verified, or answers it at once when no code can be sent.
pub(super) async fn require(
    turns: &Arc<Turns>,
    em: &Emitter,
    state: &mut TurnState,
    call: &ToolCall,
    tool: &ToolConfig,
    contact: &Contact,
) -> Result<Step, ClientError> {
    let name = &call.function.name;
    let title = super::steps::title(turns, state, name);
    let chunk = out::tool_call_chunk(&state.request_id, &call.id, name, &call.function.arguments, title.as_deref());
    let mut channels = Vec::new();
    if contact.email.is_some() {
        channels.push("email");
    }
    if contact.phone.is_some() {
        channels.push("sms");
    }
    let destination = match (&contact.email, &contact.phone) {
        (Some(e), _) => Destination { channel: "email", address: e },
        (None, Some(p)) => Destination { channel: "sms", address: p },
        (None, None) => {
            emit_stream(em, state, &chunk);
            let result = format!(
                "tool '{name}' needs the person to verify their identity, and no email address or phone number is \
                 known for them: ask for their email address (e.g. with request_identity_intake), then call '{name}' \
                 again"
            );
            return Ok(Step::Done(ToolOutcome { is_error: true, result }));
        }
    };
    let (code, stored) = turns.otp.issue(now_ms());
    turns.backends.identity.put_code(&state.session_id, &stored).await?;
    let gate = Gate::Otp { auth_level: tool.auth_level.as_str().to_string() };
    park::store(turns, state, call, gate, stored.expires_at_ms).await?;
    let asked = super::steps::verification_request(turns, state, name);
    em.send(&out::otp_verification_required(&state.request_id, name, &asked, &channels, tool.auth_level.as_str()));
    em.flush().await?;
    let key = format!("otp-{}-{}", state.session_id, call.id);
    match turns.otp.deliver(&state.session_id, &destination, &code, stored.expires_at_ms, &key).await {
        Ok(()) => {
            let masked = crate::otp::mask(destination.channel, destination.address);
            em.send(&out::otp_sent(&state.request_id, destination.channel, &masked));
            emit_stream(em, state, &chunk);
            em.flush().await?;
            Ok(Step::Parked)
        }
        Err(e) => {
            tracing::warn!(error = %e, session_id = %state.session_id, tool = %name, "OTP code not delivered");
            // No code reached the person: nothing may wait for it (taking the park removes its code).
            turns.take_own_park(&state.session_id, &state.turn_id).await;
            let err = ClientError::new(ErrorCode::OtpSendFailed, "the verification code could not be sent");
            em.send(&out::error(Some(&state.request_id), &err));
            emit_stream(em, state, &chunk);
            let result = format!("tool '{name}' was not run: the verification code could not be sent");
            Ok(Step::Done(ToolOutcome { is_error: true, result }))
        }
    }
}
