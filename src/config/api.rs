//! `[api]`: what the HTTP API offers browsers and batch callers; `[bench]`: benchmark aids.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::Invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ApiSettings {
    /// Origins allowed to call the API from a browser (`["*"]` for any); none by default.
    pub cors_allowed_origins: Vec<String>,
    /// Most asset ids in one `POST /assets:batchGet`.
    pub batch_limit: usize,
}

impl Default for ApiSettings {
    fn default() -> Self {
        Self {
            cors_allowed_origins: Vec::new(),
            batch_limit: 100,
        }
    }
}

impl ApiSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        for (i, origin) in self.cors_allowed_origins.iter().enumerate() {
            let ok = origin == "*"
                || Url::parse(origin).is_ok_and(|u| {
                    matches!(u.scheme(), "http" | "https")
                        && u.path() == "/"
                        && !origin.ends_with('/')
                        && u.query().is_none()
                });
            if !ok {
                return Err(Invalid::new(
                    format!("api.cors_allowed_origins[{i}]"),
                    format!(
                        "{origin:?} is not an origin like \"https://app.example.com\" or \"*\""
                    ),
                ));
            }
        }
        if !(1..=10_000).contains(&self.batch_limit) {
            return Err(Invalid::new("api.batch_limit", "must be from 1 to 10000"));
        }
        Ok(())
    }
}

/// Benchmark aids, used by `bench/run` only.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct BenchSettings {
    /// Serve `GET /bench/bare/{assetId}`: a static body of this many bytes through the same
    /// middleware, the baseline the cached route is measured against. 0: no such route.
    pub bare_body_bytes: usize,
    /// Delay added to every catalog lookup (simulated upstream latency).
    #[serde(with = "humantime_serde")]
    pub upstream_latency: Duration,
}
