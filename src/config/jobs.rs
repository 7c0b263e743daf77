//! `[jobs]`: thumbnail generation. The defaults are checked as a request would be, by the
//! generation module, when the service is put together (`server::compose`).

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct JobSettings {
    /// Prefix of the transforms and jobs this service creates.
    pub name_prefix: String,
    /// `Retry-After` on answers about jobs still running: how often clients should poll.
    #[serde(with = "humantime_serde")]
    pub poll_interval: Duration,
    /// AMS: api-version of Transforms and Jobs (Encoding.json).
    pub transform_api_version: String,
    /// What a request leaves out.
    pub defaults: GenerateDefaults,
}

impl Default for JobSettings {
    fn default() -> Self {
        Self {
            name_prefix: "ams-thumbnails".into(),
            poll_interval: Duration::from_secs(5),
            transform_api_version: "2022-07-01".into(),
            defaults: GenerateDefaults::default(),
        }
    }
}

impl JobSettings {
    /// Checks the prefix (the defaults are checked where they are understood).
    pub fn validate(&self) -> Result<(), Invalid> {
        let prefix_ok = !self.name_prefix.is_empty()
            && self.name_prefix.len() <= 40
            && self
                .name_prefix
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-')
            && !self.name_prefix.starts_with('-')
            && !self.name_prefix.ends_with('-');
        if !prefix_ok {
            return Err(Invalid::new(
                "jobs.name_prefix",
                "must be 1 to 40 letters, digits or inner hyphens",
            ));
        }
        Ok(())
    }
}

/// Defaults for what a request leaves out (`[jobs.defaults]`), checked at start-up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct GenerateDefaults {
    pub start: String,
    pub step: String,
    pub range: String,
    /// "" for the source's own size.
    pub width: String,
    pub height: String,
    pub format: String,
    pub sprite_columns: u32,
}

impl Default for GenerateDefaults {
    fn default() -> Self {
        Self {
            start: "0%".into(),
            step: "10%".into(),
            range: "100%".into(),
            width: "25%".into(),
            height: "25%".into(),
            format: "jpg".into(),
            sprite_columns: 0,
        }
    }
}
