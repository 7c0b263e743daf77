//! Every metric family the service records: its short name (exported as
//! `ams_thumbnails_<name>`), type, unit and `# HELP` text. A name recorded anywhere in `src/`
//! and missing here fails `tests/it/observability.rs`, and so does an entry nothing records.

use metrics::Unit;

/// The Prometheus type of a family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family.
#[derive(Debug)]
pub struct Family {
    /// Without the prefix, as recorded.
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    /// The `# HELP` line: what it counts, and its labels.
    pub help: &'static str,
}

const fn counter(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Counter,
        unit: Unit::Count,
        help,
    }
}

const fn gauge(name: &'static str, unit: Unit, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Gauge,
        unit,
        help,
    }
}

const fn seconds(name: &'static str, help: &'static str) -> Family {
    Family {
        name,
        kind: Kind::Histogram,
        unit: Unit::Seconds,
        help,
    }
}

/// Every family, grouped by what it watches.
pub const FAMILIES: &[Family] = &[
    gauge(
        "build_info",
        Unit::Count,
        "Always 1; labels version (the crate version) and profile (release or debug) say which build answers.",
    ),
    // HTTP: requests, refusals, connections.
    counter(
        "http_requests_total",
        "Requests answered, by route (the route template, unmatched when none matched), method (other for a non-standard one) and status; CORS preflights are not counted.",
    ),
    seconds(
        "http_request_duration_seconds",
        "Time to answer a request, by route and method.",
    ),
    counter(
        "http_requests_shed_total",
        "Requests refused with 503 overloaded: every admission slot and queue place was taken (load shedding).",
    ),
    counter(
        "http_requests_rate_limited_total",
        "Requests refused with 429 rate-limited (per-identity limit, or too many failed authentications from the address).",
    ),
    counter(
        "http_auth_failures_total",
        "Requests refused with 401 (a missing, wrong or expired credential), counted against the client address.",
    ),
    counter(
        "http_auth_failures_untracked_total",
        "Failed authentications not counted against their address because the table of addresses was full.",
    ),
    gauge(
        "http_connections_open",
        Unit::Count,
        "Client connections open, on every listener of the process.",
    ),
    counter(
        "http_connections_closed_total",
        "Connections the service closed, by reason: idle_timeout, header_timeout, evicted (at server.max_connections, to make room), shutdown.",
    ),
    counter(
        "http_connections_refused_total",
        "Connections refused at server.max_connections because every open one had a request in progress.",
    ),
    counter(
        "http_accept_errors_total",
        "Failed accepts other than a peer's reset (out of descriptors or memory); the accept loop pauses 50 ms.",
    ),
    counter(
        "http_malformed_requests_total",
        "Request heads refused before a request existed, by status (400, 414, 431).",
    ),
    counter(
        "jwks_fetches_total",
        "Fetches of the token signing keys (auth.jwt.jwks_url).",
    ),
    // The in-process cache.
    counter(
        "cache_hits_total",
        "Lookups answered from the in-process cache (found or not found).",
    ),
    counter(
        "cache_misses_total",
        "Lookups that loaded the asset (from the shared tier or the backend).",
    ),
    counter(
        "cache_coalesced_total",
        "Lookups that waited on another request's load of the same asset.",
    ),
    counter(
        "cache_stale_served_total",
        "Answers served from an entry past cache.ttl while it is refreshed in the background.",
    ),
    counter(
        "cache_refresh_failures_total",
        "Background refreshes that failed (the stale entry is kept and served up to cache.max_stale).",
    ),
    counter(
        "cache_evictions_total",
        "Cache entries removed, by cause: expired, invalidated, replaced, size.",
    ),
    gauge(
        "cache_entries",
        Unit::Count,
        "Entries in the in-process cache (measured at each scrape).",
    ),
    gauge(
        "cache_bytes",
        Unit::Bytes,
        "Weight of the in-process cache's entries, in bytes of RSS (measured at each scrape).",
    ),
    gauge(
        "cache_max_bytes",
        Unit::Bytes,
        "The in-process cache's budget, cache.max_bytes: entries are evicted past it.",
    ),
    counter(
        "storyboard_read_failures_total",
        "Storyboard VTTs not used (the asset keeps its thumbnails), by reason.",
    ),
    // The shared tier ([cache.shared]).
    counter(
        "shared_cache_hits_total",
        "Local misses answered from the shared tier (an entry another replica stored).",
    ),
    counter(
        "shared_cache_misses_total",
        "Local misses the shared tier did not hold.",
    ),
    counter(
        "shared_cache_errors_total",
        "Shared tier calls that failed or timed out (cache.shared.timeout), by op; the tier is then skipped for 1 s.",
    ),
    counter(
        "shared_cache_lock_waits_total",
        "Times a load found the asset's lock held by another replica and waited for its result.",
    ),
    counter(
        "shared_cache_fenced_out_total",
        "Loads whose lock was taken away (an invalidation) before they could store: loaded again, not stored.",
    ),
    counter(
        "shared_cache_invalidations_sent_total",
        "Invalidation notices published to the other replicas.",
    ),
    counter(
        "shared_cache_invalidations_received_total",
        "Invalidation notices received (an asset, a container, or everything).",
    ),
    // Storage events (POST /events/storage).
    counter(
        "storage_events_total",
        "Event Grid events received at POST /events/storage, by type.",
    ),
    counter(
        "storage_event_invalidations_total",
        "What storage events dropped, by scope: distinct containers per delivery, and asset ids the source maps to them.",
    ),
    // Upstream calls and generation.
    counter(
        "upstream_requests_total",
        "Backend calls, by backend, operation and outcome (ok, not_found, throttled, timeout, unavailable, misconfigured, unservable, refused, error).",
    ),
    seconds(
        "upstream_request_duration_seconds",
        "Time a backend call took, retries included, by backend and operation.",
    ),
    counter(
        "thumbnail_jobs_submitted_total",
        "Generation requests, by backend and result (created, existing, refused, error).",
    ),
    counter(
        "thumbnail_jobs_completed_total",
        "Generation jobs seen final, once per job and instance, by backend and state (Finished, Error, Canceled).",
    ),
    seconds(
        "thumbnail_job_duration_seconds",
        "ffmpeg encoder: how long a job ran on this replica (probe, ffmpeg, upload), by backend.",
    ),
    gauge(
        "thumbnail_jobs_running",
        Unit::Count,
        "ffmpeg encoder: jobs this replica runs or holds waiting for a slot (jobs.max_concurrent).",
    ),
];
