//! `[cache]`: how long resolved assets are kept, and how much memory they may take.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Invalid;
use crate::secret::Secret;

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
    /// The shared tier behind the in-process cache (Redis), for several replicas.
    pub shared: SharedCacheSettings,
}

/// `[cache.shared]`: a Redis (7.x, Valkey, Azure Cache for Redis / Azure Managed Redis) that
/// the replicas share: loaded answers, one load per asset across replicas, invalidations.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SharedCacheSettings {
    /// `redis://[user:password@]host:port[/db]` or `rediss://...` (TLS). Unset: no shared tier.
    /// A secret (it may carry the password): shown redacted.
    pub url: Option<Secret>,
    /// Password (Azure Cache for Redis access key), when not in the URL.
    pub password: Option<Secret>,
    /// File holding the password (a mounted secret).
    pub password_file: Option<PathBuf>,
    /// PEM CA certificate(s) to trust for `rediss://` instead of the system's roots (a private
    /// CA).
    pub ca_file: Option<PathBuf>,
    /// Prefix of every key and of the channel, so that services can share one Redis.
    pub key_prefix: String,
    /// Longest one Redis call may take before the tier counts as down for a moment and the
    /// request goes on without it (a moka hit never calls Redis).
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// Longest a connection attempt may take.
    #[serde(with = "humantime_serde")]
    pub connect_timeout: Duration,
    /// How long a replica loading an asset holds its lock: the longest a replica that died
    /// while loading delays the others.
    #[serde(with = "humantime_serde")]
    pub lock_ttl: Duration,
}

impl Default for SharedCacheSettings {
    fn default() -> Self {
        Self {
            url: None,
            password: None,
            password_file: None,
            ca_file: None,
            key_prefix: "ams-thumbnails:".into(),
            timeout: Duration::from_millis(100),
            connect_timeout: Duration::from_secs(1),
            lock_ttl: Duration::from_secs(10),
        }
    }
}

impl SharedCacheSettings {
    pub fn validate(&self) -> Result<(), Invalid> {
        let key = |k: &str| format!("cache.shared.{k}");
        if let Some(url) = &self.url {
            let scheme = url.expose().split("://").next().unwrap_or_default();
            if !matches!(scheme, "redis" | "rediss") || !url.expose().contains("://") {
                return Err(Invalid::new(
                    key("url"),
                    "must be a redis:// or rediss:// URL",
                ));
            }
            if self.ca_file.is_some() && !url.expose().starts_with("rediss://") {
                return Err(Invalid::new(
                    key("ca_file"),
                    "is only used with a rediss:// URL",
                ));
            }
        } else if self.password.is_some() {
            return Err(Invalid::new(
                key("password"),
                "is set but cache.shared.url is not",
            ));
        }
        if self.key_prefix.is_empty() || self.key_prefix.len() > 64 {
            return Err(Invalid::new(
                key("key_prefix"),
                "must be 1 to 64 characters",
            ));
        }
        if self.timeout.is_zero() || self.timeout > Duration::from_secs(10) {
            return Err(Invalid::new(key("timeout"), "must be between 1ms and 10s"));
        }
        if self.connect_timeout.is_zero() {
            return Err(Invalid::new(
                key("connect_timeout"),
                "must be greater than 0",
            ));
        }
        if self.lock_ttl < Duration::from_secs(1) {
            return Err(Invalid::new(key("lock_ttl"), "must be at least 1s"));
        }
        Ok(())
    }
}

impl Default for CacheSettings {
    fn default() -> Self {
        Self {
            ttl: Duration::from_secs(300),
            max_stale: Duration::from_secs(3600),
            not_found_ttl: Duration::from_secs(30),
            min_validity: Duration::from_secs(300),
            max_bytes: 256 * 1024 * 1024,
            shared: SharedCacheSettings::default(),
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
        self.shared.validate()
    }
}
