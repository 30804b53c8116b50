//! Widget auth: an agent's `allowed_origins` (checked on create against the socket's `Origin`) and its
//! `widget_secret`, which verifies an `authContext {userId, timestamp, signature}` signed by the host page's
//! server: lower-case hex HMAC-SHA256 of `"{agentId}:{userId}:{timestamp}"`, at most 60 s from now either way.
//! The identity it vouches for is scoped to the agent: user `widget:<agentId>:<userId>` in the agent's org, so
//! one agent's secret can never act for another agent's users (README "Security").

use std::sync::atomic::{AtomicBool, Ordering};

use crate::auth::{Identity, Role, ANONYMOUS_USER};
use crate::config::AgentConfig;
use crate::error::{ClientError, ErrorCode};
use crate::protocol::inbound::AuthContext;

/// How far a signature's timestamp may be from the server's clock, either way.
pub(crate) const MAX_SKEW_S: u64 = 60;

/// Longest `userId` a host may sign.
const MAX_USER_ID: usize = 256;

/// The user ids of other kinds of caller: a signature can never claim one.
const RESERVED_PREFIXES: [&str; 2] = ["api-key:", "widget:"];

/// Set once the first `authContext` signed in the old form (without the agent id) is accepted, so the
/// deprecation is logged once per process, not once per visitor.
static OLD_FORM_SEEN: AtomicBool = AtomicBool::new(false);

/// The identity a widget visitor of `agent` has: `widget:<agentId>:<userId>` in the agent's org.
pub(crate) fn widget_identity(agent: &AgentConfig, user_id: &str) -> Identity {
    Identity {
        user_id: format!("widget:{}:{user_id}", agent.id),
        org_id: agent.org.clone(),
        expires_at: None,
        role: Role::Basic,
        address: None,
    }
}

fn reserved(user_id: &str) -> bool {
    user_id == ANONYMOUS_USER || RESERVED_PREFIXES.iter().any(|p| user_id.starts_with(p))
}

/// `ORIGIN_NOT_ALLOWED` when the agent restricts origins and the page's is not one (no `Origin`: not a
/// browser, nothing to check).
pub(crate) fn check_origin(agent: &AgentConfig, origin: Option<&str>) -> Result<(), ClientError> {
    match crate::origin::origin_refused(&agent.allowed_origins, origin) {
        Some(o) => Err(ClientError::new(ErrorCode::OriginNotAllowed, format!("this agent cannot be used from {o}"))),
        None => Ok(()),
    }
}

/// The agent-scoped identity an `authContext` vouches for ([`widget_identity`]), when its signature is the
/// agent's and its timestamp is within [`MAX_SKEW_S`] of `now_s`; else `AUTH_CONTEXT_INVALID` (one message for
/// every reason: nothing to probe). The old signed form `"{userId}:{timestamp}"` is accepted for one release,
/// with a deprecation warning.
pub(crate) fn verify(agent: &AgentConfig, ctx: &AuthContext, now_s: i64) -> Result<Identity, ClientError> {
    let invalid =
        || ClientError::new(ErrorCode::AuthContextInvalid, "the authContext is not valid (signature or time)");
    if agent.widget_secret.is_empty() {
        return Err(ClientError::new(ErrorCode::AuthContextInvalid, "this agent accepts no authContext"));
    }
    let user = ctx.user_id.as_str();
    if user.is_empty() || user.len() > MAX_USER_ID || user.chars().any(char::is_control) || reserved(user) {
        return Err(invalid());
    }
    // abs_diff: a timestamp near i64::MIN or MAX cannot overflow the comparison.
    if now_s.abs_diff(ctx.timestamp) > MAX_SKEW_S {
        return Err(invalid());
    }
    let given = crate::util::unhex(&ctx.signature).filter(|g| g.len() == 32).ok_or_else(invalid)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, agent.widget_secret.as_bytes());
    // ring compares in constant time.
    let signed = |text: String| ring::hmac::verify(&key, text.as_bytes(), &given).is_ok();
    if !signed(format!("{}:{user}:{}", agent.id, ctx.timestamp)) {
        if !signed(format!("{user}:{}", ctx.timestamp)) {
            return Err(invalid());
        }
        if !OLD_FORM_SEEN.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                agent = %agent.id,
                "an authContext signed as \"{{userId}}:{{timestamp}}\" was accepted; sign \"{{agentId}}:{{userId}}:{{timestamp}}\" \
                 (the old form is refused from the next release)"
            );
        }
    }
    Ok(widget_identity(agent, user))
}

/// What a host's server computes: the lower-case hex signature of `text` (`"{agentId}:{userId}:{timestamp}"`).
#[cfg(test)]
fn sign(secret: &str, text: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    crate::util::hex(ring::hmac::sign(&key, text.as_bytes()).as_ref())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(secret: &str, origins: &[&str]) -> AgentConfig {
        let mut a: AgentConfig = serde_json::from_value(serde_json::json!({"id": "a", "name": "A"})).expect("agent");
        a.widget_secret = secret.into();
        a.allowed_origins = origins.iter().map(|s| s.to_string()).collect();
        a
    }

    #[test]
    fn signatures_are_checked_for_agent_user_time_and_secret() {
        let secret = "s".repeat(32);
        let a = agent(&secret, &[]);
        let ctx =
            |user: &str, ts: i64, sig: String| AuthContext { user_id: user.into(), timestamp: ts, signature: sig };
        let new = |user: &str, ts: i64| sign(&secret, &format!("a:{user}:{ts}"));
        let now = 1_800_000_000;
        let id = verify(&a, &ctx("u1", now, new("u1", now)), now).expect("valid");
        assert_eq!((id.user_id.as_str(), id.org_id.as_str()), ("widget:a:u1", "default"), "scoped to the agent");
        assert!(verify(&a, &ctx("u1", now - 60, new("u1", now - 60)), now).is_ok(), "60 s is inside");
        assert!(verify(&a, &ctx("u1", now + 60, new("u1", now + 60)), now).is_ok());
        assert!(verify(&a, &ctx("u1", now - 61, new("u1", now - 61)), now).is_err(), "61 s is outside");
        assert!(verify(&a, &ctx("u1", now + 61, new("u1", now + 61)), now).is_err());
        assert!(verify(&a, &ctx("u2", now, new("u1", now)), now).is_err(), "replayed for another user");
        assert!(verify(&a, &ctx("u1", now, sign(&"t".repeat(32), &format!("a:u1:{now}"))), now).is_err(), "secret");
        assert!(verify(&a, &ctx("u1", now, sign(&secret, &format!("b:u1:{now}"))), now).is_err(), "another agent");
        assert!(verify(&a, &ctx("u1", now, new("u1", now).to_uppercase()), now).is_err(), "lower-case hex");
        assert!(verify(&a, &ctx("u1", now, "zz".into()), now).is_err());
        // Far-off timestamps are refused, never an overflow.
        for ts in [i64::MIN, i64::MAX] {
            assert!(verify(&a, &ctx("u1", ts, new("u1", ts)), now).is_err());
        }
        let e = verify(&agent("", &[]), &ctx("u1", now, new("u1", now)), now).expect_err("no secret");
        assert_eq!(e.code, ErrorCode::AuthContextInvalid);
    }

    #[test]
    fn the_old_form_is_still_accepted_and_reserved_ids_never_are() {
        let secret = "s".repeat(32);
        let a = AgentConfig { org: "shop".into(), ..agent(&secret, &[]) };
        let ctx = |user: &str, sig: String| AuthContext { user_id: user.into(), timestamp: 1_000, signature: sig };
        let id = verify(&a, &ctx("u1", sign(&secret, "u1:1000")), 1_000).expect("old form");
        assert_eq!((id.user_id.as_str(), id.org_id.as_str()), ("widget:a:u1", "shop"));
        for user in ["anonymous", "api-key:ops", "widget:b:alice", ""] {
            let signed = sign(&secret, &format!("a:{user}:1000"));
            let e = verify(&a, &ctx(user, signed), 1_000).expect_err(user);
            assert_eq!(e.code, ErrorCode::AuthContextInvalid, "{user}");
        }
    }

    #[test]
    fn origins_are_checked_only_when_restricted_and_present() {
        let open = agent("", &[]);
        assert!(check_origin(&open, Some("https://evil.example")).is_ok());
        let shop = agent("", &["https://shop.example"]);
        assert!(check_origin(&shop, Some("https://shop.example")).is_ok());
        assert!(check_origin(&shop, None).is_ok(), "not a browser");
        assert_eq!(
            check_origin(&shop, Some("https://evil.example")).expect_err("refused").code,
            ErrorCode::OriginNotAllowed
        );
    }
}
