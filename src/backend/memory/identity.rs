//! Contacts, OTP codes and the verified flag of the memory backend (the same behaviour as `redis::identity`).

use async_trait::async_trait;

use super::MemoryStore;
use crate::backend::*;

#[async_trait]
impl IdentityStore for MemoryStore {
    async fn contact(&self, session_id: &str) -> BResult<Contact> {
        Ok(self.shared.state.lock().contacts.get(session_id).cloned().unwrap_or_default())
    }

    async fn stamp(
        &self,
        session_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> BResult<()> {
        let mut st = self.shared.state.lock();
        let c = st.contacts.entry(session_id.to_string()).or_default();
        if let Some(n) = name {
            c.name = Some(n.to_string());
        }
        for (slot, new) in [(&mut c.email, email), (&mut c.phone, phone)] {
            if let Some(v) = new {
                if slot.as_deref() != Some(v) {
                    // A proof of ownership is for the contact it was sent to.
                    *slot = Some(v.to_string());
                    c.verified = false;
                }
            }
        }
        Ok(())
    }

    async fn set_verified(&self, session_id: &str) -> BResult<()> {
        self.shared.state.lock().contacts.entry(session_id.to_string()).or_default().verified = true;
        Ok(())
    }

    async fn put_code(&self, session_id: &str, code: &OtpCode) -> BResult<()> {
        self.shared.state.lock().otp_codes.insert(session_id.to_string(), (code.clone(), 0));
        Ok(())
    }

    async fn attempt(&self, session_id: &str, now_ms: i64) -> BResult<OtpAttempt> {
        let mut st = self.shared.state.lock();
        let Some((code, used)) = st.otp_codes.get_mut(session_id) else {
            return Ok(OtpAttempt::NotFound);
        };
        if now_ms >= code.expires_at_ms {
            return Ok(OtpAttempt::Expired);
        }
        if *used >= code.max_attempts {
            return Ok(OtpAttempt::Locked);
        }
        *used += 1;
        Ok(OtpAttempt::Check { code: code.clone(), used: *used })
    }

    async fn consume_code(&self, session_id: &str) -> BResult<bool> {
        Ok(self.shared.state.lock().otp_codes.remove(session_id).is_some())
    }
}
