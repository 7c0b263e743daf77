//! `POST /events/storage` and `OPTIONS /events/storage`: Azure Event Grid delivers the Blob
//! Storage events of a system topic here, and the cache drops what they change at once.
//!
//! - The handshakes: an Event Grid schema `SubscriptionValidationEvent` is answered with
//!   `{"validationResponse": code}`; a CloudEvents abuse-protection `OPTIONS` with
//!   `WebHook-Request-Origin` is answered with `WebHook-Allowed-Origin` (that origin) and
//!   `WebHook-Allowed-Rate: *`.
//! - A delivery (either schema, one event or a batch) becomes the set of containers whose
//!   blobs changed ([`parse`]); for each, once per delivery, the resolver drops every entry
//!   whose blobs are there, and every id the catalog maps to it (one cached as "not found" is
//!   known by its id only). Other event types, and containers nothing is cached for, are
//!   acknowledged and change nothing; a replayed delivery only invalidates again.
//!
//! Who may call is the route's `Access::Events` ([`access`]), checked by the gate before the
//! body is read.

pub mod access;
pub mod parse;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::AppState;
use super::problem::{Kind, Problem};
use parse::{Delivery, EventKind, Malformed};

pub use access::EventsGuard;

/// The media types a delivery may come as.
const MEDIA_TYPES: [&str; 3] = [
    "application/json",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
];

static WEBHOOK_REQUEST_ORIGIN: HeaderName = HeaderName::from_static("webhook-request-origin");
static WEBHOOK_ALLOWED_ORIGIN: HeaderName = HeaderName::from_static("webhook-allowed-origin");
static WEBHOOK_ALLOWED_RATE: HeaderName = HeaderName::from_static("webhook-allowed-rate");

impl<S: Send + Sync> FromRequest<S> for Delivery {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_event_media_type(request.headers()) {
            return Err(Problem::new(
                Kind::UnsupportedMediaType,
                "the body must be application/json (Event Grid schema), \
                 application/cloudevents+json or application/cloudevents-batch+json",
            ));
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(
                        Kind::PayloadTooLarge,
                        format!(
                            "the delivery is larger than {} KiB; lower the event subscription's \
                             preferred batch size",
                            super::MAX_BODY_BYTES / 1024
                        ),
                    )
                } else {
                    Problem::new(Kind::InvalidBody, "the request body could not be read")
                }
            })?;
        Delivery::parse(&body).map_err(|Malformed(why)| Problem::new(Kind::MalformedEvent, why))
    }
}

fn is_event_media_type(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| MEDIA_TYPES.iter().any(|m| v.trim().eq_ignore_ascii_case(m)))
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ValidationResponse {
    validation_response: String,
}

/// What a delivery did.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Accepted {
    /// Events in the delivery.
    events: usize,
    /// Distinct containers whose cached assets were dropped.
    containers: usize,
}

/// `POST /events/storage`.
pub async fn receive(State(state): State<AppState>, delivery: Delivery) -> Response {
    let changes = match delivery {
        Delivery::Validation { code } => {
            metrics::counter!("storage_events_total", "type" => EventKind::SubscriptionValidation.label())
                .increment(1);
            tracing::info!("Event Grid subscription validated");
            return axum::Json(ValidationResponse {
                validation_response: code,
            })
            .into_response();
        }
        Delivery::Changes(changes) => changes,
    };
    for kind in EventKind::ALL {
        let n = changes.counts[kind.index()];
        if n > 0 {
            metrics::counter!("storage_events_total", "type" => kind.label()).increment(n as u64);
        }
    }
    let catalog = &state.resolver.backend().catalog;
    let mut assets = 0;
    for changed in &changes.containers {
        state
            .resolver
            .invalidate_container(&changed.account, &changed.container)
            .await;
        let ids = catalog.assets_in(&changed.account, &changed.container);
        for id in &ids {
            state.resolver.invalidate(id).await;
        }
        assets += ids.len();
    }
    metrics::counter!("storage_event_invalidations_total", "scope" => "container")
        .increment(changes.containers.len() as u64);
    metrics::counter!("storage_event_invalidations_total", "scope" => "asset")
        .increment(assets as u64);
    tracing::info!(
        events = changes.events(),
        containers = changes.containers.len(),
        asset_ids = assets,
        "storage events applied"
    );
    (
        [(header::CACHE_CONTROL, HeaderValue::from_static("no-store"))],
        axum::Json(Accepted {
            events: changes.events(),
            containers: changes.containers.len(),
        }),
    )
        .into_response()
}

/// `OPTIONS /events/storage`: the CloudEvents webhook abuse-protection handshake.
pub async fn handshake(headers: HeaderMap) -> Response {
    let mut response = StatusCode::OK.into_response();
    let answer = response.headers_mut();
    answer.insert(header::ALLOW, HeaderValue::from_static("POST, OPTIONS"));
    if let Some(origin) = headers.get(&WEBHOOK_REQUEST_ORIGIN) {
        // The origin as asked (a DNS name: visible ASCII), else any.
        let usable = !origin.is_empty() && origin.as_bytes().iter().all(u8::is_ascii_graphic);
        let allowed = if usable {
            origin.clone()
        } else {
            HeaderValue::from_static("*")
        };
        answer.insert(WEBHOOK_ALLOWED_ORIGIN.clone(), allowed);
        answer.insert(WEBHOOK_ALLOWED_RATE.clone(), HeaderValue::from_static("*"));
    }
    response
}
