//! The demo page (`GET /`): a static page using only the public API. Embedded in the binary,
//! so no build step and no file to find at run time; served with a strict CSP.

use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

const INDEX: &str = include_str!("../../demo/index.html");
const SCRIPT: &str = include_str!("../../demo/app.js");
const STYLE: &str = include_str!("../../demo/app.css");

/// Scripts and styles from this origin only; images from anywhere (thumbnails live in Blob
/// Storage or a CDN); no framing.
const CSP: &str = "default-src 'self'; img-src * data:; style-src 'self'; script-src 'self'; \
                   connect-src 'self'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'";

fn page(body: &'static str, content_type: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(content_type)),
            (
                header::CONTENT_SECURITY_POLICY,
                HeaderValue::from_static(CSP),
            ),
            (
                header::X_CONTENT_TYPE_OPTIONS,
                HeaderValue::from_static("nosniff"),
            ),
            (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
        ],
        body,
    )
        .into_response()
}

pub async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

pub async fn script() -> Response {
    page(SCRIPT, "text/javascript; charset=utf-8")
}

pub async fn style() -> Response {
    page(STYLE, "text/css; charset=utf-8")
}
