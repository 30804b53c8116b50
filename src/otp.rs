//! One-time codes of the OTP gate: made, hashed and checked here, delivered by the host's webhook (or,
//! for local demos, the log). Codes are never stored in clear: the backend keeps a salted HMAC, and a guess is
//! compared in constant time.

use std::time::Duration;

use rand::Rng;
use serde_json::json;
use subtle::ConstantTimeEq;

use crate::backend::OtpCode;
use crate::config::{Config, OtpDelivery};
use crate::util::hex;

/// Why a code could not be delivered (logged; the client sees `OTP_SEND_FAILED`).
#[derive(Debug, thiserror::Error)]
pub(crate) enum OtpError {
    #[error("no OTP delivery is configured (otp.delivery_url)")]
    Disabled,
    #[error("OTP delivery webhook: {0}")]
    Webhook(String),
}

/// Makes codes and delivers them.
pub(crate) struct OtpService {
    delivery: OtpDelivery,
    http: reqwest::Client,
    timeout: Duration,
    code_length: usize,
    pub(crate) ttl_ms: i64,
    pub(crate) max_attempts: u32,
}

/// Where a code goes.
pub(crate) struct Destination<'a> {
    pub channel: &'a str,
    pub address: &'a str,
}

impl OtpService {
    pub(crate) fn new(config: &Config) -> Self {
        Self {
            delivery: config.otp_delivery(),
            http: reqwest::Client::builder().build().unwrap_or_default(),
            timeout: Duration::from_millis(config.otp.timeout_ms),
            code_length: config.otp.code_length,
            ttl_ms: i64::try_from(config.otp.ttl_s).unwrap_or(i64::MAX / 2).saturating_mul(1000),
            max_attempts: config.otp.max_attempts,
        }
    }

    /// A fresh code (digits) and its stored form.
    pub(crate) fn issue(&self, now_ms: i64) -> (String, OtpCode) {
        let mut rng = rand::thread_rng();
        let code: String = (0..self.code_length).map(|_| char::from(b'0' + rng.gen_range(0..10u8))).collect();
        let salt: [u8; 16] = rng.gen();
        let salt = hex(&salt);
        let stored = OtpCode {
            hash: hash(&salt, &code),
            salt,
            expires_at_ms: now_ms.saturating_add(self.ttl_ms),
            max_attempts: self.max_attempts,
        };
        (code, stored)
    }

    /// Sends `code` to `to`. `idempotency_key` lets the host drop a repeat (a resumed turn may send again).
    pub(crate) async fn deliver(
        &self,
        session_id: &str,
        to: &Destination<'_>,
        code: &str,
        expires_at_ms: i64,
        idempotency_key: &str,
    ) -> Result<(), OtpError> {
        match &self.delivery {
            OtpDelivery::Disabled => Err(OtpError::Disabled),
            OtpDelivery::Log => {
                tracing::warn!(
                    %session_id, channel = to.channel, destination = %mask(to.channel, to.address), %code,
                    "OTP code written to the log (otp.delivery = log: for local demos only, never in production)"
                );
                Ok(())
            }
            OtpDelivery::Webhook(url) => {
                let body = json!({"sessionId": session_id, "channel": to.channel, "destination": to.address,
                                  "code": code, "expiresAt": crate::util::rfc3339_from_ms(expires_at_ms)});
                let resp = self
                    .http
                    .post(url)
                    .timeout(self.timeout)
                    .header("Idempotency-Key", idempotency_key)
                    .json(&body)
                    .send()
                    .await
                    .map_err(|e| OtpError::Webhook(crate::webhook::http_failure(e)))?;
                if resp.status().is_success() {
                    Ok(())
                } else {
                    Err(OtpError::Webhook(format!("HTTP {}", resp.status().as_u16())))
                }
            }
        }
    }
}

/// Whether `guess` is the code `stored` was made from; constant time in the guess's content.
pub(crate) fn matches(stored: &OtpCode, guess: &str) -> bool {
    hash(&stored.salt, guess).as_bytes().ct_eq(stored.hash.as_bytes()).into()
}

fn hash(salt: &str, code: &str) -> String {
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, salt.as_bytes());
    hex(ring::hmac::sign(&key, code.as_bytes()).as_ref())
}

/// What the person is shown of where the code went: `a***@example.com`, `+*******4567`.
pub(crate) fn mask(channel: &str, address: &str) -> String {
    if channel == "email" {
        if let Some((local, domain)) = address.split_once('@') {
            let first: String = local.chars().take(1).collect();
            return format!("{first}***@{domain}");
        }
    }
    let chars: Vec<char> = address.chars().collect();
    let keep = chars.len().min(4);
    let head = usize::from(chars.first() == Some(&'+'));
    let hidden = chars.len().saturating_sub(keep + head);
    format!(
        "{}{}{}",
        if head == 1 { "+" } else { "" },
        "*".repeat(hidden),
        chars[chars.len() - keep..].iter().collect::<String>()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_are_digits_stored_salted_and_checked() {
        let mut c = Config::default();
        c.otp.code_length = 8;
        let svc = OtpService::new(&c);
        let (code, stored) = svc.issue(1_000);
        assert_eq!(code.len(), 8);
        assert!(code.chars().all(|ch| ch.is_ascii_digit()));
        assert!(!stored.hash.contains(&code), "the code is not stored in clear");
        assert_eq!(stored.expires_at_ms, 1_000 + 300_000);
        assert!(matches(&stored, &code));
        assert!(!matches(&stored, "00000000x"));
        // Two issues of the same code hash differently (per-code salt).
        let (_, other) = svc.issue(1_000);
        assert_ne!(other.salt, stored.salt);
    }

    #[test]
    fn destinations_are_masked() {
        assert_eq!(mask("email", "alice@example.com"), "a***@example.com");
        assert_eq!(mask("sms", "+15551234567"), "+*******4567");
        assert_eq!(mask("sms", "12"), "12");
    }
}
