//! Who may call what: API keys (stored as SHA-256, compared in constant time, several active
//! for rotation) and, when `auth.jwt` is set, Entra ID bearer tokens ([`jwt`]) per route group,
//! and a per-identity rate limit.
//!
//! Groups: `public` (the demo page, the spec, `/healthz`, local sample files — an `<img>`
//! cannot send a key), `ops` (`/readyz`, `/metrics`), `admin` (cache invalidation: always a
//! key or token with the admin role), `api` (everything else).
//!
//! `auth.api = "api-key"` (likewise `auth.ops`) means "a credential with the group's role is
//! required": an API key, or, when `auth.jwt` is configured, an Entra ID token whose app roles
//! or scopes map to that role. `Authorization: Bearer X` is an API key when X is one; else, when
//! `auth.jwt` is configured and X has the JWT form (three base64url parts), it is validated as
//! a token; else it is a wrong key. `x-api-key` is always a key.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{ConnectInfo, Request, State};
use axum::http::{HeaderValue, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};

use super::problem::{Kind, Problem};
use crate::config::{AuthMode, AuthSettings, RateLimitSettings, Role};

#[path = "jwt.rs"]
pub mod jwt;
pub use jwt::{Claims, JwtError, JwtSettings, JwtValidator};

/// Who is calling: a key's name, a token's subject, or the client address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Identity {
    Key {
        name: String,
        roles: Vec<Role>,
    },
    /// A valid Entra ID token: its `oid` (else `sub`) and the roles its claims map to.
    Token {
        subject: String,
        roles: Vec<Role>,
    },
    Anonymous {
        addr: Option<std::net::IpAddr>,
    },
}

impl Identity {
    /// The rate-limit bucket (never the key or token itself).
    fn bucket(&self) -> String {
        match self {
            Identity::Key { name, .. } => format!("key:{name}"),
            Identity::Token { subject, .. } => format!("sub:{subject}"),
            Identity::Anonymous { addr: Some(ip) } => format!("ip:{ip}"),
            Identity::Anonymous { addr: None } => "anonymous".into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Group {
    Public,
    Ops,
    Admin,
    Api,
}

fn group(method: &Method, path: &str) -> Group {
    match path {
        "/" | "/healthz" | "/openapi.yaml" => Group::Public,
        "/readyz" | "/metrics" => Group::Ops,
        _ if path.starts_with("/demo/") || path.starts_with("/local/") => Group::Public,
        _ if *method == Method::DELETE && path.ends_with("/cache") => Group::Admin,
        // Generation is a write; job states belong to whoever may generate.
        _ if (*method == Method::POST && path.ends_with("/thumbnails:generate"))
            || ((*method == Method::GET || *method == Method::HEAD)
                && path.starts_with("/jobs/")) =>
        {
            Group::Admin
        }
        _ => Group::Api,
    }
}

struct Key {
    name: String,
    hash: [u8; 32],
    roles: Vec<Role>,
}

pub struct Guard {
    keys: Vec<Key>,
    jwt: Option<JwtValidator>,
    api: AuthMode,
    ops: AuthMode,
    limiter: Option<RateLimiter>,
}

impl Guard {
    /// API keys only.
    pub fn new(auth: &AuthSettings, rate: &RateLimitSettings) -> Self {
        Self::with_jwt(auth, rate, None)
    }

    /// API keys, and Entra ID bearer tokens when `jwt` is given.
    pub fn with_jwt(
        auth: &AuthSettings,
        rate: &RateLimitSettings,
        jwt: Option<JwtValidator>,
    ) -> Self {
        let keys = auth
            .api_keys
            .iter()
            .map(|k| {
                let mut hash = [0u8; 32];
                for (i, byte) in hash.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&k.sha256[2 * i..2 * i + 2], 16)
                        .expect("validated as hex");
                }
                Key {
                    name: k.name.clone(),
                    hash,
                    roles: k.roles.clone(),
                }
            })
            .collect();
        Self {
            keys,
            jwt,
            api: auth.api,
            ops: auth.ops,
            limiter: (rate.requests_per_second > 0.0)
                .then(|| RateLimiter::new(rate.requests_per_second, rate.burst)),
        }
    }

    /// The key's holder, comparing the presented key's hash with every configured one in
    /// constant time (no early exit on the first match either).
    fn identify(&self, presented: &str) -> Option<&Key> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            let diff = key
                .hash
                .iter()
                .zip(digest.iter())
                .fold(0u8, |acc, (a, b)| acc | (a ^ b));
            if diff == 0 {
                found = Some(key);
            }
        }
        found
    }
}

static X_API_KEY: axum::http::HeaderName = axum::http::HeaderName::from_static("x-api-key");

/// `x-api-key: KEY` or `Authorization: Bearer KEY`.
fn presented_key(request: &Request) -> Option<&str> {
    if let Some(v) = request.headers().get(&X_API_KEY) {
        return v.to_str().ok();
    }
    let auth = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = auth.split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
}

fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(Kind::Unauthorized, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ams-thumbnails\""),
    );
    response
}

/// RFC 6750 challenge for a token that was refused (`error` is `invalid_token` or
/// `insufficient_scope`); `description` is one of the fixed, token-free reasons.
fn bearer_challenge(mut response: Response, error: &str, description: &str) -> Response {
    let value = format!(
        "Bearer realm=\"ams-thumbnails\", error=\"{error}\", error_description=\"{description}\""
    );
    if let Ok(value) = HeaderValue::from_str(&value) {
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, value);
    }
    response
}

/// What the caller presented.
enum Credential<'a> {
    None,
    Key(&'a str),
    Token(&'a str),
}

impl Guard {
    fn credential<'a>(&self, request: &'a Request) -> Credential<'a> {
        let bearer = request.headers().get(&X_API_KEY).is_none();
        match presented_key(request) {
            None => Credential::None,
            Some(value)
                if bearer
                    && self.jwt.is_some()
                    && jwt::looks_like_jwt(value)
                    && self.identify(value).is_none() =>
            {
                Credential::Token(value)
            }
            Some(value) => Credential::Key(value),
        }
    }
}

/// What the synchronous part of the guard decided.
pub(crate) enum Check {
    /// Let the request through (its identity is in its extensions).
    Pass,
    /// Answer with this refusal.
    Refuse(Response),
    /// A bearer token must be validated first (an await): see [`Guard::check_async`].
    Token,
}

impl Guard {
    /// The guard's decision when it needs no await: anything but a bearer token to validate.
    pub(crate) fn check(&self, request: &mut Request) -> Check {
        let identity = match self.credential(request) {
            Credential::Key(presented) => match self.identify(presented) {
                Some(key) => Identity::Key {
                    name: key.name.clone(),
                    roles: key.roles.clone(),
                },
                // A wrong key is refused even where none is needed: it is a caller's mistake.
                None => return Check::Refuse(unauthorized("the API key is not valid")),
            },
            Credential::Token(_) => return Check::Token,
            Credential::None => Identity::Anonymous {
                addr: client_addr(request),
            },
        };
        self.admit(request, identity)
    }

    /// The whole decision, bearer tokens included (never [`Check::Token`]).
    pub(crate) async fn check_async(&self, request: &mut Request) -> Check {
        let Credential::Token(token) = self.credential(request) else {
            return self.check(request);
        };
        let validator = self
            .jwt
            .as_ref()
            .expect("tokens only when JWT is configured");
        let identity = match validator.validate(token).await {
            Ok(claims) => Identity::Token {
                subject: claims.subject,
                roles: claims.roles,
            },
            // Like a wrong key: refused even where no credential is needed.
            Err(JwtError::Invalid(reason)) => {
                tracing::info!(reason, "bearer token refused");
                return Check::Refuse(bearer_challenge(
                    Problem::new(
                        Kind::Unauthorized,
                        format!("the bearer token is not valid: {reason}"),
                    )
                    .into_response(),
                    "invalid_token",
                    reason,
                ));
            }
            Err(JwtError::Unavailable(why)) => {
                tracing::warn!(error = %why, "bearer token not checked: no signing keys");
                return Check::Refuse(
                    Problem::new(
                        Kind::UpstreamUnavailable,
                        "the token issuer's signing keys cannot be fetched; try again later",
                    )
                    .into_response(),
                );
            }
        };
        self.admit(request, identity)
    }

    /// Roles and rate limit for a known identity, which then goes into the request's
    /// extensions.
    fn admit(&self, request: &mut Request, identity: Identity) -> Check {
        let group = group(request.method(), request.uri().path());
        let needed = match group {
            Group::Public => None,
            Group::Ops => (self.ops == AuthMode::ApiKey).then_some(Role::Ops),
            Group::Api => (self.api == AuthMode::ApiKey).then_some(Role::Api),
            Group::Admin => Some(Role::Admin),
        };
        if let Some(role) = needed {
            match &identity {
                Identity::Anonymous { .. } if self.jwt.is_some() => {
                    return Check::Refuse(unauthorized(
                        "this route needs an API key (x-api-key or Authorization: Bearer) or an \
                         Entra ID bearer token",
                    ));
                }
                Identity::Anonymous { .. } => {
                    return Check::Refuse(unauthorized(
                        "this route needs an API key (x-api-key or Authorization: Bearer)",
                    ));
                }
                Identity::Key { roles, .. } if !roles.contains(&role) => {
                    return Check::Refuse(
                        Problem::new(Kind::Forbidden, format!("this key lacks the {role:?} role"))
                            .into_response(),
                    );
                }
                Identity::Token { roles, .. } if !roles.contains(&role) => {
                    let response = Problem::new(
                        Kind::Forbidden,
                        format!("this token's roles and scopes do not grant the {role:?} role"),
                    )
                    .into_response();
                    return Check::Refuse(bearer_challenge(
                        response,
                        "insufficient_scope",
                        "the token does not grant this route's role",
                    ));
                }
                Identity::Key { .. } | Identity::Token { .. } => {}
            }
        }
        if group != Group::Public
            && let Some(limiter) = &self.limiter
            && let Err(retry_after) = limiter.check(&identity.bucket())
        {
            metrics::counter!("http_requests_rate_limited_total").increment(1);
            let mut problem = Problem::new(Kind::RateLimited, "too many requests from this client");
            problem.retry_after = Some(retry_after);
            return Check::Refuse(problem.into_response());
        }
        match &identity {
            Identity::Key { name, .. } => {
                tracing::Span::current().record("client", name.as_str());
            }
            Identity::Token { subject, .. } => {
                tracing::Span::current().record("client", subject.as_str());
            }
            Identity::Anonymous { .. } => {}
        }
        request.extensions_mut().insert(identity);
        Check::Pass
    }
}

fn client_addr(request: &Request) -> Option<std::net::IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}

/// The guard as an axum middleware (`middleware::from_fn_with_state`). The service itself runs
/// the same checks inside its one middleware service (`http::gate`).
pub async fn authenticate(
    State(guard): State<Arc<Guard>>,
    mut request: Request,
    next: Next,
) -> Response {
    let checked = match guard.check(&mut request) {
        Check::Token => guard.check_async(&mut request).await,
        checked => checked,
    };
    match checked {
        Check::Refuse(response) => response,
        Check::Pass | Check::Token => next.run(request).await,
    }
}

/// Token buckets per identity: `rate` tokens a second, up to `burst`.
struct RateLimiter {
    rate: f64,
    burst: f64,
    buckets: Mutex<HashMap<String, (f64, Instant)>>,
}

/// Buckets not touched for this long are dropped (they would be full again anyway).
const IDLE: Duration = Duration::from_secs(300);
/// At most this many clients are tracked; a flood of new addresses evicts idle ones first.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    fn new(rate: f64, burst: u32) -> Self {
        Self {
            rate,
            burst: f64::from(burst.max(1)),
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes a token, or says how long until one is available.
    fn check(&self, bucket: &str) -> Result<(), Duration> {
        let now = Instant::now();
        let mut buckets = self.buckets.lock().expect("not poisoned");
        if buckets.len() >= MAX_BUCKETS && !buckets.contains_key(bucket) {
            buckets.retain(|_, (_, seen)| now.duration_since(*seen) < IDLE);
            if buckets.len() >= MAX_BUCKETS {
                return Err(Duration::from_secs(1));
            }
        }
        let (tokens, last) = buckets
            .entry(bucket.to_owned())
            .or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*last).as_secs_f64() * self.rate).min(self.burst);
        *last = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - *tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups() {
        assert_eq!(group(&Method::GET, "/healthz"), Group::Public);
        assert_eq!(group(&Method::GET, "/local/a/b.jpg"), Group::Public);
        assert_eq!(group(&Method::GET, "/metrics"), Group::Ops);
        assert_eq!(group(&Method::DELETE, "/assets/x/cache"), Group::Admin);
        assert_eq!(
            group(&Method::POST, "/assets/x/thumbnails:generate"),
            Group::Admin
        );
        assert_eq!(group(&Method::GET, "/jobs/ams-thumbnails-1"), Group::Admin);
        assert_eq!(group(&Method::GET, "/assets/x/thumbnails"), Group::Api);
        assert_eq!(group(&Method::POST, "/assets:batchGet"), Group::Api);
    }

    #[test]
    fn token_bucket() {
        let limiter = RateLimiter::new(10.0, 3);
        for _ in 0..3 {
            assert!(limiter.check("a").is_ok());
        }
        let wait = limiter.check("a").unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(limiter.check("b").is_ok(), "buckets are per identity");
    }
}
