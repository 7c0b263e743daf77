//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.
//!
//! Names: `http_requests_total` / `http_request_duration_seconds` (route, method, status);
//! `http_requests_shed_total`; `http_connections_open`, `http_connections_closed_total`
//! (reason), `http_connections_refused_total`, `http_accept_errors_total`,
//! `http_malformed_requests_total` (status);
//! `cache_hits_total`, `cache_misses_total`, `cache_coalesced_total`, `cache_stale_served_total`,
//! `cache_refresh_failures_total`, `cache_evictions_total` (cause), `cache_entries`,
//! `cache_bytes`; `storyboard_read_failures_total` (reason);
//! `upstream_requests_total` / `upstream_request_duration_seconds` (backend, operation,
//! outcome); `storage_events_total` (type), `storage_event_invalidations_total` (scope).

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

const DURATION_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0,
];

/// The recorder's handle, installing it on first use (tests start many apps in one process:
/// they share it).
pub fn handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new()
            .set_buckets_for_metric(Matcher::Suffix("duration_seconds".into()), DURATION_BUCKETS)
            .expect("buckets are not empty")
            .build_recorder();
        let handle = recorder.handle();
        // Another recorder may already be installed (an embedding program's): keep it, and
        // this handle then renders only what it saw — nothing.
        let _ = metrics::set_global_recorder(recorder);
        handle
    })
}
