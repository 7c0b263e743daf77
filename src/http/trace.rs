//! The request span and its closing log line, for `tower_http`'s `TraceLayer`.
//!
//! One span per request, `request` (an OpenTelemetry server span, the child of the caller's
//! `traceparent` when it sends one), with the method, path, matched route, request id, client
//! address, the caller's identity (recorded by the guard) and the status. When the answer is
//! ready, one event `finished processing request` with `status` and a numeric `latency_ms`.
//! Probes and metrics (the routes exempt from load shedding) are logged and traced at debug:
//! an orchestrator's polling does not fill the logs at `info`.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::MatchedPath;
use axum::http::{Request, Response};
use tower_http::classify::ServerErrorsFailureClass;
use tower_http::trace::{MakeSpan, OnFailure, OnResponse};
use tracing::{Level, Span};

use super::client_addr::ClientAddr;
use super::routes::{Policies, Shedding};
use crate::propagation;

/// Opens the request span.
#[derive(Clone)]
pub struct RequestSpan {
    policies: Arc<Policies>,
}

impl RequestSpan {
    pub fn new(policies: Arc<Policies>) -> Self {
        Self { policies }
    }
}

impl<B> MakeSpan<B> for RequestSpan {
    fn make_span(&mut self, request: &Request<B>) -> Span {
        let request_id = request
            .headers()
            .get(&super::REQUEST_ID)
            .and_then(|id| id.to_str().ok())
            .unwrap_or_default();
        let matched = request.extensions().get::<MatchedPath>();
        let route = matched.map_or("unmatched", |m| m.as_str());
        let quiet = self
            .policies
            .of(matched)
            .is_some_and(|p| p.shedding == Shedding::Exempt);
        let client_addr = request
            .extensions()
            .get::<ClientAddr>()
            .map(|ClientAddr(addr)| tracing::field::display(addr));
        // The path only: query strings may carry tokens.
        macro_rules! request_span {
            ($level:expr) => {
                tracing::span!(
                    $level,
                    "request",
                    otel.kind = "server",
                    method = %request.method(),
                    path = %request.uri().path(),
                    route,
                    request_id,
                    client_addr,
                    client = tracing::field::Empty,
                    status = tracing::field::Empty,
                    otel.status_code = tracing::field::Empty,
                )
            };
        }
        let span = if quiet {
            request_span!(Level::DEBUG)
        } else {
            request_span!(Level::INFO)
        };
        propagation::continue_trace(&span, request.headers());
        span
    }
}

/// Records the status and logs `finished processing request` at the span's level.
#[derive(Clone, Copy, Default)]
pub struct Finished;

/// Milliseconds, to the microsecond.
fn millis(latency: Duration) -> f64 {
    latency.as_micros() as f64 / 1000.0
}

impl<B> OnResponse<B> for Finished {
    fn on_response(self, response: &Response<B>, latency: Duration, span: &Span) {
        let status = response.status().as_u16();
        span.record("status", status);
        if status >= 500 {
            span.record("otel.status_code", "ERROR");
        }
        let latency_ms = millis(latency);
        // A disabled span is below the filter: so is an event at debug.
        match span.metadata().map(|m| *m.level()) {
            Some(Level::INFO) => {
                tracing::info!(parent: span, status, latency_ms, "finished processing request")
            }
            _ => tracing::debug!(parent: span, status, latency_ms, "finished processing request"),
        }
    }
}

/// Logs a failed answer (5xx, or an error from the stack) at error; a probe's (a draining
/// replica's `/readyz` answers 503 on purpose) at debug.
#[derive(Clone, Copy, Default)]
pub struct Failed;

impl OnFailure<ServerErrorsFailureClass> for Failed {
    fn on_failure(&mut self, failure: ServerErrorsFailureClass, latency: Duration, span: &Span) {
        let latency_ms = millis(latency);
        match span.metadata().map(|m| *m.level()) {
            Some(Level::INFO) => {
                tracing::error!(parent: span, classification = %failure, latency_ms, "response failed")
            }
            _ => {
                tracing::debug!(parent: span, classification = %failure, latency_ms, "response failed")
            }
        }
    }
}
