//! Prometheus metrics: one process-wide recorder, rendered by `GET /metrics`.
//!
//! Names: call sites record a metric by its short name (`metrics::counter!("cache_hits_total")`);
//! the recorder sits behind metrics-util's `PrefixLayer`, so every series and its `# HELP` and
//! `# TYPE` lines are exported as `ams_thumbnails_<name>` (the layer joins with `.`, which the
//! exporter writes as `_`). Units are in the names (`_seconds`, `_bytes`, `_total`). Every name
//! the code records is described once, when the recorder is installed, from [`FAMILIES`]
//! (`tests/it/observability.rs` fails on a recorded name missing there). The process metrics
//! (`process_*`, unprefixed, as every Prometheus client names them) are read from `/proc` at
//! each scrape ([`process`]), and `ams_thumbnails_build_info{version, profile} 1` says which
//! build answers.

mod families;
pub mod process;

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::layers::{Layer, PrefixLayer};

pub use families::{FAMILIES, Family, Kind};

/// Prefix of every metric the service records (not of the `process_*` metrics).
pub const PREFIX: &str = "ams_thumbnails";

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
        if metrics::set_global_recorder(PrefixLayer::new(PREFIX).layer(recorder)).is_ok() {
            describe();
            metrics::gauge!(
                "build_info",
                "version" => env!("CARGO_PKG_VERSION"),
                "profile" => if cfg!(debug_assertions) { "debug" } else { "release" },
            )
            .set(1.0);
        }
        handle
    })
}

/// The scrape: every recorded series, then the process metrics read now.
pub fn render() -> String {
    let mut text = handle().render();
    if !text.is_empty() && !text.ends_with("\n\n") {
        text.push('\n');
    }
    process::render(&process::Process::read(), &mut text);
    text
}

/// `# HELP` (and unit) for every family, through the prefix layer like the series.
fn describe() {
    for family in FAMILIES {
        let (name, help) = (family.name, family.help);
        match family.kind {
            Kind::Counter => metrics::describe_counter!(name, family.unit, help),
            Kind::Gauge => metrics::describe_gauge!(name, family.unit, help),
            Kind::Histogram => metrics::describe_histogram!(name, family.unit, help),
        }
    }
}
