//! Logs and traces.
//!
//! Logs go to stderr: human-readable by default (colours only on a terminal), flat JSON lines
//! with `log.format = "json"` ([`format`]); `RUST_LOG` overrides the configured filter.
//! Traces go to an OTLP/HTTP collector when the `OTEL_*` variables name one ([`otel`]): every
//! span the filter lets through (requests, loads, source calls, upstream tries) is exported,
//! and the upstream calls carry `traceparent` ([`crate::propagation`]).

mod format;
pub mod otel;

use std::io::IsTerminal;

use tracing_subscriber::EnvFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::fmt::format::JsonFields;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

use crate::config::{Invalid, LogFormat, LogSettings};

pub use otel::OtelSettings;

/// What [`init`] set up; [`Tracing::shutdown`] sends the spans still queued.
#[must_use = "spans still queued are lost unless `shutdown` is called"]
pub struct Tracing {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Tracing {
    /// Whether spans are exported.
    pub fn is_on(&self) -> bool {
        self.provider.is_some()
    }

    /// Exports the spans still queued and stops the exporter. Blocks (at most the exporter's
    /// timeout): call it off the async workers (`spawn_blocking`) or after the runtime.
    pub fn shutdown(self) {
        if let Some(provider) = self.provider
            && let Err(e) = provider.shutdown()
        {
            tracing::warn!(error = %e, "traces: the last spans could not be exported");
        }
    }
}

/// Installs the global subscriber (once; later calls install nothing, which suits tests), with
/// the OpenTelemetry layer when the environment configures an exporter. Fails on an `OTEL_*`
/// value that cannot work, naming the variable.
pub fn init(settings: &LogSettings) -> Result<Tracing, Invalid> {
    let otel = OtelSettings::from_env(|name| std::env::var(name).ok())?;
    let provider = otel.as_ref().map(OtelSettings::provider).transpose()?;
    let filter = EnvFilter::try_from_default_env()
        .or_else(|_| EnvFilter::try_new(&settings.filter))
        .unwrap_or_else(|_| EnvFilter::new("info"));
    let logs = match settings.format {
        LogFormat::Human => {
            let ansi = std::io::stderr().is_terminal();
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(ansi)
                .event_format(format::Human::new(ansi))
                .boxed()
        }
        LogFormat::Json => tracing_subscriber::fmt::layer()
            .with_writer(std::io::stderr)
            .with_ansi(false)
            .fmt_fields(JsonFields::new())
            .event_format(format::JsonLine)
            .boxed(),
    };
    let traces = provider.as_ref().map(|provider| {
        use opentelemetry::trace::TracerProvider;
        tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("ams-thumbnails"))
            .with_location(false)
    });
    let installed = tracing_subscriber::registry()
        .with(filter)
        .with(logs)
        .with(traces)
        .try_init()
        .is_ok();
    if installed && provider.is_some() {
        crate::propagation::enable();
        if let Some(otel) = &otel {
            tracing::info!(
                protocol = otel.protocol.as_str(),
                "traces: exporting spans over OTLP/HTTP"
            );
        }
    }
    Ok(Tracing {
        provider: provider.filter(|_| installed),
    })
}
