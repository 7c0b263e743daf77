//! RFC 9457 problem details: every error the API returns, with a stable `type` and `code`.

use std::time::Duration;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use crate::resolver::ResolveError;
use crate::source::SourceError;

/// Media type of problem bodies.
pub const PROBLEM_JSON: &str = "application/problem+json";
/// Prefix of every problem `type` URI; the suffix is the problem's `code`.
pub const TYPE_PREFIX: &str = "urn:ams-thumbnails:problem:";

/// The kinds of problem, each with a stable code (documented in openapi.yaml).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    InvalidAssetId,
    InvalidParameter,
    AssetNotFound,
    AssetUnservable,
    ThumbnailNotFound,
    NoThumbnails,
    NoStoryboard,
    InvalidBody,
    MalformedEvent,
    PayloadTooLarge,
    UnsupportedMediaType,
    FileNotFound,
    RouteNotFound,
    MethodNotAllowed,
    UpstreamError,
    UpstreamUnavailable,
    UpstreamTimeout,
    RequestTimeout,
    Overloaded,
    Unauthorized,
    Forbidden,
    RateLimited,
    UriTooLong,
    HeadersTooLarge,
    MalformedRequest,
    BodyTimeout,
    RangeNotSatisfiable,
    PreconditionFailed,
    OriginNotAllowed,
    JobNotFound,
    GenerationUnsupported,
    NoVideo,
    GenerationRefused,
    GenerationFailed,
    Internal,
}

impl Kind {
    pub fn code(self) -> &'static str {
        match self {
            Kind::InvalidAssetId => "invalid-asset-id",
            Kind::InvalidParameter => "invalid-parameter",
            Kind::AssetNotFound => "asset-not-found",
            Kind::AssetUnservable => "asset-unservable",
            Kind::ThumbnailNotFound => "thumbnail-not-found",
            Kind::NoThumbnails => "no-thumbnails",
            Kind::NoStoryboard => "no-storyboard",
            Kind::InvalidBody => "invalid-body",
            Kind::MalformedEvent => "malformed-event",
            Kind::PayloadTooLarge => "payload-too-large",
            Kind::UnsupportedMediaType => "unsupported-media-type",
            Kind::FileNotFound => "file-not-found",
            Kind::RouteNotFound => "route-not-found",
            Kind::MethodNotAllowed => "method-not-allowed",
            Kind::UpstreamError => "upstream-error",
            Kind::UpstreamUnavailable => "upstream-unavailable",
            Kind::UpstreamTimeout => "upstream-timeout",
            Kind::RequestTimeout => "request-timeout",
            Kind::Overloaded => "overloaded",
            Kind::Unauthorized => "unauthorized",
            Kind::Forbidden => "forbidden",
            Kind::RateLimited => "rate-limited",
            Kind::UriTooLong => "uri-too-long",
            Kind::HeadersTooLarge => "headers-too-large",
            Kind::MalformedRequest => "malformed-request",
            Kind::BodyTimeout => "body-timeout",
            Kind::RangeNotSatisfiable => "range-not-satisfiable",
            Kind::PreconditionFailed => "precondition-failed",
            Kind::OriginNotAllowed => "origin-not-allowed",
            Kind::JobNotFound => "job-not-found",
            Kind::GenerationUnsupported => "generation-unsupported",
            Kind::NoVideo => "no-video",
            Kind::GenerationRefused => "generation-refused",
            Kind::GenerationFailed => "generation-failed",
            Kind::Internal => "internal-error",
        }
    }

    pub fn status(self) -> StatusCode {
        match self {
            Kind::InvalidAssetId
            | Kind::InvalidParameter
            | Kind::InvalidBody
            | Kind::MalformedEvent
            | Kind::MalformedRequest => StatusCode::BAD_REQUEST,
            Kind::AssetNotFound
            | Kind::ThumbnailNotFound
            | Kind::NoThumbnails
            | Kind::NoStoryboard
            | Kind::FileNotFound
            | Kind::JobNotFound
            | Kind::RouteNotFound => StatusCode::NOT_FOUND,
            Kind::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Kind::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Kind::BodyTimeout => StatusCode::REQUEST_TIMEOUT,
            Kind::RangeNotSatisfiable => StatusCode::RANGE_NOT_SATISFIABLE,
            Kind::PreconditionFailed => StatusCode::PRECONDITION_FAILED,
            Kind::Unauthorized => StatusCode::UNAUTHORIZED,
            Kind::Forbidden | Kind::OriginNotAllowed => StatusCode::FORBIDDEN,
            Kind::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            Kind::UriTooLong => StatusCode::URI_TOO_LONG,
            Kind::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Kind::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Kind::AssetUnservable
            | Kind::GenerationRefused
            | Kind::GenerationFailed
            | Kind::NoVideo => StatusCode::CONFLICT,
            Kind::GenerationUnsupported => StatusCode::NOT_IMPLEMENTED,
            Kind::UpstreamError => StatusCode::BAD_GATEWAY,
            Kind::UpstreamUnavailable | Kind::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Kind::UpstreamTimeout | Kind::RequestTimeout => StatusCode::GATEWAY_TIMEOUT,
            Kind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    fn title(self) -> &'static str {
        match self {
            Kind::InvalidAssetId => "Invalid asset id",
            Kind::InvalidParameter => "Invalid parameter",
            Kind::AssetNotFound => "Asset not found",
            Kind::AssetUnservable => "Asset cannot be served",
            Kind::ThumbnailNotFound => "Thumbnail not found",
            Kind::NoThumbnails => "Asset has no thumbnails",
            Kind::NoStoryboard => "Asset has no storyboard",
            Kind::InvalidBody => "Invalid request body",
            Kind::MalformedEvent => "Malformed event delivery",
            Kind::PayloadTooLarge => "Request body too large",
            Kind::UnsupportedMediaType => "Unsupported media type",
            Kind::FileNotFound => "File not found",
            Kind::RouteNotFound => "No such route",
            Kind::MethodNotAllowed => "Method not allowed",
            Kind::UpstreamError => "Upstream error",
            Kind::UpstreamUnavailable => "Upstream unavailable",
            Kind::UpstreamTimeout => "Upstream timed out",
            Kind::RequestTimeout => "Request timed out",
            Kind::Overloaded => "Service overloaded",
            Kind::Unauthorized => "Unauthorized",
            Kind::Forbidden => "Forbidden",
            Kind::RateLimited => "Too many requests",
            Kind::UriTooLong => "URI too long",
            Kind::HeadersTooLarge => "Request headers too large",
            Kind::MalformedRequest => "Malformed HTTP request",
            Kind::BodyTimeout => "Request body too slow",
            Kind::RangeNotSatisfiable => "Range not satisfiable",
            Kind::PreconditionFailed => "Precondition failed",
            Kind::OriginNotAllowed => "Origin not allowed",
            Kind::JobNotFound => "Job not found",
            Kind::GenerationUnsupported => "Generation not available",
            Kind::NoVideo => "Asset has no video",
            Kind::GenerationRefused => "The backend refuses generation",
            Kind::GenerationFailed => "Generation keeps failing",
            Kind::Internal => "Internal error",
        }
    }
}

/// An API error, rendered as `application/problem+json`.
#[derive(Debug, Clone)]
pub struct Problem {
    pub kind: Kind,
    pub detail: String,
    pub retry_after: Option<Duration>,
}

#[derive(Serialize)]
struct Body<'a> {
    #[serde(rename = "type")]
    type_uri: String,
    title: &'static str,
    status: u16,
    detail: &'a str,
    code: &'static str,
}

impl Problem {
    pub fn new(kind: Kind, detail: impl Into<String>) -> Self {
        Self {
            kind,
            detail: detail.into(),
            retry_after: None,
        }
    }

    pub fn status(&self) -> StatusCode {
        self.kind.status()
    }
}

impl Problem {
    /// The problem document as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        let body = Body {
            type_uri: format!("{TYPE_PREFIX}{}", self.kind.code()),
            title: self.kind.title(),
            status: self.kind.status().as_u16(),
            detail: &self.detail,
            code: self.kind.code(),
        };
        serde_json::to_vec(&body).expect("problem serializes")
    }
}

impl IntoResponse for Problem {
    fn into_response(self) -> Response {
        let status = self.kind.status();
        let json = self.to_json();
        let mut response = (status, json).into_response();
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        if let Some(after) = self.retry_after {
            // Whole seconds, rounded up, at least 1.
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            headers.insert(header::RETRY_AFTER, HeaderValue::from(secs.max(1)));
        }
        response
    }
}

impl From<ResolveError> for Problem {
    fn from(e: ResolveError) -> Self {
        match e {
            ResolveError::NotFound => Problem::new(Kind::AssetNotFound, "no asset has this id"),
            ResolveError::Source(source) => Problem::from(&*source),
        }
    }
}

impl From<&SourceError> for Problem {
    fn from(e: &SourceError) -> Self {
        // Details name the backend, never its URLs, keys or raw error text (which may carry them).
        match e {
            SourceError::NotFound => Problem::new(Kind::AssetNotFound, "no asset has this id"),
            SourceError::Unservable { reason } => {
                Problem::new(Kind::AssetUnservable, reason.clone())
            }
            SourceError::Upstream { backend, .. } => Problem::new(
                Kind::UpstreamError,
                format!("the {backend} backend failed; try again later"),
            ),
            SourceError::Throttled {
                backend,
                retry_after,
            } => Problem {
                kind: Kind::UpstreamUnavailable,
                detail: format!("the {backend} backend is throttling requests"),
                retry_after: Some(retry_after.unwrap_or(Duration::from_secs(1))),
            },
            SourceError::Unavailable { backend } => Problem {
                kind: Kind::UpstreamUnavailable,
                detail: format!("the {backend} backend cannot be reached; try again shortly"),
                retry_after: Some(Duration::from_secs(5)),
            },
            SourceError::Timeout { backend } => Problem {
                kind: Kind::UpstreamTimeout,
                detail: format!("the {backend} backend did not answer in time"),
                retry_after: Some(Duration::from_secs(1)),
            },
            SourceError::Misconfigured { backend, .. } => Problem {
                kind: Kind::UpstreamUnavailable,
                detail: format!(
                    "the {backend} backend rejected the service's configuration; an operator must fix it"
                ),
                retry_after: Some(Duration::from_secs(30)),
            },
        }
    }
}
