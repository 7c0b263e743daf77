//! Request bodies: read by the gate before a request takes a slot, under their own deadline
//! and minimum rate ([`read_body`]); and JSON bodies, with problem+json rejections: `415` when
//! the body is not JSON, `413` past the route's body limit (`DefaultBodyLimit`),
//! `400 invalid-body` naming what is wrong without echoing the caller's bytes.

use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

use super::MAX_BODY_BYTES;
use super::problem::{Kind, Problem};

/// A JSON body type and how its problems read.
pub trait JsonBody: DeserializeOwned {
    /// The `400`'s detail for JSON of the wrong shape ("the body ...").
    const WRONG_SHAPE: &'static str;
    /// The `400`'s detail for a body that is not JSON at all ("the body ...").
    const NOT_JSON: &'static str;

    /// The value of an empty body, when the body is optional.
    fn when_empty() -> Option<Self> {
        None
    }
}

/// A body parsed as `T`.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: JsonBody> FromRequest<S> for Json<T> {
    type Rejection = Problem;

    async fn from_request(request: Request, state: &S) -> Result<Self, Self::Rejection> {
        let json = is_json(request.headers());
        // A body that must be there and is not JSON is refused before it is read.
        if !json && T::when_empty().is_none() {
            return Err(not_json());
        }
        let body = Bytes::from_request(request, state)
            .await
            .map_err(|rejection| {
                if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    Problem::new(Kind::PayloadTooLarge, "the request body is too large")
                } else {
                    Problem::new(Kind::InvalidBody, "the request body could not be read")
                }
            })?;
        if body.iter().all(u8::is_ascii_whitespace)
            && let Some(empty) = T::when_empty()
        {
            return Ok(Self(empty));
        }
        if !json {
            return Err(not_json());
        }
        serde_json::from_slice(&body).map(Self).map_err(|e| {
            let what = match e.classify() {
                serde_json::error::Category::Data => T::WRONG_SHAPE,
                _ => T::NOT_JSON,
            };
            Problem::new(Kind::InvalidBody, format!("the body {what}"))
        })
    }
}

fn not_json() -> Problem {
    Problem::new(
        Kind::UnsupportedMediaType,
        "the body must be application/json",
    )
}

/// Whether the request says its body is JSON (`application/json`, with any parameters).
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"))
}

/// `server.body_read_timeout` and `server.body_min_rate`.
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimits {
    pub timeout: Duration,
    pub min_rate: u64,
}

/// Reads the whole body (at most [`MAX_BODY_BYTES`] + 1 bytes: past that, the route's own limit
/// answers `413`) within the body deadline, and at the minimum rate after the first second.
pub(super) async fn read_body(request: Request, limits: BodyLimits) -> Result<Request, Response> {
    use futures::StreamExt;
    let (parts, body) = request.into_parts();
    let started = tokio::time::Instant::now();
    let deadline = started + limits.timeout;
    let mut stream = body.into_data_stream();
    let mut bytes = bytes::BytesMut::new();
    loop {
        let by = match limits.min_rate {
            0 => deadline,
            rate => deadline.min(
                started
                    + Duration::from_secs(1)
                    + Duration::from_secs_f64(bytes.len() as f64 / rate as f64),
            ),
        };
        match tokio::time::timeout_at(by, stream.next()).await {
            Ok(None) => break,
            Ok(Some(Ok(chunk))) => {
                bytes.extend_from_slice(&chunk);
                if bytes.len() > MAX_BODY_BYTES {
                    break;
                }
            }
            Ok(Some(Err(_))) => {
                return Err(
                    Problem::new(Kind::InvalidBody, "the request body could not be read")
                        .into_response(),
                );
            }
            Err(_) => {
                let detail = if by < deadline {
                    format!(
                        "the request body arrived slower than {} bytes/s",
                        limits.min_rate
                    )
                } else {
                    format!(
                        "the request body took longer than {}s",
                        limits.timeout.as_secs_f64()
                    )
                };
                let mut response = Problem::new(Kind::BodyTimeout, detail).into_response();
                // The rest of the body is not read: the connection cannot carry another request.
                response
                    .headers_mut()
                    .insert(header::CONNECTION, HeaderValue::from_static("close"));
                return Err(response);
            }
        }
    }
    Ok(Request::from_parts(
        parts,
        axum::body::Body::from(bytes.freeze()),
    ))
}
