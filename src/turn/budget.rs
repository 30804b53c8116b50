//! Budgets counted in the backend across pods, checked here and only here so they hold for every door: a
//! caller's messages, session creations and history reads per minute, resume replay bytes per minute, open
//! sockets, and OTP attempts per session. A caller is a user, or for an anonymous caller its client address
//! ([`Identity::budget_key`]). Over budget is `RATE_LIMITED` with when to retry, never a stall.

use super::Turns;
use crate::auth::Identity;
use crate::error::ClientError;
use crate::util::now_ms;

/// One minute, the window of every per-minute budget here.
const MINUTE_MS: u64 = 60_000;

/// A message taken from a caller's budget; given back when the turn it was for is refused.
pub(super) struct Spent(String);

/// Milliseconds until the current window of `window_ms` ends (a fixed-window budget has room again then).
fn window_left(window_ms: u64) -> u64 {
    let into = u64::try_from(now_ms()).unwrap_or(0) % window_ms.max(1);
    window_ms - into
}

impl Turns {
    /// Takes one use of `what` from the caller's per-minute budget of `limit`; `RATE_LIMITED` (saying `key`)
    /// when it is spent.
    async fn take_per_minute(&self, what: &str, who: &Identity, limit: u64, key: &str) -> Result<String, ClientError> {
        let counter = format!("{what}:{}", who.budget_key());
        if self.backends.quotas.take(&counter, limit, MINUTE_MS).await? {
            return Ok(counter);
        }
        Err(ClientError::rate_limited(
            format!("more than {limit} {what} per minute from this caller ({key})"),
            window_left(MINUTE_MS),
        ))
    }

    /// Takes one message from the caller's budget (`limits.messages_per_user_per_minute`), on every pod.
    pub(super) async fn take_message(&self, who: &Identity) -> Result<Spent, ClientError> {
        let limit = self.config.limits.messages_per_user_per_minute;
        self.take_per_minute("messages", who, limit, "limits.messages_per_user_per_minute").await.map(Spent)
    }

    /// Gives a message back (the turn it was taken for did not start).
    pub(super) async fn give_back_message(&self, spent: Spent) {
        if let Err(e) = self.backends.quotas.give_back(&spent.0, MINUTE_MS).await {
            tracing::warn!(error = %e, "could not give a refused message's quota back");
        }
    }

    /// One session (or gateway namespace) created by the caller (`limits.sessions_per_user_per_minute`); every
    /// door that creates one takes it first, so a refused create leaves nothing behind.
    pub(crate) async fn take_session(&self, who: &Identity) -> Result<(), ClientError> {
        let limit = self.config.limits.sessions_per_user_per_minute;
        self.take_per_minute("sessions", who, limit, "limits.sessions_per_user_per_minute").await.map(drop)
    }

    /// One history read (`list_conversations`, `get_messages` and their REST forms) by the caller
    /// (`limits.reads_per_user_per_minute`).
    pub(crate) async fn take_read(&self, who: &Identity) -> Result<(), ClientError> {
        let limit = self.config.limits.reads_per_user_per_minute;
        self.take_per_minute("reads", who, limit, "limits.reads_per_user_per_minute").await.map(drop)
    }

    /// Takes `bytes` of a resume's replay from the caller's budget (`limits.replay_bytes_per_user_per_minute`).
    pub(crate) async fn take_replay(&self, who: &Identity, bytes: u64) -> Result<(), ClientError> {
        let per_user = self.config.limits.replay_bytes_per_user_per_minute;
        let key = format!("replay:{}", who.budget_key());
        if self.backends.quotas.take_amount(&key, bytes, per_user, MINUTE_MS).await? {
            return Ok(());
        }
        Err(ClientError::rate_limited(
            format!(
                "replaying {bytes} bytes would pass {per_user} bytes per minute for this caller \
                 (limits.replay_bytes_per_user_per_minute); resume again later"
            ),
            window_left(MINUTE_MS),
        ))
    }

    /// One verification attempt on the session (`otp.verify_per_minute`).
    pub(super) async fn take_otp_attempt(&self, session_id: &str) -> Result<(), ClientError> {
        let per_minute = self.config.otp.verify_per_minute;
        if self.backends.quotas.take(&format!("otp:{session_id}"), per_minute, MINUTE_MS).await? {
            return Ok(());
        }
        Err(ClientError::rate_limited(
            format!("more than {per_minute} verification attempts per minute on this session (otp.verify_per_minute)"),
            window_left(MINUTE_MS),
        ))
    }

    /// Holds (or renews) one of the caller's open-socket places for `connection_id` (`limits.sockets_per_user`,
    /// across pods) for `ttl_ms`: false when every place is held by another live socket. A socket renews its
    /// place with its registry heartbeat, so a dead pod's places lapse on their own.
    pub(crate) async fn hold_socket(
        &self,
        who: &Identity,
        connection_id: &str,
        ttl_ms: u64,
    ) -> Result<bool, ClientError> {
        let limit = self.config.limits.sockets_per_user as u64;
        let key = format!("sockets:{}", who.budget_key());
        Ok(self.backends.quotas.hold(&key, connection_id, limit, ttl_ms, now_ms()).await?)
    }

    /// Gives the socket's place back (it closed, or it now acts as another identity).
    pub(crate) async fn release_socket(&self, who: &Identity, connection_id: &str) {
        let key = format!("sockets:{}", who.budget_key());
        if let Err(e) = self.backends.quotas.release_hold(&key, connection_id).await {
            tracing::warn!(error = %e, "could not give a socket's place back");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_wait_is_what_is_left_of_the_window() {
        let left = super::window_left(60_000);
        assert!((1..=60_000).contains(&left), "{left}");
        assert_eq!(super::window_left(1), 1);
    }
}
