//! JWT bearer tokens: HS256/RS256 keys from config and keys from a JWKS endpoint (by `kid`, cached, fetched
//! again when a token names a `kid` the cache does not hold, so a rotated key works at once and a retired one
//! stops working). `exp` and `sub` are required, `nbf` is checked, `iss` and `aud` when configured, and the
//! `org` claim is required unless `auth.default_org` is set.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{decode, decode_header, Algorithm, DecodingKey, Validation};
use parking_lot::{Mutex, RwLock};
use serde::Deserialize;

use super::{AuthError, Identity};
use crate::config::AuthConfig;

/// An unknown `kid` fetches the JWKS again at most this often (a flood of forged kids costs the IdP one
/// request a second, and a rotation is picked up within a second of the first token that needs it).
const JWKS_MIN_REFRESH: Duration = Duration::from_secs(1);
/// Clock skew allowed on `exp` and `nbf`.
const LEEWAY_S: u64 = 5;

#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: i64,
    #[serde(default)]
    org: Option<String>,
    /// Admin API role.
    #[serde(default)]
    role: Option<String>,
}

pub(crate) struct JwtVerifier {
    /// Keys from config, tried in turn for a token without a JWKS `kid`.
    static_keys: Vec<(DecodingKey, Algorithm)>,
    issuer: Option<String>,
    audience: Option<String>,
    default_org: Option<String>,
    jwks: Option<Jwks>,
}

/// The JWKS cache. Owned by the verifier; readers take the read lock briefly, a refresh swaps the whole map.
struct Jwks {
    url: String,
    http: reqwest::Client,
    /// kid → key, as last fetched (a kid that left the set is gone after the next fetch).
    keys: RwLock<HashMap<String, (DecodingKey, Algorithm)>>,
    /// When the set was last fetched; an async lock so concurrent misses wait for one fetch.
    fetched: tokio::sync::Mutex<Option<Instant>>,
    /// The last fetch error, for the message of a refused token.
    last_error: Mutex<Option<String>>,
}

fn non_empty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

impl JwtVerifier {
    pub(crate) fn new(config: &AuthConfig) -> Self {
        let mut static_keys = Vec::new();
        if !config.jwt_hs256_secret.is_empty() {
            static_keys.push((DecodingKey::from_secret(config.jwt_hs256_secret.as_bytes()), Algorithm::HS256));
        }
        if let Ok(k) = DecodingKey::from_rsa_pem(config.jwt_rs256_public_key.as_bytes()) {
            static_keys.push((k, Algorithm::RS256));
        }
        let jwks = non_empty(&config.jwks_url).map(|url| Jwks {
            url,
            http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap_or_default(),
            keys: RwLock::new(HashMap::new()),
            fetched: tokio::sync::Mutex::new(None),
            last_error: Mutex::new(None),
        });
        JwtVerifier {
            static_keys,
            issuer: non_empty(&config.jwt_issuer),
            audience: non_empty(&config.jwt_audience),
            default_org: non_empty(&config.default_org),
            jwks,
        }
    }

    pub(crate) async fn verify(&self, token: &str) -> Result<Identity, AuthError> {
        let header = decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        if let (Some(jwks), Some(kid)) = (&self.jwks, header.kid.as_deref()) {
            let key = match jwks.get(kid) {
                Some(k) => k,
                None => {
                    jwks.refresh().await;
                    jwks.get(kid).ok_or_else(|| {
                        let why = jwks.last_error.lock().clone().unwrap_or_else(|| "not in the JWKS".into());
                        AuthError::Invalid(format!("unknown key id '{kid}': {why}"))
                    })?
                }
            };
            return self.check(token, &key.0, key.1);
        }
        let mut last = String::from("no key configured");
        for (key, alg) in &self.static_keys {
            match self.check(token, key, *alg) {
                Ok(id) => return Ok(id),
                Err(e) => last = e.to_string(),
            }
        }
        Err(AuthError::Invalid(last))
    }

    fn check(&self, token: &str, key: &DecodingKey, alg: Algorithm) -> Result<Identity, AuthError> {
        let mut v = Validation::new(alg);
        let mut required = vec!["exp", "sub"];
        v.leeway = LEEWAY_S;
        v.validate_nbf = true;
        if let Some(iss) = &self.issuer {
            v.set_issuer(&[iss]);
            required.push("iss");
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let c = decode::<Claims>(token, key, &v).map_err(|e| AuthError::Invalid(e.to_string()))?.claims;
        if c.sub.is_empty() {
            return Err(AuthError::Invalid("empty sub".into()));
        }
        if c.sub.starts_with("api-key:") {
            // Reserved for API-key callers: a token must not pass for one.
            return Err(AuthError::Invalid("sub 'api-key:…' is reserved".into()));
        }
        let org = c
            .org
            .filter(|o| !o.is_empty())
            .or_else(|| self.default_org.clone())
            .ok_or_else(|| AuthError::Invalid("no org claim (and no auth.default_org)".into()))?;
        let role = super::Role::from_claim(c.role.as_deref());
        Ok(Identity { user_id: c.sub, org_id: org, expires_at: Some(c.exp), role, address: None })
    }
}

impl Jwks {
    fn get(&self, kid: &str) -> Option<(DecodingKey, Algorithm)> {
        self.keys.read().get(kid).cloned()
    }

    /// Fetches the set again unless that happened less than [`JWKS_MIN_REFRESH`] ago.
    async fn refresh(&self) {
        let mut fetched = self.fetched.lock().await;
        if fetched.is_some_and(|t| t.elapsed() < JWKS_MIN_REFRESH) {
            return;
        }
        *fetched = Some(Instant::now());
        match self.fetch().await {
            Ok(keys) => {
                tracing::info!(keys = keys.len(), "JWKS fetched");
                *self.keys.write() = keys;
                *self.last_error.lock() = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "JWKS fetch failed; keeping the keys fetched before");
                *self.last_error.lock() = Some(e);
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, (DecodingKey, Algorithm)>, String> {
        let resp = self.http.get(&self.url).send().await.map_err(|e| e.without_url().to_string())?;
        if !resp.status().is_success() {
            return Err(format!("JWKS endpoint answered {}", resp.status()));
        }
        let set: JwkSet = resp.json().await.map_err(|e| format!("JWKS is not a key set: {}", e.without_url()))?;
        let mut keys = HashMap::new();
        for jwk in &set.keys {
            let (Some(kid), Ok(key)) = (jwk.common.key_id.clone(), DecodingKey::from_jwk(jwk)) else { continue };
            let alg = match jwk.common.key_algorithm.and_then(|a| a.to_string().parse::<Algorithm>().ok()) {
                Some(alg) => alg,
                None => match &jwk.algorithm {
                    jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(_) => Algorithm::ES256,
                    jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                    _ => continue,
                },
            };
            keys.insert(kid, (key, alg));
        }
        Ok(keys)
    }
}
