//! Identity of a connection. `none`: everyone is the anonymous user in org `default` (local use only).
//! `jwt`: a token checked by [`jwt`]; `sub` = user, `org` claim = org. API keys for server-side callers.

mod jwt;
mod resume;

pub(crate) use resume::ResumeKeys;

use subtle::ConstantTimeEq;

use crate::config::AuthConfig;

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Identity {
    pub user_id: String,
    pub org_id: String,
    /// Token expiry (Unix seconds); the socket is closed with 4401 when it passes.
    pub expires_at: Option<i64>,
    /// What the admin API lets this caller do.
    pub role: Role,
    /// The client's address (`client_addr`), set by the door that saw the request: an anonymous caller's
    /// budgets count per address, never as one shared user.
    pub address: Option<std::net::IpAddr>,
}

impl Identity {
    /// Whose budget this caller spends: the user, or for an anonymous caller its client address.
    pub(crate) fn budget_key(&self) -> String {
        match (self.user_id == ANONYMOUS_USER, self.address) {
            (true, Some(ip)) => format!("addr:{ip}"),
            _ => crate::backend::user_key(&self.org_id, &self.user_id),
        }
    }

    /// This identity, seen from `address` (see [`Identity::address`]).
    pub(crate) fn seen_from(mut self, address: Option<std::net::IpAddr>) -> Identity {
        self.address = address;
        self
    }
}

/// Admin API roles, from a token's `role` claim: `admin` > `curator` > `basic` (`user`, missing or unknown).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Role {
    Basic,
    Curator,
    Admin,
}

impl Role {
    pub(crate) fn from_claim(claim: Option<&str>) -> Role {
        match claim {
            Some("admin") => Role::Admin,
            Some("curator") => Role::Curator,
            _ => Role::Basic,
        }
    }

    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Role::Basic => "basic",
            Role::Curator => "curator",
            Role::Admin => "admin",
        }
    }
}

/// The user of every connection with `auth.mode = "none"` and no credentials.
pub(crate) const ANONYMOUS_USER: &str = "anonymous";

#[derive(Debug, thiserror::Error)]
pub(crate) enum AuthError {
    #[error("missing token")]
    Missing,
    #[error("invalid token: {0}")]
    Invalid(String),
}

pub(crate) struct Authenticator {
    mode_jwt: bool,
    jwt: jwt::JwtVerifier,
    publish_keys: Vec<String>,
    /// (key, identity) of every configured API key.
    api_keys: Vec<(String, Identity)>,
    /// Signs and checks resume tokens: from `auth.resume_secret`, else set once at boot from the deployment key
    /// the pods agree on through the backend ([`Authenticator::use_deployment_resume_key`]).
    resume: std::sync::OnceLock<ResumeKeys>,
}

impl Authenticator {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        let api_keys = config
            .api_keys
            .iter()
            .map(|k| {
                let id = Identity {
                    user_id: format!("api-key:{}", k.name),
                    org_id: k.org.clone(),
                    expires_at: None,
                    role: Role::Basic,
                    address: None,
                };
                (k.key.clone(), id)
            })
            .collect();
        let resume = std::sync::OnceLock::new();
        if !config.resume_secret.is_empty() {
            let _ = resume.set(ResumeKeys::new(config.resume_secret.as_bytes()));
        }
        Self {
            resume,
            mode_jwt: config.mode == crate::config::AuthMode::Jwt,
            jwt: jwt::JwtVerifier::new(config),
            publish_keys: config.publish_keys.clone(),
            api_keys,
        }
    }

    fn anonymous() -> Identity {
        Identity {
            user_id: ANONYMOUS_USER.into(),
            org_id: "default".into(),
            expires_at: None,
            role: Role::Basic,
            address: None,
        }
    }

    /// A WebSocket upgrade: an API key, else (`jwt`) a valid token, else (`none`) the anonymous user.
    pub(crate) async fn authenticate(&self, token: Option<&str>) -> Result<Identity, AuthError> {
        let token = token.filter(|t| !t.is_empty());
        if let Some(id) = token.and_then(|t| self.api_key(t)) {
            return Ok(id);
        }
        if !self.mode_jwt {
            // With API keys configured a presented token must be one of them (as on the REST API).
            if token.is_some() && !self.api_keys.is_empty() {
                return Err(AuthError::Invalid("unknown API key".into()));
            }
            return Ok(Self::anonymous());
        }
        self.jwt.verify(token.ok_or(AuthError::Missing)?).await
    }

    /// A REST caller: an API key or (`jwt`) a valid token. Anonymous only with `auth.mode = "none"` and no API
    /// keys configured; a presented token that is neither is refused in every mode.
    pub(crate) async fn authenticate_caller(&self, token: Option<&str>) -> Result<Identity, AuthError> {
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
        self.jwt.verify(token).await
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

    /// The resume-token keys (a per-process key if the boot never set one: tokens then end with the process).
    pub(crate) fn resume(&self) -> &ResumeKeys {
        self.resume.get_or_init(ResumeKeys::per_boot)
    }

    /// Without `auth.resume_secret`: signs resume tokens with the deployment's shared key (the first pod's
    /// random candidate, kept by the backend). Does nothing when the secret is configured.
    pub(crate) fn use_deployment_resume_key(&self, key: &[u8]) {
        if self.resume.set(ResumeKeys::new(key)).is_ok() {
            tracing::info!("auth.resume_secret is not set: resume tokens use a key the pods share through the backend");
        }
    }

    /// Whether `auth.resume_secret` (or the deployment key) is in place.
    pub(crate) fn has_resume_key(&self) -> bool {
        self.resume.get().is_some()
    }

    /// Constant-time check of a publish key.
    pub(crate) fn publish_key_ok(&self, presented: Option<&str>) -> bool {
        let Some(p) = presented else { return false };
        // Every key is compared (no early exit), each in constant time.
        self.publish_keys.iter().fold(false, |ok, k| ok | bool::from(k.as_bytes().ct_eq(p.as_bytes())))
    }
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive, RFC 9110 section 11.1).
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
    use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};

    const SECRET: &str = "hs256-secret-of-at-least-32-bytes!";

    fn cfg() -> AuthConfig {
        AuthConfig { mode: crate::config::AuthMode::Jwt, jwt_hs256_secret: SECRET.into(), ..Default::default() }
    }

    fn token(secret: &str, sub: &str, exp: i64) -> String {
        let claims = serde_json::json!({"sub": sub, "exp": exp, "org": "acme"});
        encode(&Header::new(Algorithm::HS256), &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("encode")
    }

    #[tokio::test]
    async fn jwt_modes() {
        let a = Authenticator::new(&cfg());
        let now = chrono::Utc::now().timestamp();
        let id = a.authenticate(Some(&token(SECRET, "alice", now + 60))).await.expect("valid");
        assert_eq!((id.user_id.as_str(), id.org_id.as_str()), ("alice", "acme"));
        assert!(a.authenticate(Some(&token("wrong", "alice", now + 60))).await.is_err());
        assert!(a.authenticate(Some(&token(SECRET, "alice", now - 600))).await.is_err());
        assert!(a.authenticate(None).await.is_err());
        let none = Authenticator::new(&AuthConfig::default());
        assert_eq!(none.authenticate(None).await.expect("anon").user_id, "anonymous");
    }

    /// A throwaway key pair generated for this test only (tests/fixtures).
    #[tokio::test]
    async fn rs256_tokens() {
        let private = include_str!("../../tests/fixtures/test-rs256.key.pem");
        let public = include_str!("../../tests/fixtures/test-rs256.pub.pem");
        let a = Authenticator::new(&AuthConfig {
            mode: crate::config::AuthMode::Jwt,
            jwt_rs256_public_key: public.into(),
            default_org: "default".into(),
            ..Default::default()
        });
        let now = chrono::Utc::now().timestamp();
        let key = EncodingKey::from_rsa_pem(private.as_bytes()).expect("private key");
        let sign = |claims: serde_json::Value| encode(&Header::new(Algorithm::RS256), &claims, &key).expect("sign");
        let id = a.authenticate(Some(&sign(serde_json::json!({"sub": "rita", "exp": now + 60})))).await.expect("valid");
        assert_eq!((id.user_id.as_str(), id.org_id.as_str()), ("rita", "default"));
        assert!(a.authenticate(Some(&sign(serde_json::json!({"sub": "rita"})))).await.is_err(), "exp is required");
        // An HS256 token signed with the public key text must not pass (algorithm confusion).
        let forged = encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({"sub": "mallory", "exp": now + 60}),
            &EncodingKey::from_secret(public.as_bytes()),
        )
        .expect("sign");
        assert!(a.authenticate(Some(&forged)).await.is_err());
    }

    fn signed(claims: serde_json::Value, kid: Option<&str>, secret: &str) -> String {
        let mut header = Header::new(Algorithm::HS256);
        header.kid = kid.map(str::to_string);
        encode(&header, &claims, &EncodingKey::from_secret(secret.as_bytes())).expect("sign")
    }

    #[tokio::test]
    async fn issuer_audience_nbf_and_org_are_checked() {
        let a = Authenticator::new(&AuthConfig {
            jwt_issuer: "https://idp.example".into(),
            jwt_audience: "switchboard".into(),
            ..cfg()
        });
        let now = chrono::Utc::now().timestamp();
        let good = serde_json::json!({"sub": "u", "org": "acme", "exp": now + 60, "iss": "https://idp.example",
                                      "aud": "switchboard", "nbf": now - 10});
        assert_eq!(a.authenticate(Some(&signed(good.clone(), None, SECRET))).await.expect("valid").org_id, "acme");
        for (field, value) in [
            ("iss", serde_json::json!("https://evil.example")),
            ("aud", serde_json::json!("another-service")),
            ("nbf", serde_json::json!(now + 600)),
            ("org", serde_json::Value::Null),
        ] {
            let mut claims = good.clone();
            claims[field] = value;
            assert!(a.authenticate(Some(&signed(claims, None, SECRET))).await.is_err(), "{field}");
        }
        for missing in ["iss", "aud"] {
            let mut claims = good.clone();
            claims.as_object_mut().expect("object").remove(missing);
            assert!(a.authenticate(Some(&signed(claims, None, SECRET))).await.is_err(), "missing {missing}");
        }
        let with_default = Authenticator::new(&AuthConfig { default_org: "fallback".into(), ..cfg() });
        let no_org = serde_json::json!({"sub": "u", "exp": now + 60});
        assert_eq!(
            with_default.authenticate(Some(&signed(no_org, None, SECRET))).await.expect("ok").org_id,
            "fallback"
        );
    }

    /// An in-test JWKS endpoint whose key set the test swaps (a rotation).
    async fn jwks_server(keys: std::sync::Arc<parking_lot::Mutex<serde_json::Value>>) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let app = axum::Router::new().route(
            "/jwks.json",
            axum::routing::get(move || {
                let keys = keys.clone();
                async move { axum::Json(keys.lock().clone()) }
            }),
        );
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/jwks.json")
    }

    fn oct(kid: &str, secret: &str) -> serde_json::Value {
        use base64::Engine;
        let k = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(secret);
        serde_json::json!({"kty": "oct", "kid": kid, "alg": "HS256", "k": k})
    }

    #[tokio::test]
    async fn jwks_keys_by_kid_follow_a_rotation() {
        let (s1, s2) = ("first-signing-key-0123456789abcdef", "second-signing-key-0123456789abcdef");
        let set = std::sync::Arc::new(parking_lot::Mutex::new(serde_json::json!({"keys": [oct("k1", s1)]})));
        let url = jwks_server(set.clone()).await;
        let a =
            Authenticator::new(&AuthConfig { mode: crate::config::AuthMode::Jwt, jwks_url: url, ..Default::default() });
        let now = chrono::Utc::now().timestamp();
        let claims = serde_json::json!({"sub": "u", "org": "acme", "exp": now + 60});
        assert_eq!(a.authenticate(Some(&signed(claims.clone(), Some("k1"), s1))).await.expect("k1").user_id, "u");
        assert!(a.authenticate(Some(&signed(claims.clone(), Some("k1"), s2))).await.is_err(), "wrong key for k1");
        // The IdP rotates: k2 in, k1 out. A token naming k2 makes the gateway fetch the set again.
        *set.lock() = serde_json::json!({"keys": [oct("k2", s2)]});
        tokio::time::sleep(std::time::Duration::from_millis(1_100)).await; // the JWKS is fetched at most once a second
        assert_eq!(a.authenticate(Some(&signed(claims.clone(), Some("k2"), s2))).await.expect("k2").user_id, "u");
        assert!(a.authenticate(Some(&signed(claims.clone(), Some("k1"), s1))).await.is_err(), "k1 retired");
        assert!(a.authenticate(Some(&signed(claims, Some("k9"), s1))).await.is_err(), "unknown kid");
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
