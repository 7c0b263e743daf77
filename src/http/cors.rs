//! CORS for `api.cors_allowed_origins` (none: no CORS layer, browsers refuse cross-origin use).
//!
//! tower-http's layer answers every preflight itself, `200` with an empty body, and shows a
//! refusal only by leaving `Access-Control-Allow-Origin` out. A preflight from an origin that
//! is not listed is answered here instead, before that layer: `403 origin-not-allowed` as a
//! problem document, like every other refusal. An `OPTIONS` that is no preflight but a
//! CloudEvents webhook handshake (`WebHook-Request-Origin`, no `Access-Control-Request-Method`)
//! passes the layer by, to the routes (`/events/storage` answers it).

use std::task::{Context, Poll};
use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, Method, header};
use axum::response::{IntoResponse, Response};
use futures::future::{Either, Ready, ready};
use tower::util::Oneshot;
use tower::{Layer, Service, ServiceExt};
use tower_http::cors::{AllowOrigin, CorsLayer};

use super::REQUEST_ID;
use super::problem::{Kind, Problem};

/// The CORS layer, or None when no origin is configured.
pub fn layer(origins: &[String]) -> Option<Cors> {
    if origins.is_empty() {
        return None;
    }
    let any = origins.iter().any(|o| o == "*");
    let listed: Vec<HeaderValue> = origins
        .iter()
        .filter_map(|o| HeaderValue::from_str(o).ok())
        .collect();
    let allow = if any {
        AllowOrigin::any()
    } else {
        AllowOrigin::list(listed.clone())
    };
    let cors = CorsLayer::new()
        .allow_origin(allow)
        .allow_methods([Method::GET, Method::HEAD, Method::POST, Method::DELETE])
        .allow_headers([
            header::CONTENT_TYPE,
            header::IF_NONE_MATCH,
            header::AUTHORIZATION,
            HeaderName::from_static("x-api-key"),
            REQUEST_ID.clone(),
        ])
        .expose_headers([
            header::ETAG,
            header::CACHE_CONTROL,
            header::RETRY_AFTER,
            header::LOCATION,
            REQUEST_ID.clone(),
        ])
        .max_age(Duration::from_secs(600));
    Some(Cors {
        cors,
        listed: (!any).then(|| listed.into()),
    })
}

/// tower-http's CORS, with preflights from unlisted origins refused first.
#[derive(Clone)]
pub struct Cors {
    cors: CorsLayer,
    /// The listed origins; None: any origin.
    listed: Option<std::sync::Arc<[HeaderValue]>>,
}

impl<S: Clone> Layer<S> for Cors {
    type Service = CorsService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        CorsService {
            inner: self.cors.layer(inner.clone()),
            plain: inner,
            listed: self.listed.clone(),
        }
    }
}

#[derive(Clone)]
pub struct CorsService<S> {
    inner: tower_http::cors::Cors<S>,
    /// The same service without CORS, for webhook handshakes.
    plain: S,
    listed: Option<std::sync::Arc<[HeaderValue]>>,
}

static WEBHOOK_REQUEST_ORIGIN: HeaderName = HeaderName::from_static("webhook-request-origin");

/// An `OPTIONS` asking a webhook's consent (CloudEvents abuse protection), not a preflight.
fn is_webhook_handshake(request: &Request) -> bool {
    request.method() == Method::OPTIONS
        && request.headers().contains_key(&WEBHOOK_REQUEST_ORIGIN)
        && !request
            .headers()
            .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
}

impl<S> CorsService<S> {
    /// A preflight (`OPTIONS` with `Origin` and `Access-Control-Request-Method`) from an origin
    /// that is not listed.
    fn refused(&self, request: &Request) -> bool {
        let Some(listed) = &self.listed else {
            return false;
        };
        if request.method() != Method::OPTIONS
            || !request
                .headers()
                .contains_key(header::ACCESS_CONTROL_REQUEST_METHOD)
        {
            return false;
        }
        request
            .headers()
            .get(header::ORIGIN)
            .is_some_and(|origin| !listed.contains(origin))
    }
}

impl<S> Service<Request> for CorsService<S>
where
    S: Service<Request, Response = Response> + Clone,
    tower_http::cors::Cors<S>: Service<Request, Response = Response, Error = S::Error>,
{
    type Response = Response;
    type Error = <tower_http::cors::Cors<S> as Service<Request>>::Error;
    type Future = Either<
        Ready<Result<Response, Self::Error>>,
        Either<<tower_http::cors::Cors<S> as Service<Request>>::Future, Oneshot<S, Request>>,
    >;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request) -> Self::Future {
        if self.refused(&request) {
            let mut response = Problem::new(
                Kind::OriginNotAllowed,
                "this origin may not call the API from a browser (api.cors_allowed_origins)",
            )
            .into_response();
            response.headers_mut().insert(
                header::VARY,
                HeaderValue::from_static(
                    "origin, access-control-request-method, access-control-request-headers",
                ),
            );
            return Either::Left(ready(Ok(response)));
        }
        if is_webhook_handshake(&request) {
            return Either::Right(Either::Right(self.plain.clone().oneshot(request)));
        }
        Either::Right(Either::Left(self.inner.call(request)))
    }
}
