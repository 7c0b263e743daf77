//! JSON request bodies, with problem+json rejections: `415` when the body is not JSON, `413`
//! past the route's body limit (`DefaultBodyLimit`), `400 invalid-body` naming what is wrong
//! without echoing the caller's bytes.

use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::{HeaderMap, StatusCode, header};
use serde::de::DeserializeOwned;

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
