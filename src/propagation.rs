//! W3C Trace Context (`traceparent`, `tracestate`) in and out, and the span of one upstream try.
//!
//! A leaf: the HTTP layer takes an incoming request's context with [`extract`], the upstream
//! clients (the ARM and MK.IO REST client, the Azure SDK's pipeline) open a [`client_span`] per
//! try and send [`outgoing`] headers with it. All of it is inert until `telemetry` switches
//! tracing on ([`enable`]): with no exporter there is no trace to continue or to send.
//!
//! A span never holds a query string: SAS tokens travel in queries, so `url.full` is the URL
//! without it ([`url_without_query`]).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use opentelemetry::propagation::{Extractor, TextMapPropagator};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

static ENABLED: AtomicBool = AtomicBool::new(false);

/// Tracing is on (an OpenTelemetry layer is installed): contexts are read and sent from now on.
pub fn enable() {
    ENABLED.store(true, Ordering::Relaxed);
}

/// Whether tracing is on.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The headers of an incoming request, as the propagator reads them.
struct Incoming<'a>(&'a axum::http::HeaderMap);

impl Extractor for Incoming<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(|k| k.as_str()).collect()
    }
}

/// Makes `span` a child of the caller's trace when the request carries a valid `traceparent`
/// (and its `tracestate`); otherwise the span starts a trace of its own. Nothing when off.
pub fn continue_trace(span: &tracing::Span, headers: &axum::http::HeaderMap) {
    if !enabled() || !headers.contains_key("traceparent") {
        return;
    }
    let parent = TraceContextPropagator::new().extract(&Incoming(headers));
    // A span the filter disabled has no OpenTelemetry data: nothing to attach to.
    let _ = span.set_parent(parent);
}

/// The `traceparent` (and `tracestate`) naming `span` as the parent of the callee's work; empty
/// when off or when the span is not sampled in.
pub fn outgoing(span: &tracing::Span) -> Vec<(&'static str, String)> {
    if !enabled() {
        return Vec::new();
    }
    let mut fields: HashMap<String, String> = HashMap::with_capacity(2);
    TraceContextPropagator::new().inject_context(&span.context(), &mut fields);
    let mut headers = Vec::with_capacity(fields.len());
    for (name, value) in fields {
        match name.as_str() {
            "traceparent" => headers.push(("traceparent", value)),
            "tracestate" if !value.is_empty() => headers.push(("tracestate", value)),
            _ => {}
        }
    }
    headers
}

/// The URL as it may appear in a span or a log line: no query (SAS tokens, signatures), no
/// fragment, no user information.
pub fn url_without_query(url: &url::Url) -> String {
    let mut clean = url.clone();
    clean.set_query(None);
    clean.set_fragment(None);
    let _ = clean.set_username("");
    let _ = clean.set_password(None);
    clean.into()
}

/// The client span of one try of an upstream call (OpenTelemetry HTTP client conventions):
/// `otel.name` is the method; `attempt` counts the tries before this one
/// (`http.request.resend_count`); `backend` names the upstream (`storage`, `ams`, `mkio`,
/// `entra`). The status or error goes in with [`record_status`] / [`record_error`].
pub fn client_span(method: &str, url: &url::Url, attempt: u32, backend: &str) -> tracing::Span {
    tracing::info_span!(
        "upstream",
        otel.kind = "client",
        otel.name = method,
        otel.status_code = tracing::field::Empty,
        http.request.method = method,
        url.full = url_without_query(url),
        server.address = url.host_str().unwrap_or_default(),
        http.request.resend_count = attempt,
        http.response.status_code = tracing::field::Empty,
        "error.type" = tracing::field::Empty,
        backend,
    )
}

/// The answer's status; 5xx mark the span as failed.
pub fn record_status(span: &tracing::Span, status: u16) {
    span.record("http.response.status_code", status);
    if status >= 500 {
        span.record("otel.status_code", "ERROR");
        span.record("error.type", status);
    }
}

/// A try that got no answer (`kind`: `timeout`, `connect`, `transport`).
pub fn record_error(span: &tracing::Span, kind: &'static str) {
    span.record("otel.status_code", "ERROR");
    span.record("error.type", kind);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_lose_their_query_and_credentials() {
        let url = url::Url::parse(
            "https://user:pw@acct.blob.core.windows.net/c/a%20b.jpg?sv=2025&sig=SECRET#frag",
        )
        .unwrap();
        let clean = url_without_query(&url);
        assert_eq!(clean, "https://acct.blob.core.windows.net/c/a%20b.jpg");
        assert!(!clean.contains("sig="));
    }
}
