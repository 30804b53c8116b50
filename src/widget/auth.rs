//! Widget auth: an agent's `allowed_origins` (checked on create against the socket's `Origin`) and its
//! `widget_secret`, which verifies an `authContext {userId, timestamp, signature}` signed by the host page's
//! server: lower-case hex HMAC-SHA256 of `"{userId}:{timestamp}"`, at most 60 s from now either way.

use crate::config::AgentConfig;
use crate::error::{ClientError, ErrorCode};
use crate::protocol::inbound::AuthContext;

/// How far a signature's timestamp may be from the server's clock, either way.
pub(crate) const MAX_SKEW_S: i64 = 60;

/// `ORIGIN_NOT_ALLOWED` when the agent restricts origins and the page's is not one (no `Origin`: not a
/// browser, nothing to check).
pub(crate) fn check_origin(agent: &AgentConfig, origin: Option<&str>) -> Result<(), ClientError> {
    match crate::origin::origin_refused(&agent.allowed_origins, origin) {
        Some(o) => Err(ClientError::new(ErrorCode::OriginNotAllowed, format!("this agent cannot be used from {o}"))),
        None => Ok(()),
    }
}

/// The user an `authContext` names, when its signature is the agent's and its timestamp is within
/// [`MAX_SKEW_S`] of `now_s`; else `AUTH_CONTEXT_INVALID` (one message for every reason: nothing to probe).
pub(crate) fn verify(agent: &AgentConfig, ctx: &AuthContext, now_s: i64) -> Result<String, ClientError> {
    let invalid =
        || ClientError::new(ErrorCode::AuthContextInvalid, "the authContext is not valid (signature or time)");
    if agent.widget_secret.is_empty() {
        return Err(ClientError::new(ErrorCode::AuthContextInvalid, "this agent accepts no authContext"));
    }
    if (now_s - ctx.timestamp).abs() > MAX_SKEW_S {
        return Err(invalid());
    }
    let given = decode_hex(&ctx.signature).ok_or_else(invalid)?;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, agent.widget_secret.as_bytes());
    // ring compares in constant time.
    ring::hmac::verify(&key, format!("{}:{}", ctx.user_id, ctx.timestamp).as_bytes(), &given).map_err(|_| invalid())?;
    Ok(ctx.user_id.clone())
}

fn decode_hex(s: &str) -> Option<Vec<u8>> {
    if s.len() != 64 || !s.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
        return None;
    }
    (0..s.len()).step_by(2).map(|i| u8::from_str_radix(&s[i..i + 2], 16).ok()).collect()
}

/// What a host's server computes: the lower-case hex signature of `userId` at `timestamp`.
#[cfg(test)]
fn sign(secret: &str, user_id: &str, timestamp: i64) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
    crate::util::hex(ring::hmac::sign(&key, format!("{user_id}:{timestamp}").as_bytes()).as_ref())
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
    fn signatures_are_checked_for_user_time_and_secret() {
        let secret = "s".repeat(32);
        let a = agent(&secret, &[]);
        let ctx =
            |user: &str, ts: i64, sig: String| AuthContext { user_id: user.into(), timestamp: ts, signature: sig };
        let now = 1_800_000_000;
        assert_eq!(verify(&a, &ctx("u1", now, sign(&secret, "u1", now)), now).expect("valid"), "u1");
        assert!(verify(&a, &ctx("u1", now - 60, sign(&secret, "u1", now - 60)), now).is_ok(), "60 s is inside");
        assert!(verify(&a, &ctx("u1", now + 60, sign(&secret, "u1", now + 60)), now).is_ok());
        assert!(verify(&a, &ctx("u1", now - 61, sign(&secret, "u1", now - 61)), now).is_err(), "61 s is outside");
        assert!(verify(&a, &ctx("u1", now + 61, sign(&secret, "u1", now + 61)), now).is_err());
        assert!(verify(&a, &ctx("u2", now, sign(&secret, "u1", now)), now).is_err(), "replayed for another user");
        assert!(verify(&a, &ctx("u1", now, sign(&"t".repeat(32), "u1", now)), now).is_err(), "another secret");
        assert!(verify(&a, &ctx("u1", now, sign(&secret, "u1", now).to_uppercase()), now).is_err(), "lower-case hex");
        assert!(verify(&a, &ctx("u1", now, "zz".into()), now).is_err());
        let e = verify(&agent("", &[]), &ctx("u1", now, sign(&secret, "u1", now)), now).expect_err("no secret");
        assert_eq!(e.code, ErrorCode::AuthContextInvalid);
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
