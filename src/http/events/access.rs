//! Who may deliver events ([`crate::http::routes::Access::Events`]): a delivery proves itself
//! with the shared secret in `?code=` or, when `[events.entra]` is set, with the Entra ID token
//! Event Grid sends for an Entra-protected webhook (`Authorization: Bearer`), validated by the
//! same JWT validator as the API's tokens, for the events audience and app roles. Either
//! configured credential, valid, lets a delivery in; a presented bearer token is what is
//! judged when tokens are configured. While `events.enabled` is off the route answers as if it
//! did not exist.
//!
//! Answers never carry the secret or the token; the secret is compared as a SHA-256 digest in
//! constant time.

use axum::extract::Request;
use axum::http::header;
use axum::response::IntoResponse;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::super::auth::{Check, JwtValidator, bearer_challenge, token_refused, unauthorized};
use super::super::problem::{Kind, Problem};
use crate::config::{EventsSettings, Role, SECRET_PARAMETER};

/// The events route's credential check (cheap to share: keep one, in the auth guard).
#[derive(Debug, Default)]
pub struct EventsGuard {
    enabled: bool,
    /// SHA-256 of `events.secret`.
    secret: Option<[u8; 32]>,
    /// For `[events.entra]`: its audiences, and its roles as the `api` role.
    entra: Option<JwtValidator>,
}

impl EventsGuard {
    /// `entra` is the validator built for `events.jwt_settings(...)`, when `[events.entra]` is
    /// set.
    pub fn new(settings: &EventsSettings, entra: Option<JwtValidator>) -> Self {
        Self {
            enabled: settings.enabled,
            secret: settings
                .secret
                .as_ref()
                .map(|s| Sha256::digest(s.expose().as_bytes()).into()),
            entra,
        }
    }

    pub(crate) fn enabled(&self) -> bool {
        self.enabled
    }

    /// The decision when it needs no await: anything but a bearer token to validate.
    pub(crate) fn check(&self, request: &Request) -> Check {
        if !self.enabled {
            return Check::Refuse(
                Problem::new(
                    Kind::RouteNotFound,
                    "no route matches this path; see /openapi.yaml",
                )
                .into_response(),
            );
        }
        if self.entra.is_some() && bearer(request).is_some() {
            return Check::Token;
        }
        if let Some(digest) = &self.secret {
            match presented_secret(request) {
                Some(presented) => {
                    let presented: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
                    return if bool::from(presented.ct_eq(digest)) {
                        Check::Pass
                    } else {
                        Check::Refuse(unauthorized("the delivery's code is not valid"))
                    };
                }
                None if self.entra.is_none() => {
                    return Check::Refuse(unauthorized(
                        "this route needs the events secret in the `code` query parameter",
                    ));
                }
                None => {}
            }
        }
        Check::Refuse(unauthorized(if self.secret.is_some() {
            "this route needs the events secret in the `code` query parameter, or an Entra ID \
             bearer token for the events audience"
        } else {
            "this route needs an Entra ID bearer token for the events audience"
        }))
    }

    /// The bearer token to validate (when [`Self::check`] says [`Check::Token`]).
    pub(crate) fn token(&self, request: &Request) -> Option<String> {
        if !self.enabled || self.entra.is_none() {
            return None;
        }
        bearer(request).map(str::to_owned)
    }

    /// The decision on a bearer token (from [`Self::token`]).
    pub(crate) async fn validate(&self, token: &str) -> Check {
        let Some(validator) = &self.entra else {
            return Check::Refuse(unauthorized(
                "this route takes no bearer token; it needs the events secret",
            ));
        };
        match validator.validate(token).await {
            Ok(claims) if claims.roles.contains(&Role::Api) => {
                tracing::Span::current().record("client", claims.subject.as_str());
                Check::Pass
            }
            Ok(_) => Check::Refuse(bearer_challenge(
                Problem::new(
                    Kind::Forbidden,
                    "this token's app roles do not include one events.entra.roles names",
                )
                .into_response(),
                "insufficient_scope",
                "the token does not carry an events role",
            )),
            Err(e) => Check::Refuse(token_refused(e, "events bearer token")),
        }
    }
}

/// `Authorization: Bearer X` -> X.
fn bearer(request: &Request) -> Option<&str> {
    let value = request
        .headers()
        .get(header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// The `code` query parameter, percent-decoded (the last one, if repeated).
fn presented_secret(request: &Request) -> Option<String> {
    let query = request.uri().query()?;
    url::form_urlencoded::parse(query.as_bytes())
        .filter(|(name, _)| name == SECRET_PARAMETER)
        .map(|(_, value)| value.into_owned())
        .last()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn guard(enabled: bool, secret: Option<&str>) -> EventsGuard {
        EventsGuard::new(
            &EventsSettings {
                enabled,
                secret: secret.map(Secret::new),
                ..Default::default()
            },
            None,
        )
    }

    fn status(guard: &EventsGuard, uri: &str) -> u16 {
        let request = Request::post(uri)
            .header("authorization", "Bearer a.b.c")
            .body(axum::body::Body::empty())
            .unwrap();
        match guard.check(&request) {
            Check::Pass => 200,
            Check::Refuse(response) => response.status().as_u16(),
            Check::Token => 0,
        }
    }

    #[test]
    fn the_secret_opens_the_route_and_nothing_else_does() {
        let g = guard(true, Some("s3cret+value/0123456789"));
        assert_eq!(
            status(&g, "/events/storage?code=s3cret%2Bvalue%2F0123456789"),
            200
        );
        assert_eq!(
            status(&g, "/events/storage?x=1&code=s3cret%2Bvalue%2F0123456789"),
            200
        );
        assert_eq!(status(&g, "/events/storage?code=s3cret"), 401);
        assert_eq!(
            status(&g, "/events/storage?key=s3cret+value/0123456789"),
            401
        );
        // Without [events.entra], a bearer token is no credential here.
        assert_eq!(status(&g, "/events/storage"), 401);
        assert_eq!(
            status(
                &guard(false, Some("s3cret+value/0123456789")),
                "/events/storage"
            ),
            404
        );
    }
}
