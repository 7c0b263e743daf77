//! OpenTelemetry traces over OTLP/HTTP, configured by the standard `OTEL_*` variables.
//!
//! On when `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` or `OTEL_EXPORTER_OTLP_ENDPOINT` is set (the
//! first as is, the second with `/v1/traces` appended), unless `OTEL_SDK_DISABLED=true` or
//! `OTEL_TRACES_EXPORTER=none`. `OTEL_EXPORTER_OTLP_(TRACES_)PROTOCOL`: `http/protobuf` (the
//! default) or `http/json`; gRPC is not built in and refused. The exporter reads
//! `OTEL_EXPORTER_OTLP_(TRACES_)HEADERS`, `_TIMEOUT` and `_COMPRESSION` itself, the SDK
//! `OTEL_TRACES_SAMPLER(_ARG)`, `OTEL_BSP_*` and the span limits, the resource
//! `OTEL_RESOURCE_ATTRIBUTES` and `OTEL_SERVICE_NAME` (default `ams-thumbnails`).
//!
//! Spans leave in batches from the SDK's own thread (a blocking HTTP client: no tokio task
//! of the service is spent on it); [`Tracing::shutdown`] sends what is left.

use opentelemetry::KeyValue;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::SdkTracerProvider;

use crate::config::Invalid;

/// The service's name when neither `OTEL_SERVICE_NAME` nor `OTEL_RESOURCE_ATTRIBUTES` names it.
pub const DEFAULT_SERVICE_NAME: &str = "ams-thumbnails";

/// What the environment asks for, checked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OtelSettings {
    pub protocol: OtlpProtocol,
    /// `Some` when the environment names no service: [`DEFAULT_SERVICE_NAME`].
    pub default_service_name: Option<&'static str>,
    /// Whether `OTEL_RESOURCE_ATTRIBUTES` leaves `service.version` to us.
    pub add_version: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OtlpProtocol {
    Protobuf,
    Json,
}

impl OtlpProtocol {
    /// The value of `OTEL_EXPORTER_OTLP_PROTOCOL` that names it.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Protobuf => "http/protobuf",
            Self::Json => "http/json",
        }
    }
}

/// A non-empty variable.
fn var(get: &impl Fn(&str) -> Option<String>, name: &str) -> Option<String> {
    get(name)
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

impl OtelSettings {
    /// `None`: tracing is off. `get` reads a variable (`std::env::var`, or a test's map).
    pub fn from_env(get: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, Invalid> {
        if var(&get, "OTEL_SDK_DISABLED").is_some_and(|v| v.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        match var(&get, "OTEL_TRACES_EXPORTER").as_deref() {
            None | Some("otlp") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(Invalid::new(
                    "OTEL_TRACES_EXPORTER",
                    format!("`{other}` is not supported: `otlp` (the default) or `none`"),
                ));
            }
        }
        let endpoint = [
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "OTEL_EXPORTER_OTLP_ENDPOINT",
        ]
        .into_iter()
        .find_map(|name| var(&get, name).map(|value| (name, value)));
        let Some((endpoint_var, endpoint)) = endpoint else {
            return Ok(None);
        };
        match url::Url::parse(&endpoint) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {}
            _ => {
                return Err(Invalid::new(
                    endpoint_var,
                    "must be an absolute http(s) URL (OTLP/HTTP)",
                ));
            }
        }
        let protocol = [
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ]
        .into_iter()
        .find_map(|name| var(&get, name).map(|value| (name, value)));
        let protocol = match protocol {
            None => OtlpProtocol::Protobuf,
            Some((_, p)) if p.eq_ignore_ascii_case("http/protobuf") => OtlpProtocol::Protobuf,
            Some((_, p)) if p.eq_ignore_ascii_case("http/json") => OtlpProtocol::Json,
            Some((name, p)) => {
                return Err(Invalid::new(
                    name,
                    format!("`{p}` is not supported: `http/protobuf` (the default) or `http/json`"),
                ));
            }
        };
        let attributes = var(&get, "OTEL_RESOURCE_ATTRIBUTES").unwrap_or_default();
        let names = |key: &str| {
            attributes
                .split(',')
                .any(|pair| pair.split_once('=').is_some_and(|(k, _)| k.trim() == key))
        };
        let named = var(&get, "OTEL_SERVICE_NAME").is_some() || names("service.name");
        Ok(Some(Self {
            protocol,
            default_service_name: (!named).then_some(DEFAULT_SERVICE_NAME),
            add_version: !names("service.version"),
        }))
    }

    /// The tracer provider: the OTLP exporter behind the batch processor.
    pub fn provider(&self) -> Result<SdkTracerProvider, Invalid> {
        let protocol = match self.protocol {
            OtlpProtocol::Protobuf => Protocol::HttpBinary,
            OtlpProtocol::Json => Protocol::HttpJson,
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(protocol)
            .build()
            .map_err(|e| Invalid::new("OTEL_EXPORTER_OTLP_ENDPOINT", e.to_string()))?;
        let mut resource = Resource::builder();
        if let Some(name) = self.default_service_name {
            resource = resource.with_service_name(name);
        }
        if self.add_version {
            resource = resource
                .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")));
        }
        Ok(SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource.build())
            .build())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(vars: &[(&str, &str)]) -> Result<Option<OtelSettings>, Invalid> {
        let vars: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        OtelSettings::from_env(|name| vars.get(name).cloned())
    }

    #[test]
    fn off_without_an_endpoint_or_when_disabled() {
        assert_eq!(settings(&[]).unwrap(), None);
        assert_eq!(
            settings(&[
                ("OTEL_SERVICE_NAME", "x"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", " ")
            ])
            .unwrap(),
            None
        );
        let endpoint = ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318");
        assert!(settings(&[endpoint]).unwrap().is_some());
        assert_eq!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "TRUE")]).unwrap(),
            None
        );
        assert_eq!(
            settings(&[endpoint, ("OTEL_TRACES_EXPORTER", "none")]).unwrap(),
            None
        );
        assert!(
            settings(&[endpoint, ("OTEL_SDK_DISABLED", "false")])
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn protocol_and_service_name_from_the_environment() {
        let on = settings(&[(
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://collector/v1/traces",
        )])
        .unwrap()
        .unwrap();
        assert_eq!(on.protocol, OtlpProtocol::Protobuf);
        assert_eq!(on.default_service_name, Some("ams-thumbnails"));
        assert!(on.add_version);
        let json = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
            ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod, service.name=thumbs",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(json.protocol, OtlpProtocol::Json);
        assert_eq!(json.default_service_name, None);
        let named = settings(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SERVICE_NAME", "thumbs-eu"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.version=7"),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(named.default_service_name, None);
        assert!(!named.add_version);
    }

    #[test]
    fn what_cannot_work_names_its_variable() {
        for (vars, key) in [
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                    ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
                ],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                vec![("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            ),
            (
                vec![
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
                    ("OTEL_TRACES_EXPORTER", "zipkin"),
                ],
                "OTEL_TRACES_EXPORTER",
            ),
        ] {
            let err = settings(&vars).unwrap_err();
            assert_eq!(err.key, key, "{err}");
        }
    }
}
