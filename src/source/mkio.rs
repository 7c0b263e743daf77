//! MediaKind MK.IO catalog: asset id -> container (and folder) through the MK.IO Media API
//! (`https://app.mk.io/api/v1/projects/{project}/media/...`, bearer token).
//!
//! Request form, as for AMS: an id is tried as an asset name first (`GET .../assets/{name}`);
//! when MK.IO has no asset of that name, as an `assetId` (when the id is a GUID:
//! `$filter=properties/assetId eq <guid>`), then as an `alternateId`
//! (`$filter=properties/alternateId eq '<id>'`), following `@odata.nextLink` (absolute or
//! relative, never to another origin: the token goes with every request).
//!
//! An asset names an MK.IO *storage instance* (`properties.storageAccountName`), not an Azure
//! account: the instance is read once (`GET .../storage/{name}`, `spec.url`, e.g.
//! `https://{account}.blob.core.windows.net[/{container}]`) and kept for
//! `source.storage_cache_ttl`. The location is that account, `properties.container` and
//! `properties.subPath` as a blob prefix. MK.IO hands out no SAS: the blobs are listed and
//! signed with the service's own storage credentials (`[storage]`, `[links]`).
//!
//! The token comes from `source.token`, else the file `source.token_file` (read at start,
//! trimmed), else the environment variable `MKIO_TOKEN`.
//!
//! Calls go through [`RestClient`], shared with the AMS catalog and the MK.IO encoder: 429
//! and 5xx are retried within `upstream.max_retries` and `upstream.retry_budget`, honouring
//! `Retry-After` (seconds or HTTP date) when present, jittered backoff otherwise (MK.IO allows
//! 2,000 GETs a minute per project).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use serde::Deserialize;
use url::Url;

use super::rest::{Bearer, ErrorEnvelope, RestClient};
use super::{AssetLocation, AssetRecord, Catalog, HealthCheck, SourceError};
use crate::asset_id::AssetId;
use crate::config::{Invalid, MkioSourceSettings, UpstreamSettings, is_bearer_token};
use crate::secret::Secret;

mod export;

/// Environment variable holding the token when neither `source.token` nor `source.token_file`
/// is set.
pub const TOKEN_ENV: &str = "MKIO_TOKEN";

const BACKEND: &str = "mkio";
/// Asset list pages followed at most (a runaway `@odata.nextLink`).
const MAX_PAGES: usize = 1000;
/// Longest `properties.alternateId` MK.IO stores: longer ids are never looked up as one.
const MAX_ALTERNATE_ID_LEN: usize = 64;
/// The only storage type whose blobs this service can list and sign.
const AZURE_STORAGE_TYPE: &str = "Microsoft.Storage";

/// The token: `token`, else the file's contents, else `env` (the value of `MKIO_TOKEN`).
/// `read` reads a file; errors name the key at fault, never the token.
fn resolve_token(
    settings: &MkioSourceSettings,
    env: Option<String>,
    read: impl FnOnce(&std::path::Path) -> std::io::Result<String>,
) -> Result<Secret, Invalid> {
    let (key, raw) = if let Some(token) = &settings.token {
        ("source.token", token.expose().to_owned())
    } else if let Some(path) = &settings.token_file {
        let text = read(path).map_err(|e| Invalid {
            key: "source.token_file".into(),
            message: format!("cannot read {}: {e}", path.display()),
        })?;
        ("source.token_file", text)
    } else if let Some(value) = env {
        (TOKEN_ENV, value)
    } else {
        return Err(Invalid {
            key: "source.token".into(),
            message: format!(
                "is required by source.kind = \"mkio\": set source.token, source.token_file \
                 or the {TOKEN_ENV} environment variable"
            ),
        });
    };
    let token = raw.trim();
    if !is_bearer_token(token) {
        return Err(Invalid {
            key: key.into(),
            message: "does not hold an MK.IO token (empty, or not visible ASCII)".into(),
        });
    }
    Ok(Secret::new(token))
}

// ---- MK.IO payloads (only the fields used) ----

#[derive(Debug, Deserialize)]
struct MkioAsset {
    #[serde(default)]
    name: String,
    properties: MkioAssetProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct MkioAssetProperties {
    asset_id: Option<String>,
    alternate_id: Option<String>,
    /// "Accepted, not supported" by MK.IO; exported as it stands.
    storage_encryption_format: Option<String>,
    container: Option<String>,
    /// The MK.IO storage instance (not an Azure account name).
    storage_account_name: Option<String>,
    sub_path: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MkioAssetList {
    value: Vec<MkioAsset>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

#[derive(Debug, Deserialize)]
struct MkioStorage {
    spec: MkioStorageSpec,
}

#[derive(Debug, Deserialize)]
struct MkioStorageSpec {
    #[serde(rename = "type")]
    kind: Option<String>,
    url: Option<String>,
}

/// Where a storage instance's blobs are, from its `spec.url`.
#[derive(Debug, Clone, PartialEq, Eq)]
struct StorageTarget {
    account: String,
    /// The container, when the URL names one.
    container: Option<String>,
    /// A folder inside that container the URL names ("" or ending in `/`).
    path: String,
}

/// A storage instance as last read: a definite answer (usable, or not Azure), and when.
struct CachedStorage {
    fetched: Instant,
    target: Result<StorageTarget, SourceError>,
}

type StorageSlot = Arc<tokio::sync::Mutex<Option<CachedStorage>>>;

pub struct MkioCatalog {
    rest: RestClient,
    /// `{base}/api/v1/projects/{project}/media`
    media_url: Url,
    project: String,
    default_account: String,
    storage_cache_ttl: Duration,
    /// Storage instances by name; each slot is locked while it is fetched, so concurrent
    /// lookups of one instance make one call.
    storages: Mutex<HashMap<String, StorageSlot>>,
}

impl std::fmt::Debug for MkioCatalog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MkioCatalog")
            .field("media_url", &self.media_url.as_str())
            .field("project", &self.project)
            .finish_non_exhaustive()
    }
}

impl MkioCatalog {
    /// Reads the token (`source.token`, `source.token_file`, `$MKIO_TOKEN`). `default_account`
    /// serves assets that name no storage instance.
    pub fn new(
        settings: &MkioSourceSettings,
        upstream: &UpstreamSettings,
        http: reqwest::Client,
        default_account: &str,
    ) -> Result<Self, Invalid> {
        let token = resolve_token(settings, std::env::var(TOKEN_ENV).ok(), |path| {
            std::fs::read_to_string(path)
        })?;
        let mut media_url = settings.base_url.clone();
        media_url
            .path_segments_mut()
            .map_err(|_| Invalid {
                key: "source.base_url".into(),
                message: "cannot hold a path".into(),
            })?
            .pop_if_empty()
            .extend(["api", "v1", "projects", settings.project.as_str(), "media"]);
        Ok(Self {
            rest: RestClient::new(
                http,
                BACKEND,
                "MK.IO",
                "MK.IO refused the token",
                Bearer::Token(token),
                ErrorEnvelope::Mkio,
                upstream,
            ),
            media_url,
            project: settings.project.clone(),
            default_account: default_account.to_owned(),
            storage_cache_ttl: settings.storage_cache_ttl,
            storages: Mutex::new(HashMap::new()),
        })
    }

    fn media_child(&self, segments: &[&str]) -> Url {
        let mut url = self.media_url.clone();
        url.path_segments_mut()
            .expect("MK.IO URLs have paths")
            .extend(segments);
        url
    }

    fn asset_url(&self, name: &str) -> Url {
        self.media_child(&["assets", name])
    }

    fn filter_url(&self, filter: &str) -> Url {
        let mut url = self.media_child(&["assets"]);
        // Spaces as %20 (not `+`): OData servers differ on form encoding.
        url.set_query(Some(&format!(
            "$filter={}",
            utf8_percent_encode(filter, QUERY_VALUE)
        )));
        url
    }

    fn storage_url(&self, name: &str) -> Url {
        self.media_child(&["storage", name])
    }

    /// One MK.IO GET with retries ([`RestClient`]); `None` for 404.
    async fn get(
        &self,
        url: &Url,
        operation: &'static str,
    ) -> Result<Option<bytes::Bytes>, SourceError> {
        self.rest.get(url, operation).await
    }

    fn misconfigured(&self, message: &str) -> SourceError {
        self.rest.misconfigured(message)
    }

    /// The MK.IO client (shared with the MK.IO encoder).
    pub fn rest(&self) -> &RestClient {
        &self.rest
    }

    /// `{base}/api/v1/projects/{project}/media/{segments...}`.
    pub fn media_url(&self, segments: &[&str]) -> Url {
        self.media_child(segments)
    }

    /// The asset an id names (by name, assetId or alternateId): its MK.IO name, storage
    /// instance and container.
    pub async fn asset_record(&self, id: &AssetId) -> Result<AssetRecord, SourceError> {
        let asset = self.find_asset(id).await?;
        Ok(AssetRecord {
            name: asset.name,
            storage: asset
                .properties
                .storage_account_name
                .filter(|s| !s.trim().is_empty()),
        })
    }

    /// The asset list with a filter, following `@odata.nextLink`; the first match wins.
    async fn find(&self, filter: &str) -> Result<Option<MkioAsset>, SourceError> {
        let mut url = self.filter_url(filter);
        let mut seen = HashSet::from([url.to_string()]);
        for page in 0..MAX_PAGES {
            let Some(body) = self.get(&url, "List Assets").await? else {
                return Err(if page == 0 {
                    self.misconfigured(&format!(
                        "MK.IO has no project {:?} (404 on its asset list)",
                        self.project
                    ))
                } else {
                    upstream("an @odata.nextLink page is gone (404)")
                });
            };
            let list: MkioAssetList = serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed List Assets answer"))?;
            if let Some(asset) = list.value.into_iter().next() {
                return Ok(Some(asset));
            }
            match self.next_page(&url, list.next_link, &mut seen)? {
                Some(next) => url = next,
                None => return Ok(None),
            }
        }
        Err(upstream("too many pages"))
    }

    /// The page an `@odata.nextLink` (absolute or relative to `current`) leads to; `None` when
    /// there is none. Never to another origin (the token goes with every request), never
    /// twice (`seen`).
    fn next_page(
        &self,
        current: &Url,
        next_link: Option<String>,
        seen: &mut HashSet<String>,
    ) -> Result<Option<Url>, SourceError> {
        let Some(next) = next_link.filter(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        let next = current
            .join(next.trim())
            .map_err(|_| upstream("malformed @odata.nextLink"))?;
        if next.origin() != self.media_url.origin() {
            return Err(upstream(
                "an @odata.nextLink leads away from the MK.IO API; not followed",
            ));
        }
        if !seen.insert(next.to_string()) {
            return Err(upstream("the @odata.nextLink loops"));
        }
        Ok(Some(next))
    }

    /// Get by name; else `$filter` by assetId (GUIDs); else by alternateId.
    async fn find_asset(&self, id: &AssetId) -> Result<MkioAsset, SourceError> {
        let id = id.as_str();
        if is_asset_name(id)
            && let Some(body) = self.get(&self.asset_url(id), "Get Asset").await?
        {
            return serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed Get Asset answer"));
        }
        if let Ok(guid) = uuid::Uuid::try_parse(id)
            && let Some(asset) = self
                .find(&format!("properties/assetId eq {}", guid.hyphenated()))
                .await?
        {
            return Ok(asset);
        }
        if id.chars().count() > MAX_ALTERNATE_ID_LEN {
            return Err(SourceError::NotFound);
        }
        self.find(&format!("properties/alternateId eq {}", odata_string(id)))
            .await?
            .ok_or(SourceError::NotFound)
    }

    /// The storage instance `name`, from the cache while fresh.
    async fn storage(&self, name: &str) -> Result<StorageTarget, SourceError> {
        let slot = self
            .storages
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(name.to_owned())
            .or_default()
            .clone();
        let mut cached = slot.lock().await;
        if let Some(c) = cached.as_ref()
            && c.fetched.elapsed() < self.storage_cache_ttl
        {
            return c.target.clone();
        }
        let target = self.fetch_storage(name).await?;
        *cached = Some(CachedStorage {
            fetched: Instant::now(),
            target: target.clone(),
        });
        target
    }

    /// `Ok(definite answer)` (cached), `Err` for failures that are not (the call failed).
    async fn fetch_storage(
        &self,
        name: &str,
    ) -> Result<Result<StorageTarget, SourceError>, SourceError> {
        let body = self
            .get(&self.storage_url(name), "Get Storage")
            .await?
            .ok_or_else(|| {
                upstream(&format!(
                    "the asset's storage instance {name:?} does not exist"
                ))
            })?;
        let storage: MkioStorage =
            serde_json::from_slice(&body).map_err(|_| upstream("malformed Get Storage answer"))?;
        let kind = storage.spec.kind.unwrap_or_default();
        if kind != AZURE_STORAGE_TYPE {
            return Ok(Err(SourceError::Unservable {
                reason: format!(
                    "the asset is in MK.IO storage {name:?} of type {kind:?}: only Azure \
                     storage ({AZURE_STORAGE_TYPE}) can be served"
                ),
            }));
        }
        let url = storage.spec.url.unwrap_or_default();
        Ok(storage_target(&url).map_err(|why| upstream(&format!("MK.IO storage {name:?}: {why}"))))
    }

    async fn location(&self, asset: MkioAsset) -> Result<AssetLocation, SourceError> {
        let p = asset.properties;
        let target = match p.storage_account_name.filter(|s| !s.trim().is_empty()) {
            Some(storage) => self.storage(&storage).await?,
            None => StorageTarget {
                account: self.default_account.clone(),
                container: None,
                path: String::new(),
            },
        };
        let (container, base) = match p.container.filter(|c| !c.trim().is_empty()) {
            // The URL's folder belongs to the URL's container only.
            Some(c) if target.container.as_deref().is_some_and(|t| t != c) => (c, String::new()),
            Some(c) => (c, target.path),
            None => match target.container {
                Some(c) => (c, target.path),
                None => {
                    return Err(upstream(&format!(
                        "asset {:?} names no container",
                        asset.name
                    )));
                }
            },
        };
        if container.contains('/') {
            return Err(upstream(&format!(
                "asset {:?} has an invalid container name",
                asset.name
            )));
        }
        let mut location = AssetLocation::new(target.account, container);
        location.prefix = format!(
            "{base}{}",
            normalize_prefix(p.sub_path.as_deref().unwrap_or_default())
        );
        Ok(location)
    }
}

#[async_trait]
impl Catalog for MkioCatalog {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        let asset = self.find_asset(id).await?;
        self.location(asset).await
    }
}

#[async_trait]
impl HealthCheck for MkioCatalog {
    fn name(&self) -> &str {
        "mkio"
    }

    /// An upstream every replica shares: its outage is reported, never a reason to take this
    /// replica out of the load balancer (cached answers are still served, stale ones too).
    fn required(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        let mut url = self.media_child(&["assets"]);
        url.set_query(Some("$top=1"));
        match self.get(&url, "List Assets").await {
            Ok(Some(_)) => Ok(()),
            Ok(None) => {
                let _ = self.misconfigured(&format!(
                    "MK.IO has no project {:?} (404 on its asset list)",
                    self.project
                ));
                Err("MK.IO does not know the configured project".into())
            }
            Err(e) => Err(match e {
                SourceError::Misconfigured { .. } => "MK.IO rejects the service's token".into(),
                SourceError::Throttled { .. } => "MK.IO is throttling".into(),
                SourceError::Timeout { .. } => "MK.IO did not answer in time".into(),
                _ => "MK.IO is unreachable or failing".into(),
            }),
        }
    }
}

/// Query values: all but unreserved characters percent-encoded (spaces as `%20`).
const QUERY_VALUE: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn upstream(message: &str) -> SourceError {
    SourceError::Upstream {
        backend: BACKEND,
        message: message.to_owned(),
    }
}

/// An OData string literal: quoted, `'` doubled.
fn odata_string(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

/// Whether MK.IO could hold an asset of this name (its names also exclude `^`, which asset
/// ids allow): others are looked up by filters only.
fn is_asset_name(id: &str) -> bool {
    !id.contains('^')
}

/// `subPath` (or a URL's folder) as a blob-name prefix: "" or `a/b/`.
fn normalize_prefix(path: &str) -> String {
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    if segments.is_empty() {
        String::new()
    } else {
        format!("{}/", segments.join("/"))
    }
}

/// The storage account (and container and folder, if the URL names them) of a storage
/// instance's `spec.url`: `https://{account}.blob.core.windows.net[/{container}[/{folder}]]`
/// (any Azure cloud's `*.blob.*` host), or path-style `http://127.0.0.1:10000/{account}[/...]`
/// (emulators). Errors never repeat the URL (it could carry a query).
fn storage_target(spec_url: &str) -> Result<StorageTarget, String> {
    let url = Url::parse(spec_url.trim()).map_err(|_| "spec.url is not a URL".to_owned())?;
    if !matches!(url.scheme(), "http" | "https") {
        return Err("spec.url is not an http(s) URL".into());
    }
    let mut segments: Vec<String> = url
        .path_segments()
        .into_iter()
        .flatten()
        .filter(|s| !s.is_empty())
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    let path_style = |segments: &mut Vec<String>| {
        if segments.is_empty() {
            None
        } else {
            Some(segments.remove(0))
        }
    };
    let account = match url.host() {
        Some(url::Host::Domain(host)) if !host.eq_ignore_ascii_case("localhost") => {
            let host = host.to_ascii_lowercase();
            let mut labels = host.split('.');
            let first = labels.next().unwrap_or_default().to_owned();
            if !labels.any(|l| l == "blob") {
                return Err(
                    "spec.url is not an Azure Blob endpoint (https://{account}.blob.core.windows.net)"
                        .into(),
                );
            }
            Some(first)
        }
        Some(_) => path_style(&mut segments),
        None => None,
    };
    let account = account
        .filter(|a| {
            (3..=24).contains(&a.len())
                && a.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        })
        .ok_or_else(|| "no storage account name can be derived from spec.url".to_owned())?;
    let container = (!segments.is_empty()).then(|| segments.remove(0));
    Ok(StorageTarget {
        account,
        container,
        path: normalize_prefix(&segments.join("/")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(account: &str, container: Option<&str>, path: &str) -> StorageTarget {
        StorageTarget {
            account: account.into(),
            container: container.map(Into::into),
            path: path.into(),
        }
    }

    #[test]
    fn account_from_the_storage_url() {
        for (url, expected) in [
            // docs-storage-put-azure-request.json and the openapi example.
            (
                "https://mystorageaccount.blob.core.windows.net",
                target("mystorageaccount", None, ""),
            ),
            (
                "https://blobsamples.blob.core.windows.net/",
                target("blobsamples", None, ""),
            ),
            (
                "https://MyAccount1.blob.core.windows.net/media",
                target("myaccount1", Some("media"), ""),
            ),
            (
                "https://acct.blob.core.windows.net/media/shows/2024/",
                target("acct", Some("media"), "shows/2024/"),
            ),
            (
                "https://acct.blob.core.chinacloudapi.cn/",
                target("acct", None, ""),
            ),
            (
                "https://acct.privatelink.blob.core.windows.net",
                target("acct", None, ""),
            ),
            (
                "https://acct.z12.blob.storage.azure.net/c1",
                target("acct", Some("c1"), ""),
            ),
            (
                "https://acct.blob.core.windows.net/c?sv=2022-11-02&sig=abc",
                target("acct", Some("c"), ""),
            ),
            (
                "http://127.0.0.1:10000/devstoreaccount1",
                target("devstoreaccount1", None, ""),
            ),
            (
                "http://localhost:10000/devstoreaccount1/asset-1/sub",
                target("devstoreaccount1", Some("asset-1"), "sub/"),
            ),
        ] {
            assert_eq!(storage_target(url), Ok(expected), "{url}");
        }
    }

    #[test]
    fn underivable_storage_urls_are_refused_without_echoing_them() {
        for url in [
            "",
            "not a url",
            "ftp://acct.blob.core.windows.net",
            "https://cdn.example.com/media?sig=secret-signature",
            "https://acct.file.core.windows.net/",
            "https://ab.blob.core.windows.net/",
            "https://under_score.blob.core.windows.net/",
            "http://127.0.0.1:10000/",
        ] {
            let e = storage_target(url).expect_err(url);
            assert!(!e.contains("secret") && !e.contains("example"), "{e}");
        }
    }

    #[test]
    fn sub_path_becomes_a_prefix() {
        assert_eq!(normalize_prefix(""), "");
        assert_eq!(normalize_prefix("/"), "");
        assert_eq!(normalize_prefix("incoming"), "incoming/");
        assert_eq!(normalize_prefix("path/to/asset"), "path/to/asset/");
        assert_eq!(normalize_prefix("/path//to/asset/"), "path/to/asset/");
    }

    #[test]
    fn filters_quote_like_odata() {
        assert_eq!(odata_string("CLIMB00002"), "'CLIMB00002'");
        assert_eq!(odata_string("o'neil"), "'o''neil'");
        assert!(is_asset_name("ClimbingMountAdams"));
        assert!(!is_asset_name("a^b"));
    }

    fn settings(toml_like: serde_json::Value) -> MkioSourceSettings {
        serde_json::from_value(toml_like).expect("settings")
    }

    #[test]
    fn token_from_setting_then_file_then_environment() {
        let unread = |_: &std::path::Path| -> std::io::Result<String> {
            panic!("the file is not read when the token is set")
        };
        let with_token = settings(serde_json::json!({"project": "p", "token": " abc \n"}));
        let token = resolve_token(&with_token, Some("env".into()), unread).unwrap();
        assert_eq!(token.expose(), "abc");

        let with_file = settings(serde_json::json!({"project": "p", "token_file": "/run/t"}));
        let token = resolve_token(&with_file, Some("env".into()), |p| {
            assert_eq!(p, std::path::Path::new("/run/t"));
            Ok("from-file\n".into())
        })
        .unwrap();
        assert_eq!(token.expose(), "from-file");
        let err = resolve_token(&with_file, None, |_| Ok("\n".into())).unwrap_err();
        assert!(matches!(err, Invalid { ref key, .. } if key == "source.token_file"));
        let err = resolve_token(&with_file, None, |_| {
            Err(std::io::Error::from(std::io::ErrorKind::NotFound))
        })
        .unwrap_err();
        assert!(matches!(err, Invalid { ref key, .. } if key == "source.token_file"));

        let neither = settings(serde_json::json!({"project": "p"}));
        let token = resolve_token(&neither, Some(" env-token ".into()), unread).unwrap();
        assert_eq!(token.expose(), "env-token");
        let err = resolve_token(&neither, None, unread).unwrap_err();
        assert!(
            matches!(err, Invalid { ref key, ref message } if key == "source.token" && message.contains(TOKEN_ENV))
        );
    }
}
