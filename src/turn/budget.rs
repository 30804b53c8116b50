//! Budgets counted in the backend across pods, checked here and only here so they hold for every door: a
//! user's messages per minute (every door that starts a turn), a user's resume replay bytes per minute, and
//! OTP attempts per session. Over budget is `RATE_LIMITED`, never a stall.

use super::Turns;
use crate::auth::Identity;
use crate::backend::user_key;
use crate::error::{ClientError, ErrorCode};

/// One minute, the window of every budget here.
const MINUTE_MS: u64 = 60_000;

/// A message taken from a user's budget; given back when the turn it was for is refused.
pub(super) struct Spent(String);

impl Turns {
    /// Takes one message from the user's budget (`limits.messages_per_user_per_minute`), on every pod.
    pub(super) async fn take_message(&self, org_id: &str, user_id: &str) -> Result<Spent, ClientError> {
        let key = format!("msg:{}", user_key(org_id, user_id));
        let per_user = self.config.limits.messages_per_user_per_minute;
        if !self.backends.quotas.take(&key, per_user, MINUTE_MS).await? {
            return Err(ClientError::new(
                ErrorCode::RateLimited,
                format!(
                    "more than {per_user} messages per minute from this user (limits.messages_per_user_per_minute)"
                ),
            ));
        }
        Ok(Spent(key))
    }

    /// Gives a message back (the turn it was taken for did not start).
    pub(super) async fn give_back_message(&self, spent: Spent) {
        if let Err(e) = self.backends.quotas.give_back(&spent.0, MINUTE_MS).await {
            tracing::warn!(error = %e, "could not give a refused message's quota back");
        }
    }

    /// Takes `bytes` of a resume's replay from the caller's budget (`limits.replay_bytes_per_user_per_minute`).
    pub(crate) async fn take_replay(&self, who: &Identity, bytes: u64) -> Result<(), ClientError> {
        let per_user = self.config.limits.replay_bytes_per_user_per_minute;
        let key = format!("replay:{}", user_key(&who.org_id, &who.user_id));
        if self.backends.quotas.take_amount(&key, bytes, per_user, MINUTE_MS).await? {
            return Ok(());
        }
        Err(ClientError::new(
            ErrorCode::RateLimited,
            format!(
                "replaying {bytes} bytes would pass {per_user} bytes per minute for this user \
                 (limits.replay_bytes_per_user_per_minute); resume again later"
            ),
        ))
    }

    /// One verification attempt on the session (`otp.verify_per_minute`).
    pub(super) async fn take_otp_attempt(&self, session_id: &str) -> Result<(), ClientError> {
        let per_minute = self.config.otp.verify_per_minute;
        if self.backends.quotas.take(&format!("otp:{session_id}"), per_minute, MINUTE_MS).await? {
            return Ok(());
        }
        Err(ClientError::new(
            ErrorCode::RateLimited,
            format!("more than {per_minute} verification attempts per minute on this session (otp.verify_per_minute)"),
        ))
    }
}
