//! Entra ID (Azure AD) bearer tokens: JWTs signed by the tenant, checked against its published
//! signing keys (JWKS).
//!
//! A token is accepted when its signature verifies with the JWKS key its header names (`kid`)
//! under one of the configured algorithms, `iss` is the configured issuer, `aud` one of the
//! configured audiences, and `exp`/`nbf` hold within the leeway. The caller is the token's `oid`
//! (else `sub`); its roles are what its app roles (`roles`) and delegated scopes (`scp`) map to.
//!
//! Keys are cached by `kid` for `jwks_cache_ttl`. A token naming a key not in the cache makes
//! one refetch, at most once per `jwks_refresh_cooldown` since the last fetch, and concurrent
//! refreshes share one fetch: a flood of tokens with made-up `kid`s costs the JWKS endpoint one
//! request per cooldown. After a failed fetch the next may come 10 s later (or after the
//! cooldown, if shorter); until one succeeds, tokens whose key is not known get "unavailable"
//! rather than "invalid". When a refresh fails, the keys already known keep working.
//!
//! Errors never contain the token or any part of it.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use jsonwebtoken::jwk::{Jwk, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

pub use crate::config::JwtSettings;
use crate::config::{JwtAlgorithm, Role};

/// Largest JWKS document read (Entra's is a few KiB).
const MAX_JWKS_BYTES: usize = 1024 * 1024;
/// After a failed fetch, the next is allowed this soon (or after the cooldown, if shorter): an
/// outage of the JWKS endpoint at start-up must not lock token holders out for the cooldown.
const FAILED_FETCH_RETRY: Duration = Duration::from_secs(10);

/// The `jsonwebtoken` algorithm of a configured one.
fn algorithm(configured: JwtAlgorithm) -> Algorithm {
    {
        match configured {
            JwtAlgorithm::Rs256 => Algorithm::RS256,
            JwtAlgorithm::Rs384 => Algorithm::RS384,
            JwtAlgorithm::Rs512 => Algorithm::RS512,
            JwtAlgorithm::Ps256 => Algorithm::PS256,
            JwtAlgorithm::Ps384 => Algorithm::PS384,
            JwtAlgorithm::Ps512 => Algorithm::PS512,
            JwtAlgorithm::Es256 => Algorithm::ES256,
            JwtAlgorithm::Es384 => Algorithm::ES384,
        }
    }
}

/// Who a valid token speaks for, and what it may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Claims {
    /// `oid` (the principal's object id, the same for every app), else `sub`.
    pub subject: String,
    pub roles: Vec<Role>,
}

#[derive(Debug, thiserror::Error)]
pub enum JwtError {
    /// The token is not acceptable (the reason is safe to show the caller).
    #[error("invalid bearer token: {0}")]
    Invalid(&'static str),
    /// The signing keys could not be fetched: the token could not be checked.
    #[error("the token signing keys could not be fetched: {0}")]
    Unavailable(String),
}

/// `true` for three non-empty base64url parts separated by dots: the compact JWS form.
pub fn looks_like_jwt(value: &str) -> bool {
    let mut parts = 0;
    for part in value.split('.') {
        parts += 1;
        if parts > 3
            || part.is_empty()
            || !part
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return false;
        }
    }
    parts == 3
}

/// The claims read beyond those `jsonwebtoken` checks.
#[derive(Deserialize)]
struct RawClaims {
    #[serde(default)]
    oid: Option<String>,
    #[serde(default)]
    sub: Option<String>,
    #[serde(default)]
    roles: Vec<String>,
    #[serde(default)]
    scp: Option<String>,
}

struct Key {
    decoding: DecodingKey,
    /// The JWKS entry's own `alg`, when it names one.
    alg: Option<String>,
}

#[derive(Default)]
struct Cache {
    keys: HashMap<String, Arc<Key>>,
    /// The last successful fetch.
    fetched: Option<Instant>,
    /// The last fetch, successful or not.
    attempted: Option<Instant>,
    /// Why the last fetch failed (`None` when it succeeded).
    failure: Option<String>,
}

/// Validates Entra ID bearer tokens against the tenant's JWKS (cheap to share: keep one).
pub struct JwtValidator {
    settings: JwtSettings,
    http: reqwest::Client,
    /// One per accepted algorithm (`jsonwebtoken` wants one family per validation).
    validations: Vec<(Algorithm, Validation)>,
    cache: RwLock<Cache>,
    /// One JWKS fetch at a time; waiters see its result.
    fetching: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for JwtValidator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtValidator")
            .field("issuer", &self.settings.issuer)
            .field("jwks_url", &self.settings.jwks_url.as_str())
            .finish_non_exhaustive()
    }
}

impl JwtValidator {
    /// `http` carries the timeouts (and trusted CAs) of JWKS fetches.
    pub fn new(settings: JwtSettings, http: reqwest::Client) -> Self {
        let validations = settings
            .algorithms
            .iter()
            .map(|a| {
                let alg = algorithm(*a);
                let mut validation = Validation::new(alg);
                validation.set_issuer(&[settings.issuer.as_str()]);
                validation.set_audience(&settings.audiences);
                validation.set_required_spec_claims(&["exp", "iss", "aud"]);
                validation.validate_exp = true;
                validation.validate_nbf = true;
                validation.validate_aud = true;
                validation.leeway = settings.leeway.as_secs();
                (alg, validation)
            })
            .collect();
        Self {
            settings,
            http,
            validations,
            cache: RwLock::new(Cache::default()),
            fetching: tokio::sync::Mutex::new(()),
        }
    }

    pub fn settings(&self) -> &JwtSettings {
        &self.settings
    }

    /// Checks `token` (signature, `iss`, `aud`, `exp`, `nbf`) and says who it speaks for.
    pub async fn validate(&self, token: &str) -> Result<Claims, JwtError> {
        if !looks_like_jwt(token) {
            return Err(JwtError::Invalid("not a JWT"));
        }
        let header = jsonwebtoken::decode_header(token)
            .map_err(|_| JwtError::Invalid("the token header cannot be read"))?;
        let Some((_, validation)) = self.validations.iter().find(|(a, _)| *a == header.alg) else {
            return Err(JwtError::Invalid("the token's algorithm is not accepted"));
        };
        let kid = header
            .kid
            .as_deref()
            .ok_or(JwtError::Invalid("the token names no signing key (kid)"))?;
        let key = self.key(kid).await?;
        if let Some(alg) = &key.alg
            && *alg != format!("{:?}", header.alg)
        {
            return Err(JwtError::Invalid(
                "the token's algorithm does not match its key",
            ));
        }
        let data = jsonwebtoken::decode::<RawClaims>(token, &key.decoding, validation)
            .map_err(|e| JwtError::Invalid(reason(e.kind())))?;
        let claims = data.claims;
        let subject = claims
            .oid
            .or(claims.sub)
            .filter(|s| !s.is_empty())
            .ok_or(JwtError::Invalid("the token has no subject (oid or sub)"))?;
        let mut granted: Vec<&str> = claims.roles.iter().map(String::as_str).collect();
        if let Some(scp) = &claims.scp {
            granted.extend(scp.split_whitespace());
        }
        Ok(Claims {
            subject,
            roles: self.settings.roles_for(&granted),
        })
    }

    /// The key `kid`, from the cache or a (rate-limited, shared) JWKS fetch.
    async fn key(&self, kid: &str) -> Result<Arc<Key>, JwtError> {
        if let Some(answer) = self.lookup(kid, false) {
            return answer;
        }
        let _fetching = self.fetching.lock().await;
        // Another task may have fetched while this one waited.
        if let Some(answer) = self.lookup(kid, false) {
            return answer;
        }
        self.refresh().await;
        self.lookup(kid, true)
            .expect("settled lookups always answer")
    }

    /// The answer the cache gives for `kid`; `None` when a fetch is due first (never when
    /// `settled`). Keys past their TTL still serve while no fetch is allowed or fetches fail.
    fn lookup(&self, kid: &str, settled: bool) -> Option<Result<Arc<Key>, JwtError>> {
        let now = Instant::now();
        let cache = self.cache.read().expect("not poisoned");
        let found = cache.keys.get(kid);
        let fresh = cache
            .fetched
            .is_some_and(|t| now.duration_since(t) < self.settings.jwks_cache_ttl);
        let wait = if cache.failure.is_some() {
            self.settings.jwks_refresh_cooldown.min(FAILED_FETCH_RETRY)
        } else {
            self.settings.jwks_refresh_cooldown
        };
        let may_fetch = cache
            .attempted
            .is_none_or(|t| now.duration_since(t) >= wait);
        if !settled && may_fetch && (!fresh || found.is_none()) {
            return None;
        }
        Some(match (found, &cache.failure) {
            (Some(key), _) => Ok(key.clone()),
            // Not knowing the key proves nothing while the keys cannot be fetched.
            (None, Some(failure)) => Err(JwtError::Unavailable(failure.clone())),
            (None, None) => Err(JwtError::Invalid(
                "the token's signing key (kid) is not known",
            )),
        })
    }

    /// Fetches the JWKS; on success replaces the keys, on failure keeps them.
    async fn refresh(&self) {
        let result = self.fetch().await;
        let now = Instant::now();
        let mut cache = self.cache.write().expect("not poisoned");
        cache.attempted = Some(now);
        match result {
            Ok(keys) => {
                tracing::info!(
                    jwks_url = %self.settings.jwks_url,
                    keys = keys.len(),
                    "token signing keys fetched"
                );
                cache.keys = keys;
                cache.fetched = Some(now);
                cache.failure = None;
            }
            Err(failure) => {
                tracing::warn!(
                    jwks_url = %self.settings.jwks_url,
                    error = %failure,
                    known_keys = cache.keys.len(),
                    "token signing keys could not be fetched"
                );
                cache.failure = Some(failure);
            }
        }
    }

    async fn fetch(&self) -> Result<HashMap<String, Arc<Key>>, String> {
        metrics::counter!("jwks_fetches_total").increment(1);
        let mut response = self
            .http
            .get(self.settings.jwks_url.clone())
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| describe(&e))?;
        if !response.status().is_success() {
            return Err(format!("the JWKS endpoint answered {}", response.status()));
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(|e| describe(&e))? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err(format!("the JWKS exceeds {MAX_JWKS_BYTES} bytes"));
            }
            body.extend_from_slice(&chunk);
        }
        #[derive(Deserialize)]
        struct Set {
            keys: Vec<serde_json::Value>,
        }
        let set: Set = serde_json::from_slice(&body)
            .map_err(|_| "the JWKS is not a JSON key set".to_owned())?;
        let mut keys = HashMap::new();
        // Entries this service cannot use (encryption keys, other key types) are skipped.
        for value in set.keys {
            let Ok(jwk) = serde_json::from_value::<Jwk>(value) else {
                continue;
            };
            if matches!(&jwk.common.public_key_use, Some(u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            let Some(kid) = jwk.common.key_id.clone() else {
                continue;
            };
            if matches!(
                jwk.algorithm,
                jsonwebtoken::jwk::AlgorithmParameters::OctetKey(_)
            ) {
                continue;
            }
            let Ok(decoding) = DecodingKey::from_jwk(&jwk) else {
                continue;
            };
            let alg = jwk.common.key_algorithm.map(|a| a.to_string());
            keys.insert(kid, Arc::new(Key { decoding, alg }));
        }
        Ok(keys)
    }
}

/// A reqwest error without the chain's noise (the URL is ours, never the token).
fn describe(error: &reqwest::Error) -> String {
    if error.is_timeout() {
        "the JWKS endpoint timed out".into()
    } else if error.is_connect() {
        "the JWKS endpoint is unreachable".into()
    } else {
        format!("the JWKS fetch failed: {error}")
    }
}

/// A fixed, caller-safe reason (`jsonwebtoken`'s own messages may quote claim values).
fn reason(kind: &jsonwebtoken::errors::ErrorKind) -> &'static str {
    use jsonwebtoken::errors::ErrorKind as K;
    match kind {
        K::InvalidSignature => "the signature does not verify",
        K::ExpiredSignature => "the token has expired",
        K::ImmatureSignature => "the token is not valid yet (nbf)",
        K::InvalidIssuer => "the token's issuer is not accepted",
        K::InvalidAudience => "the token's audience is not accepted",
        K::MissingRequiredClaim(_) => "the token lacks a required claim (exp, iss or aud)",
        K::InvalidClaimFormat(_) => "a token claim has the wrong type",
        K::InvalidAlgorithm | K::MissingAlgorithm | K::InvalidKeyFormat => {
            "the token's algorithm does not match its key"
        }
        _ => "the token is malformed",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jwt_shape() {
        assert!(looks_like_jwt("eyJh.eyJz.c2ln"));
        assert!(looks_like_jwt("a-_b.c.d"));
        assert!(!looks_like_jwt("frontend-key-0123456789"));
        assert!(!looks_like_jwt("a.b"));
        assert!(!looks_like_jwt("a.b.c.d"));
        assert!(!looks_like_jwt("a..c"));
        assert!(!looks_like_jwt("a.b.c="));
        assert!(!looks_like_jwt("a.b+.c"));
    }
}
