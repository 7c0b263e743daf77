//! Every try of an Azure SDK call (Blob Storage, and the Entra ID token requests of the
//! credentials built with the same options) in a client span, sending `traceparent` with it.
//!
//! A per-try policy: inside the SDK's retry loop, so a retried call shows one span per try,
//! each with its `http.request.resend_count`. The span's URL has no query: Storage SAS tokens
//! (the container SAS of `storage.auth = "ams-container-sas"`) travel there.

use std::sync::Arc;

use azure_core::http::policies::{Policy, PolicyResult, RetryPolicyCount};
use azure_core::http::{Context, Request};
use tracing::Instrument;

use crate::propagation;

/// The tracing policy; first of the per-try policies, so its span covers the others (and the
/// transport).
#[derive(Debug)]
pub(super) struct TracePolicy;

#[async_trait::async_trait]
impl Policy for TracePolicy {
    async fn send(
        &self,
        ctx: &Context,
        request: &mut Request,
        next: &[Arc<dyn Policy>],
    ) -> PolicyResult {
        let attempt = ctx.value::<RetryPolicyCount>().map_or(0, |count| **count);
        let method = request.method();
        let span = propagation::client_span(method.as_ref(), request.url(), attempt, "azure");
        for (name, value) in propagation::outgoing(&span) {
            request.insert_header(name, value);
        }
        let result = next[0]
            .send(ctx, request, &next[1..])
            .instrument(span.clone())
            .await;
        match &result {
            Ok(response) => propagation::record_status(&span, u16::from(response.status())),
            Err(e) => match super::find_in_chain::<super::RetryAfterBeyondBudget>(e) {
                // Throttled past the budget: an answer, ended here rather than retried.
                Some(beyond) => propagation::record_status(&span, beyond.status),
                None => propagation::record_error(
                    &span,
                    match super::transport_failure(e) {
                        Some(super::TransportFailure::Timeout) => "timeout",
                        Some(super::TransportFailure::Connect) => "connect",
                        None => "transport",
                    },
                ),
            },
        }
        result
    }
}
