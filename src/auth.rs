//! Identity of a connection. `none`: everyone is the anonymous user in org `default` (local use only).
//! `jwt`: HS256 or RS256 token with `exp` required; `sub` = user, `org` claim = org.

use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;

use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    pub user_id: String,
    pub org_id: String,
    /// Token expiry (Unix seconds); the socket is closed with 4401 when it passes.
    pub expires_at: Option<i64>,
}

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    org: Option<String>,
}

pub(crate) struct Authenticator {
    mode_jwt: bool,
    keys: Vec<(DecodingKey, Algorithm)>,
    publish_keys: Vec<String>,
    /// (key, identity) of every configured API key.
    api_keys: Vec<(String, Identity)>,
}

impl Authenticator {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        let mut keys = Vec::new();
        if !config.jwt_hs256_secret.is_empty() {
            keys.push((DecodingKey::from_secret(config.jwt_hs256_secret.as_bytes()), Algorithm::HS256));
        }
        if let Ok(k) = DecodingKey::from_rsa_pem(config.jwt_rs256_public_key.as_bytes()) {
            keys.push((k, Algorithm::RS256));
        }
        let api_keys = config
            .api_keys
            .iter()
            .map(|k| {
                let id = Identity { user_id: format!("api-key:{}", k.name), org_id: k.org.clone(), expires_at: None };
                (k.key.clone(), id)
            })
            .collect();
        Self { mode_jwt: config.mode == "jwt", keys, publish_keys: config.publish_keys.clone(), api_keys }
    }

    fn anonymous() -> Identity {
        Identity { user_id: "anonymous".into(), org_id: "default".into(), expires_at: None }
    }

    /// A WebSocket upgrade: an API key, else (`jwt`) a valid token, else (`none`) the anonymous user.
    pub(crate) fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty());
        if let Some(id) = token.and_then(|t| self.api_key(t)) {
            return Ok(id);
        }
        if !self.mode_jwt {
            return Ok(Self::anonymous());
        }
        self.jwt(token.ok_or(AuthError::Missing)?)
    }

    /// A REST caller: an API key or (`jwt`) a valid token. Anonymous only with `auth.mode = "none"` and no API
    /// keys configured; a presented token that is neither is refused in every mode.
    pub(crate) fn authenticate_caller(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let Some(token) = token.filter(|t| !t.is_empty()) else {
            return if !self.mode_jwt && self.api_keys.is_empty() {
                Ok(Self::anonymous())
            } else {
                Err(AuthError::Missing)
            };
        };
        if let Some(id) = self.api_key(token) {
            return Ok(id);
        }
        if !self.mode_jwt {
            return Err(AuthError::Invalid("unknown API key".into()));
        }
        self.jwt(token)
    }

    /// The identity of an API key. Every key is compared (no early exit), each in constant time.
    fn api_key(&self, presented: &str) -> Option<Identity> {
        let mut found = None;
        for (key, id) in &self.api_keys {
            if bool::from(key.as_bytes().ct_eq(presented.as_bytes())) {
                found = Some(id.clone());
            }
        }
        found
    }

    fn jwt(&self, token: &str) -> Result<Identity, AuthError> {
        let mut last = String::from("no key configured");
        for (key, alg) in &self.keys {
            let mut v = Validation::new(*alg);
            v.set_required_spec_claims(&["exp", "sub"]);
            v.leeway = 5;
            match decode::<Claims>(token, key, &v) {
                Ok(data) => {
                    let c = data.claims;
                    if c.sub.is_empty() {
                        return Err(AuthError::Invalid("empty sub".into()));
                    }
                    return Ok(Identity {
                        user_id: c.sub,
                        org_id: c.org.unwrap_or_else(|| "default".into()),
                        expires_at: Some(c.exp),
                    });
                }
                Err(e) => last = e.to_string(),
            }
        }
        Err(AuthError::Invalid(last))
    }

    /// Constant-time check of a publish key.
    pub(crate) fn publish_key_ok(&self, presented: Option<&str>) -> bool {
        let Some(p) = presented else { return false };
        // Every key is compared (no early exit), each in constant time.
        self.publish_keys.iter().fold(false, |ok, k| ok | bool::from(k.as_bytes().ct_eq(p.as_bytes())))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive, RFC 9110 §11.1).
pub(crate) fn bearer(headers: &axum::http::HeaderMap) -> Option<&str> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim()).filter(|t| !t.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_scheme_is_case_insensitive() {
        let mut h = axum::http::HeaderMap::new();
        for (value, want) in [
            ("Bearer abc", Some("abc")),
            ("bearer abc", Some("abc")),
            ("BEARER  abc", Some("abc")),
            ("Basic abc", None),
            ("Bearer ", None),
        ] {
            h.insert("authorization", value.parse().expect("header"));
            assert_eq!(bearer(&h), want, "{value}");
        }
    }
    use jsonwebtoken::{encode, EncodingKey, Header};

    fn cfg() -> AuthConfig {
        AuthConfig { mode: "jwt".into(), jwt_hs256_secret: "s3cret".into(), ..Default::default() }
    }

    fn token(secret: &str, sub: &str, exp: i64) -> String {
        let claims = serde_json::json!({"sub": sub, "exp": exp, "org": "acme"});
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encode")
    }

    #[test]
    fn jwt_modes() {
        let a = Authenticator::new(&cfg());
        let now = chrono::Utc::now().timestamp();
        let id = a.authenticate(Some(&token("s3cret", "alice", now + 60))).expect("valid");
        assert_eq!((id.user_id.as_str(), id.org_id.as_str()), ("alice", "acme"));
        assert!(a.authenticate(Some(&token("wrong", "alice", now + 60))).is_err());
        assert!(a.authenticate(Some(&token("s3cret", "alice", now - 600))).is_err());
        assert!(a.authenticate(None).is_err());
        let none = Authenticator::new(&AuthConfig::default());
        assert_eq!(none.authenticate(None).expect("anon").user_id, "anonymous");
    }

    /// A throwaway key pair generated for this test only (tests/fixtures).
    #[test]
    fn rs256_tokens() {
        let private = include_str!("../tests/fixtures/test-rs256.key.pem");
        let public = include_str!("../tests/fixtures/test-rs256.pub.pem");
        let a = Authenticator::new(&AuthConfig {
            mode: "jwt".into(),
            jwt_rs256_public_key: public.into(),
            ..Default::default()
        });
        let now = chrono::Utc::now().timestamp();
        let key = EncodingKey::from_rsa_pem(private.as_bytes()).expect("private key");
        let sign = |claims: serde_json::Value| encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign");
        let id = a.authenticate(Some(&sign(serde_json::json!({"sub": "rita", "exp": now + 60})))).expect("valid");
        assert_eq!((id.user_id.as_str(), id.org_id.as_str()), ("rita", "default"));
        assert!(a.authenticate(Some(&sign(serde_json::json!({"sub": "rita"})))).is_err(), "exp is required");
        // An HS256 token signed with the public key text must not pass (algorithm confusion).
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "mallory", "exp": now + 60}),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .expect("sign");
        assert!(a.authenticate(Some(&forged)).is_err());
    }

    #[test]
    fn publish_keys() {
        let a = Authenticator::new(&AuthConfig { publish_keys: vec!["k".repeat(16)], ..Default::default() });
        assert!(a.publish_key_ok(Some(&"k".repeat(16))));
        assert!(!a.publish_key_ok(Some("k")));
        assert!(!a.publish_key_ok(None));
        assert!(!Authenticator::new(&AuthConfig::default()).publish_key_ok(Some("anything")));
    }
}
