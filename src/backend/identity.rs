//! What a session knows about its person, shared by every pod: the contact given on create or in an identity
//! card, the one-time code of the OTP gate and whether the person proved they own the contact.
//!
//! Codes are stored as a salted HMAC, never in clear; attempts are counted in the store *before* the pod
//! compares, so guesses sent to several pods at once still get `max_attempts` in all.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use super::BResult;

/// A session's contact and verification.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Contact {
    pub name: Option<String>,
    pub email: Option<String>,
    pub phone: Option<String>,
    /// The person proved (by OTP) that the contact is theirs. Cleared when the email or phone changes.
    pub verified: bool,
}

/// One issued code, as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OtpCode {
    /// Hex HMAC-SHA256 of the code under `salt`.
    pub hash: String,
    /// Random per code (hex).
    pub salt: String,
    pub expires_at_ms: i64,
    pub max_attempts: u32,
}

/// The outcome of taking one verification attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum OtpAttempt {
    /// This attempt is counted (`used` of the code's `max_attempts`, this one included): compare now.
    Check {
        code: OtpCode,
        used: u32,
    },
    /// No code was issued (or it was used).
    NotFound,
    Expired,
    /// Every attempt was used.
    Locked,
}

#[async_trait]
pub trait IdentityStore: Send + Sync {
    async fn contact(&self, session_id: &str) -> BResult<Contact>;
    /// Sets the given fields (`None` keeps the stored one); a new email or phone clears `verified`.
    async fn stamp(
        &self,
        session_id: &str,
        name: Option<&str>,
        email: Option<&str>,
        phone: Option<&str>,
    ) -> BResult<()>;
    async fn set_verified(&self, session_id: &str) -> BResult<()>;
    /// Issues a code, replacing any earlier one (and its attempt count).
    async fn put_code(&self, session_id: &str, code: &OtpCode) -> BResult<()>;
    /// Counts one attempt against the session's code, atomically across pods.
    async fn attempt(&self, session_id: &str, now_ms: i64) -> BResult<OtpAttempt>;
    /// Removes the code; true for the one caller that removed it (a right code is used once).
    async fn consume_code(&self, session_id: &str) -> BResult<bool>;
}
