//! A session's contact, OTP code and verified flag (`P:{sid}:contact`, `P:{sid}:otp`): the same behaviour as the
//! memory backend's, with attempts counted by `lua/otp_attempt.lua` so pods share one attempt budget.

use std::collections::HashMap;

use async_trait::async_trait;
use fred::interfaces::{HashesInterface, KeysInterface};

use super::conn::{array, corrupt, parse_json, text, to_json, RedisStore};
use crate::backend::{BResult, Contact, IdentityStore, OtpAttempt, OtpCode};

#[async_trait]
impl IdentityStore for RedisStore {
    async fn contact(&self, session_id: &str) -> BResult<Contact> {
        let s = self.s();
        let map: HashMap<String, String> =
            s.client.hgetall(s.keys.session_key(session_id, "contact")).await.map_err(|e| s.err(e))?;
        Ok(Contact {
            name: map.get("name").cloned(),
            email: map.get("email").cloned(),
            phone: map.get("phone").cloned(),
            verified: map.get("verified").is_some_and(|v| v == "1"),
        })
    }

    async fn stamp(
        &self,
        session_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> BResult<()> {
        let s = self.s();
        let arg = |v: Option<&str>| v.unwrap_or("").to_string();
        s.eval(
            &s.scripts.stamp,
            vec![s.keys.session_key(session_id, "contact")],
            vec![arg(name), arg(email), arg(phone), s.idle_ttl_s.to_string()],
        )
        .await
        .map(drop)
    }

    async fn set_verified(&self, session_id: &str) -> BResult<()> {
        let s = self.s();
        let key = s.keys.session_key(session_id, "contact");
        s.client.hset::<(), _, _>(&key, ("verified", "1")).await.map_err(|e| s.err(e))?;
        s.client.expire::<(), _>(&key, s.idle_ttl_s, None).await.map_err(|e| s.err(e))
    }

    async fn put_code(&self, session_id: &str, code: &OtpCode) -> BResult<()> {
        let s = self.s();
        let key = s.keys.session_key(session_id, "otp");
        let fields: Vec<(&str, String)> = vec![
            ("json", to_json(code)?),
            ("exp", code.expires_at_ms.to_string()),
            ("max", code.max_attempts.to_string()),
            ("used", "0".into()),
        ];
        // Every field is written, so the old code (and its attempt count) is replaced without a DEL that would
        // let a concurrent attempt find no code at all.
        s.client.hset::<(), _, _>(&key, fields).await.map_err(|e| s.err(e))?;
        // Kept a little past its expiry so a late attempt is told EXPIRED rather than NOT_FOUND.
        let ttl_ms = (code.expires_at_ms - crate::util::now_ms()).max(0) + 60_000;
        s.client.pexpire::<(), _>(&key, ttl_ms, None).await.map_err(|e| s.err(e))
    }

    async fn attempt(&self, session_id: &str, now_ms: i64) -> BResult<OtpAttempt> {
        let s = self.s();
        let reply = s
            .eval(&s.scripts.otp_attempt, vec![s.keys.session_key(session_id, "otp")], vec![now_ms.to_string()])
            .await?;
        let v: Vec<Option<String>> = array(reply).iter().map(text).collect();
        match v.first().cloned().flatten().as_deref() {
            Some("check") => {
                let json = v.get(1).cloned().flatten().ok_or_else(|| corrupt("otp", "no record"))?;
                let used = v.get(2).cloned().flatten().and_then(|u| u.parse().ok()).unwrap_or(u32::MAX);
                Ok(OtpAttempt::Check { code: parse_json("otp code", &json)?, used })
            }
            Some("none") => Ok(OtpAttempt::NotFound),
            Some("expired") => Ok(OtpAttempt::Expired),
            Some("locked") => Ok(OtpAttempt::Locked),
            _ => Err(corrupt("otp attempt", "unexpected reply")),
        }
    }

    async fn consume_code(&self, session_id: &str) -> BResult<bool> {
        let s = self.s();
        let removed: i64 = s.client.del(s.keys.session_key(session_id, "otp")).await.map_err(|e| s.err(e))?;
        Ok(removed == 1)
    }
}
