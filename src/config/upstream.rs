//! `[upstream]`: timeouts, retries and trust for every outbound call.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UpstreamSettings {
    /// Time to establish a connection.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// Time for one upstream call (each try).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Retries of a failed call (5xx, 429, connection errors).
    pub max_retries: u32,
    /// Upper bound on the time spent retrying one call.
    #[serde(with = "humantime_serde")]
    pub retry_budget: Duration,
    /// Extra PEM CA certificate to trust (a private CA, an emulator's test CA).
    pub ca_file: Option<PathBuf>,
    /// Calls in flight to each upstream at once (more wait): no retry storm can swamp it.
    pub max_concurrency: usize,
}

impl Default for UpstreamSettings {
    fn default() -> Self {
        Self {
            connect_timeout: Duration::from_secs(5),
            timeout: Duration::from_secs(20),
            max_retries: 3,
            retry_budget: Duration::from_secs(15),
            ca_file: None,
            max_concurrency: 64,
        }
    }
}

impl UpstreamSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_concurrency == 0 {
            return Err(Invalid::new(
                "upstream.max_concurrency",
                "must be greater than 0",
            ));
        }
        Ok(())
    }
}
