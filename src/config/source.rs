//! `[source]`: where assets come from, tagged by `kind`.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use url::Url;

use super::Invalid;
use crate::secret::Secret;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum SourceSettings {
    /// A folder on disk with one sub-folder per asset, served by this service under `/local/`.
    Local(LocalSourceSettings),
    /// Blob Storage alone (AMS retired): asset id -> container by template or catalog file.
    Storage(StorageSourceSettings),
    /// Azure Media Services metadata through ARM (needs `[credential]`).
    Ams(AmsSourceSettings),
    /// MediaKind MK.IO metadata through its Media API (token: `source.token`,
    /// `source.token_file` or the MKIO_TOKEN environment variable).
    Mkio(MkioSourceSettings),
}

impl Default for SourceSettings {
    fn default() -> Self {
        Self::Local(LocalSourceSettings::default())
    }
}

impl SourceSettings {
    /// The kind's name, as configured (`source.kind`).
    pub fn kind(&self) -> &'static str {
        match self {
            SourceSettings::Local(_) => "local",
            SourceSettings::Storage(_) => "storage",
            SourceSettings::Ams(_) => "ams",
            SourceSettings::Mkio(_) => "mkio",
        }
    }

    /// Checks of this section alone (the Azure settings a kind needs are checked with them).
    pub fn validate(&self) -> Result<(), Invalid> {
        let needs_asset_id = || {
            Err(Invalid::new(
                "source.container_template",
                "must contain {assetId}",
            ))
        };
        match self {
            SourceSettings::Local(local) => {
                if !local.container_template.contains("{assetId}") {
                    return needs_asset_id();
                }
            }
            SourceSettings::Storage(storage) => {
                if storage.catalog.is_none() && !storage.container_template.contains("{assetId}") {
                    return needs_asset_id();
                }
            }
            SourceSettings::Mkio(mkio) => mkio.validate()?,
            SourceSettings::Ams(ams) => {
                for (key, value) in [
                    ("source.subscription_id", &ams.subscription_id),
                    ("source.resource_group", &ams.resource_group),
                    ("source.account_name", &ams.account_name),
                ] {
                    if value.trim().is_empty() {
                        return Err(Invalid::new(key, "must not be empty"));
                    }
                }
                if ams.arm_endpoint.scheme() != "https" {
                    return Err(Invalid::new("source.arm_endpoint", "must be https"));
                }
            }
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LocalSourceSettings {
    /// Folder holding one sub-folder ("container") per asset.
    pub root: PathBuf,
    /// Container name for an asset id; `{assetId}` is replaced by the id.
    pub container_template: String,
}

impl Default for LocalSourceSettings {
    fn default() -> Self {
        Self {
            root: PathBuf::from("samples"),
            container_template: "{assetId}".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageSourceSettings {
    /// Container of an asset; `{assetId}` is replaced by the id (a GUID is lower-cased, as AMS
    /// named containers `asset-<guid>`).
    pub container_template: String,
    /// A catalog exported while AMS was alive (CSV or JSON rows: name, alternateId, assetId,
    /// container, storageAccount, prefix, storageEncryptionFormat; `ams-thumbnails catalog
    /// export|scan` writes one): assets are then found by name, alternate id or GUID.
    pub catalog: Option<PathBuf>,
}

impl Default for StorageSourceSettings {
    fn default() -> Self {
        Self {
            container_template: "asset-{assetId}".into(),
            catalog: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AmsSourceSettings {
    pub subscription_id: String,
    pub resource_group: String,
    /// The Media Services account name.
    pub account_name: String,
    /// ARM endpoint (sovereign clouds, tests).
    #[serde(default = "default_arm_endpoint")]
    pub arm_endpoint: Url,
    /// Token audience for ARM.
    #[serde(default = "default_arm_audience")]
    pub arm_audience: String,
    #[serde(default = "default_ams_api_version")]
    pub api_version: String,
}

fn default_arm_endpoint() -> Url {
    Url::parse("https://management.azure.com").expect("valid URL")
}

fn default_arm_audience() -> String {
    "https://management.azure.com".into()
}

fn default_ams_api_version() -> String {
    "2023-01-01".into()
}

/// `source.kind = "mkio"`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MkioSourceSettings {
    /// The MK.IO API origin (a proxy or test double may add a path).
    #[serde(default = "default_mkio_base_url")]
    pub base_url: Url,
    /// The MK.IO project holding the assets.
    pub project: String,
    /// An MK.IO API token (secret; redacted). Else `token_file`, else `$MKIO_TOKEN`.
    #[serde(default)]
    pub token: Option<Secret>,
    /// A file holding the token (a mounted secret), read at start, surrounding white space
    /// removed.
    #[serde(default)]
    pub token_file: Option<PathBuf>,
    /// How long a storage instance (its `spec.url`) is remembered.
    #[serde(default = "default_storage_cache_ttl", with = "humantime_serde")]
    pub storage_cache_ttl: Duration,
}

fn default_mkio_base_url() -> Url {
    Url::parse("https://app.mk.io").expect("valid URL")
}

fn default_storage_cache_ttl() -> Duration {
    Duration::from_secs(600)
}

/// Whether `token` can go into an `Authorization: Bearer` header.
pub fn is_bearer_token(token: &str) -> bool {
    !token.is_empty() && token.bytes().all(|b| b.is_ascii_graphic())
}

impl MkioSourceSettings {
    /// Offline checks (nothing is read or contacted), naming keys as `source.<field>`.
    pub fn validate(&self) -> Result<(), Invalid> {
        let invalid = |key: &str, message: &str| Invalid::new(key, message);
        let project = self.project.as_str();
        if project.trim().is_empty() {
            return Err(invalid("source.project", "must not be empty"));
        }
        if project.trim() != project || project.chars().any(|c| c.is_control() || c == '/') {
            return Err(invalid(
                "source.project",
                "must be an MK.IO project name (no white space around it, no `/`)",
            ));
        }
        let url = &self.base_url;
        let loopback = match url.host() {
            Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
            Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
            Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
            None => false,
        };
        if url.host().is_none()
            || !(url.scheme() == "https" || (url.scheme() == "http" && loopback))
        {
            return Err(invalid(
                "source.base_url",
                "must be an https URL (plain http only to a loopback address)",
            ));
        }
        if url.query().is_some()
            || url.fragment().is_some()
            || !url.username().is_empty()
            || url.password().is_some()
        {
            return Err(invalid(
                "source.base_url",
                "must not carry credentials, a query or a fragment",
            ));
        }
        if self.token.is_some() && self.token_file.is_some() {
            return Err(invalid(
                "source.token_file",
                "set either source.token or source.token_file, not both",
            ));
        }
        if let Some(token) = &self.token
            && !is_bearer_token(token.expose().trim())
        {
            return Err(invalid(
                "source.token",
                "must be a non-empty MK.IO token (visible ASCII only)",
            ));
        }
        if let Some(path) = &self.token_file
            && path.as_os_str().is_empty()
        {
            return Err(invalid("source.token_file", "must not be empty"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mkio(toml_like: serde_json::Value) -> MkioSourceSettings {
        serde_json::from_value(toml_like).expect("settings")
    }

    #[test]
    fn mkio_defaults_and_validation() {
        let s = mkio(serde_json::json!({"project": "my-project"}));
        assert_eq!(s.base_url.as_str(), "https://app.mk.io/");
        assert_eq!(s.storage_cache_ttl, Duration::from_secs(600));
        s.validate().unwrap();

        let key_of = |value: serde_json::Value| mkio(value).validate().unwrap_err().key;
        assert_eq!(
            key_of(serde_json::json!({"project": " "})),
            "source.project"
        );
        assert_eq!(
            key_of(serde_json::json!({"project": "a/b"})),
            "source.project"
        );
        assert_eq!(
            key_of(serde_json::json!({"project": "p", "base_url": "http://app.mk.io"})),
            "source.base_url"
        );
        assert_eq!(
            key_of(serde_json::json!({"project": "p", "base_url": "https://u:p@app.mk.io"})),
            "source.base_url"
        );
        assert_eq!(
            key_of(serde_json::json!({"project": "p", "token": "t", "token_file": "/x"})),
            "source.token_file"
        );
        assert_eq!(
            key_of(serde_json::json!({"project": "p", "token": "two words"})),
            "source.token"
        );
        mkio(serde_json::json!({"project": "p", "base_url": "http://127.0.0.1:8443/mk"}))
            .validate()
            .unwrap();
        assert!(
            serde_json::from_value::<MkioSourceSettings>(
                serde_json::json!({"project": "p", "tokn": "x"})
            )
            .is_err(),
            "unknown keys are refused"
        );
        // Redacted wherever shown.
        let s = mkio(serde_json::json!({"project": "p", "token": "hunter2"}));
        assert!(!format!("{s:?}").contains("hunter2"));
        assert!(!serde_json::to_string(&s).unwrap().contains("hunter2"));
    }
}
