//! `[cache]`: how long resolved assets are kept, and how much memory they may take.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;

/// The longest a signed URL can live (a user delegation key's limit).
pub const MAX_URL_LIFETIME: Duration = Duration::from_secs(7 * 24 * 3600);

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CacheSettings {
    /// How long a resolved asset is fresh. Past it, it is served stale while one background
    /// refresh runs.
    #[serde(with = "humantime_serde")]
    pub ttl: Duration,
    /// How long past `ttl` an entry may still be served when refreshing fails (the upstream is
    /// down). Never with URLs below `min_validity`.
    #[serde(with = "humantime_serde")]
    pub max_stale: Duration,
    /// How long "asset not found" is remembered.
    #[serde(with = "humantime_serde")]
    pub not_found_ttl: Duration,
    /// Every URL handed out stays valid at least this long: an entry leaves the cache this long
    /// before its earliest URL expires.
    #[serde(with = "humantime_serde")]
    pub min_validity: Duration,
    /// Memory budget of the cache, in bytes (entries are weighed by their size).
    pub max_bytes: u64,
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(30),
            min_validity: Duration::from_secs(300),
            max_bytes: 256 * 1024 * 1024,
        }
    }
}

impl CacheSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        if self.max_bytes == 0 {
            return Err(Invalid::new("cache.max_bytes", "must be greater than 0"));
        }
        if self.min_validity >= MAX_URL_LIFETIME {
            return Err(Invalid::new(
                "cache.min_validity",
                "must be shorter than 7 days (the longest a signed URL can live)",
            ));
        }
        Ok(())
    }
}
