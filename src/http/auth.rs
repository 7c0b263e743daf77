//! Who may call what: API keys (stored as SHA-256, compared in constant time, several active
//! for rotation) and, when `auth.jwt` is set, Entra ID bearer tokens ([`jwt`]) per route group,
//! and a per-identity rate limit.
//!
//! Which credential a route needs is its [`Access`] in the route table (`routes.rs`): the gate
//! hands the matched route's access to [`Guard::check`]; nothing here looks at paths.
//!
//! `auth.api = "api-key"` (likewise `auth.ops`) means "a credential with the group's role is
//! required": an API key, or, when `auth.jwt` is configured, an Entra ID token whose app roles
//! or scopes map to that role. `Authorization: Bearer X` is an API key when X is one; else, when
//! `auth.jwt` is configured and X has the JWT form (three base64url parts), it is validated as
//! a token; else it is a wrong key. `x-api-key` is always a key.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::events::EventsGuard;
use super::problem::{Kind, Problem};
use super::rate_limit::{AuthFailures, RateLimiter};
use super::routes::Access;
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
    failures: Option<AuthFailures>,
    /// `Access::Events`: the events route's own credentials.
    events: EventsGuard,
}

impl Guard {
    /// API keys, and Entra ID bearer tokens when `jwt` is given; `events` checks the events
    /// route.
    pub fn new(
        auth: &AuthSettings,
        rate: &RateLimitSettings,
        jwt: Option<JwtValidator>,
        events: EventsGuard,
    ) -> Self {
        let keys = auth
            .api_keys
            .iter()
            // A key whose digest is not 64 hex digits was refused with the settings.
            .filter_map(|k| {
                Some(Key {
                    name: k.name.clone(),
                    hash: k.digest()?,
                    roles: k.roles.clone(),
                })
            })
            .collect();
        Self {
            keys,
            jwt,
            api: auth.api,
            ops: auth.ops,
            limiter: RateLimiter::new(rate),
            failures: AuthFailures::new(rate),
            events,
        }
    }

    /// The key's holder, comparing the presented key's hash with every configured one in
    /// constant time (no early exit on the first match either).
    fn identify(&self, presented: &str) -> Option<&Key> {
        let digest: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let mut found = None;
        for key in &self.keys {
            if bool::from(key.hash.ct_eq(&digest)) {
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

pub(crate) fn unauthorized(detail: &str) -> Response {
    let mut response = Problem::new(Kind::Unauthorized, detail).into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"ams-thumbnails\""),
    );
    response
}

/// The answer to a bearer token that could not be accepted (`what` names it in the log).
pub(crate) fn token_refused(error: JwtError, what: &str) -> Response {
    match error {
        JwtError::Invalid(reason) => {
            tracing::info!(reason, "{what} refused");
            bearer_challenge(
                Problem::new(
                    Kind::Unauthorized,
                    format!("the bearer token is not valid: {reason}"),
                )
                .into_response(),
                "invalid_token",
                reason,
            )
        }
        JwtError::Unavailable(why) => {
            tracing::warn!(error = %why, "{what} not checked: no signing keys");
            Problem::new(
                Kind::UpstreamUnavailable,
                "the token issuer's signing keys cannot be fetched; try again later",
            )
            .into_response()
        }
    }
}

/// RFC 6750 challenge for a token that was refused (`error` is `invalid_token` or
/// `insufficient_scope`); `description` is one of the fixed, token-free reasons.
pub(crate) fn bearer_challenge(mut response: Response, error: &str, description: &str) -> Response {
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
    /// The guard's decision for a route of `access` when it needs no await: anything but a
    /// bearer token to validate.
    pub(crate) fn check(&self, request: &mut Request, access: Access) -> Check {
        let addr = client_addr(request);
        if access == Access::Events && !self.events.enabled() {
            return self.events.check(request);
        }
        if let Some(refused) = self.blocked(addr, access) {
            return refused;
        }
        let check = if access == Access::Events {
            self.events.check(request)
        } else {
            self.decide(request, access)
        };
        self.count_failure(addr, &check);
        check
    }

    /// An address past its failed authentications is refused on every route that checks
    /// credentials, before its credential is looked at (public routes stay open to it).
    fn blocked(&self, addr: Option<std::net::IpAddr>, access: Access) -> Option<Check> {
        if access == Access::Public {
            return None;
        }
        let wait = self.failures.as_ref()?.blocked(addr?)?;
        metrics::counter!("http_requests_rate_limited_total").increment(1);
        let mut problem = Problem::new(
            Kind::RateLimited,
            "too many failed authentications from this address",
        );
        problem.retry_after = Some(wait);
        Some(Check::Refuse(problem.into_response()))
    }

    fn count_failure(&self, addr: Option<std::net::IpAddr>, check: &Check) {
        if let (Check::Refuse(response), Some(failures), Some(addr)) = (check, &self.failures, addr)
            && response.status() == axum::http::StatusCode::UNAUTHORIZED
        {
            metrics::counter!("http_auth_failures_total").increment(1);
            failures.record(addr);
        }
    }

    /// [`Self::check`] without the failure accounting.
    fn decide(&self, request: &mut Request, access: Access) -> Check {
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
        self.admit(request, identity, access)
    }

    /// The whole decision, bearer tokens included (never [`Check::Token`]).
    pub(crate) async fn check_async(&self, request: &mut Request, access: Access) -> Check {
        if access == Access::Events {
            let addr = client_addr(request);
            if let Some(refused) = self.blocked(addr, access) {
                return refused;
            }
            let check = match self.events.token(request) {
                Some(token) => self.events.validate(&token).await,
                None => self.events.check(request),
            };
            self.count_failure(addr, &check);
            return check;
        }
        let Credential::Token(token) = self.credential(request) else {
            return self.check(request, access);
        };
        let addr = client_addr(request);
        if let Some(refused) = self.blocked(addr, access) {
            return refused;
        }
        let check = self.validate_token(request, token.to_owned(), access).await;
        self.count_failure(addr, &check);
        check
    }

    async fn validate_token(&self, request: &mut Request, token: String, access: Access) -> Check {
        let token = token.as_str();
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
            Err(e) => return Check::Refuse(token_refused(e, "bearer token")),
        };
        self.admit(request, identity, access)
    }

    /// Roles and rate limit for a known identity, which then goes into the request's
    /// extensions.
    fn admit(&self, request: &mut Request, identity: Identity, access: Access) -> Check {
        let needed = match access {
            Access::Public => None,
            Access::Ops => (self.ops == AuthMode::ApiKey).then_some(Role::Ops),
            Access::Api => (self.api == AuthMode::ApiKey).then_some(Role::Api),
            Access::Admin => Some(Role::Admin),
            // Checked by the events guard, never here; the strictest role if it ever were.
            Access::Events => Some(Role::Admin),
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
        if access != Access::Public
            && let Some(limiter) = &self.limiter
            && let Err(retry_after) = limiter.check(identity.bucket())
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

impl Guard {
    /// Charges a batch's further ids to its caller's rate limit (the gate charged the request
    /// itself as one): a batch of `ids` distinct ids costs `ids` requests.
    pub fn charge_batch(&self, identity: Option<&Identity>, ids: usize) -> Result<(), Problem> {
        let (Some(limiter), Some(identity)) = (&self.limiter, identity) else {
            return Ok(());
        };
        let extra = u32::try_from(ids.saturating_sub(1)).unwrap_or(u32::MAX);
        match limiter.check_n(&identity.bucket(), extra) {
            Some(Ok(())) => Ok(()),
            Some(Err(retry_after)) => {
                metrics::counter!("http_requests_rate_limited_total").increment(1);
                let mut problem = Problem::new(
                    Kind::RateLimited,
                    format!(
                        "a batch of {ids} ids counts as {ids} requests: too many from this client"
                    ),
                );
                problem.retry_after = Some(retry_after);
                Err(problem)
            }
            None => Err(Problem::new(
                Kind::RateLimited,
                format!(
                    "a batch of {ids} ids counts as {ids} requests, more than the rate limit's burst"
                ),
            )),
        }
    }
}

/// The client's address: [`super::client_addr`] (behind trusted proxies, the one they name),
/// else the socket peer.
fn client_addr(request: &Request) -> Option<std::net::IpAddr> {
    if let Some(super::client_addr::ClientAddr(addr)) = request.extensions().get() {
        return Some(*addr);
    }
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0.ip())
}
