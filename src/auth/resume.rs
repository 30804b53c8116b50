//! Resume tokens: a socket without a JWT (a widget visitor) proves it owns a session after a reconnect or a
//! page reload. A token is `<expiry>.<hex HMAC-SHA256>` over the session, its owner and the expiry, keyed by
//! `auth.resume_secret`: any pod that shares the secret can check it, and it names nothing a client can alter.

use ring::hmac;

use super::Identity;

/// Issues and checks resume tokens. Built once at boot from `auth.resume_secret` (or a per-boot key).
pub(crate) struct ResumeKeys {
    key: hmac::Key,
}

impl ResumeKeys {
    pub(crate) fn new(secret: &[u8]) -> ResumeKeys {
        ResumeKeys { key: hmac::Key::new(hmac::HMAC_SHA256, secret) }
    }

    /// A key for this process only (no secret configured, memory backend: no other pod to agree with).
    pub(crate) fn per_boot() -> ResumeKeys {
        let secret: [u8; 32] = rand::random();
        ResumeKeys::new(&secret)
    }

    /// The text signed: unambiguous whatever the ids contain.
    fn text(session_id: &str, who: &Identity, expires_s: i64) -> String {
        serde_json::json!(["resume/v1", session_id, who.org_id, who.user_id, expires_s]).to_string()
    }

    /// A token for `who`'s session `session_id`, valid until `expires_s` (Unix seconds).
    pub(crate) fn issue(&self, session_id: &str, who: &Identity, expires_s: i64) -> String {
        let tag = hmac::sign(&self.key, Self::text(session_id, who, expires_s).as_bytes());
        format!("{expires_s}.{}", crate::util::hex(tag.as_ref()))
    }

    /// Whether `token` was issued for `owner`'s session `session_id` and is not expired at `now_s`.
    pub(crate) fn verify(&self, token: &str, session_id: &str, owner: &Identity, now_s: i64) -> bool {
        let Some((expires, tag)) = token.split_once('.') else { return false };
        let Ok(expires_s) = expires.parse::<i64>() else { return false };
        if expires_s < now_s || tag.len() != 64 {
            return false;
        }
        let Some(given) = crate::util::unhex(tag) else { return false };
        // ring compares in constant time.
        hmac::verify(&self.key, Self::text(session_id, owner, expires_s).as_bytes(), &given).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::Role;

    fn who(user: &str, org: &str) -> Identity {
        Identity { user_id: user.into(), org_id: org.into(), expires_at: None, role: Role::Basic, address: None }
    }

    #[test]
    fn a_token_opens_its_session_for_its_owner_until_it_expires() {
        let keys = ResumeKeys::new(b"0123456789abcdef0123456789abcdef");
        let alice = who("widget:a:alice", "shop");
        let t = keys.issue("s1", &alice, 1_000);
        assert!(keys.verify(&t, "s1", &alice, 999));
        assert!(keys.verify(&t, "s1", &alice, 1_000));
        assert!(!keys.verify(&t, "s1", &alice, 1_001), "expired");
        assert!(!keys.verify(&t, "s2", &alice, 999), "another session");
        assert!(!keys.verify(&t, "s1", &who("widget:a:bob", "shop"), 999), "another owner");
        assert!(!keys.verify(&t, "s1", &who("widget:a:alice", "other"), 999), "another org");
        let later = t.replacen("1000.", "9999.", 1);
        assert!(!keys.verify(&later, "s1", &alice, 999), "the expiry is signed");
        assert!(!ResumeKeys::per_boot().verify(&t, "s1", &alice, 999), "another key");
        for junk in ["", ".", "1000", "x.y", "1000.zz", &format!("1000.{}", "é".repeat(32))] {
            assert!(!keys.verify(junk, "s1", &alice, 999), "{junk}");
        }
    }
}
