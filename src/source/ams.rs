//! Azure Media Services catalog: asset id -> container through ARM (`Assets - Get`, and
//! `Assets - List` with `$filter` for GUIDs and alternate ids), api-version 2023-01-01.
//!
//! Request form: an id is tried as an asset name first; when AMS has no asset of that name, as
//! an `assetId` (when the id is a GUID), then as an `alternateId`.
//!
//! ARM calls go through [`RestClient`] (bearer token from the shared credential, retries within
//! a per-call budget), which the AMS encoder (`jobs::ams`) shares.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use serde::Deserialize;
use url::Url;

use super::rest::{Access, Bearer, ErrorEnvelope, Reply, RestClient};
use super::storage::{CatalogRow, ExportPage};
use super::{AssetLocation, AssetRecord, Catalog, ContainerSas, HealthCheck, SourceError};
use crate::asset_id::AssetId;
use crate::config::{AmsSourceSettings, UpstreamSettings};

const BACKEND: &str = "ams";
/// `Assets - List` pages followed at most (a runaway or looping `@odata.nextLink`).
const MAX_PAGES: usize = 1000;
/// Assets per `Assets - List` page when listing them all (`$top`: AMS's maximum).
const EXPORT_PAGE_SIZE: &str = "1000";
/// Pages followed at most when listing every asset.
const EXPORT_MAX_PAGES: usize = 100_000;

#[derive(Debug, Deserialize)]
struct ArmAsset {
    #[serde(default)]
    name: String,
    properties: ArmAssetProperties,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ArmAssetProperties {
    asset_id: Option<String>,
    alternate_id: Option<String>,
    container: Option<String>,
    storage_account_name: Option<String>,
    storage_encryption_format: Option<String>,
}

#[derive(Debug, Deserialize)]
struct ArmAssetList {
    #[serde(default)]
    value: Vec<ArmAsset>,
    #[serde(rename = "@odata.nextLink")]
    next_link: Option<String>,
}

pub struct AmsCatalog {
    rest: RestClient,
    /// `{arm}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Media/mediaServices/{account}`
    account_url: Url,
    /// `{account_url}/assets`
    assets_url: Url,
    api_version: String,
    default_account: String,
    /// When set, every location carries a `listContainerSas` URL valid this long.
    container_sas_lifetime: Option<Duration>,
}

impl AmsCatalog {
    pub fn new(
        settings: &AmsSourceSettings,
        upstream: &UpstreamSettings,
        http: reqwest::Client,
        credential: Arc<dyn TokenCredential>,
        default_account: &str,
        container_sas_lifetime: Option<Duration>,
    ) -> Result<Self, crate::config::Invalid> {
        let base = settings.arm_endpoint.as_str().trim_end_matches('/');
        let account_url = Url::parse(&format!(
            "{base}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaServices/{}",
            crate::url_path::encode_segment(&settings.subscription_id),
            crate::url_path::encode_segment(&settings.resource_group),
            crate::url_path::encode_segment(&settings.account_name),
        ))
        .map_err(|e| crate::config::Invalid {
            key: "source.arm_endpoint".into(),
            message: e.to_string(),
        })?;
        let mut assets_url = account_url.clone();
        assets_url
            .path_segments_mut()
            .expect("ARM URLs have paths")
            .push("assets");
        let bearer = Bearer::Credential {
            credential,
            scope: format!("{}/.default", settings.arm_audience.trim_end_matches('/')),
        };
        Ok(Self {
            rest: RestClient::new(
                http,
                BACKEND,
                "AMS",
                "ARM refused the service's identity",
                bearer,
                ErrorEnvelope::Arm,
                upstream,
            ),
            account_url,
            assets_url,
            api_version: settings.api_version.clone(),
            default_account: default_account.to_owned(),
            container_sas_lifetime,
        })
    }

    /// The ARM client (shared with the AMS encoder).
    pub fn rest(&self) -> &RestClient {
        &self.rest
    }

    /// `.../mediaServices/{account}` (the AMS encoder builds transform and job URLs on it).
    pub fn account_url(&self) -> &Url {
        &self.account_url
    }

    /// `.../assets/{name}?api-version=...` (Get and CreateOrUpdate).
    pub fn asset_url(&self, name: &str) -> Url {
        let mut url = self.assets_url.clone();
        url.path_segments_mut()
            .expect("ARM URLs have paths")
            .push(name);
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        url
    }

    fn filter_url(&self, filter: &str) -> Url {
        let mut url = self.assets_url.clone();
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version)
            .append_pair("$filter", filter);
        url
    }

    /// One ARM GET with retries; `None` for 404.
    async fn get(
        &self,
        url: &Url,
        operation: &'static str,
    ) -> Result<Option<bytes::Bytes>, SourceError> {
        self.rest.get(url, operation).await
    }

    /// `Assets - List` with a filter, following `@odata.nextLink`; the first match wins.
    async fn find(&self, filter: &str) -> Result<Option<ArmAsset>, SourceError> {
        let mut url = self.filter_url(filter);
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let Some(body) = self.get(&url, "list assets").await? else {
                return Ok(None);
            };
            let page: ArmAssetList = serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed Assets - List answer"))?;
            if let Some(asset) = page.value.into_iter().next() {
                return Ok(Some(asset));
            }
            match self.next_page(page.next_link, &mut seen)? {
                Some(next) => url = next,
                None => return Ok(None),
            }
        }
        Err(upstream("too many pages"))
    }

    /// The page an `@odata.nextLink` leads to; `None` when there is none. Never to another
    /// origin than ARM's (the token goes with every request), never twice (`seen`).
    fn next_page(
        &self,
        next_link: Option<String>,
        seen: &mut HashSet<String>,
    ) -> Result<Option<Url>, SourceError> {
        let Some(next) = next_link.filter(|l| !l.trim().is_empty()) else {
            return Ok(None);
        };
        let next = self
            .assets_url
            .join(next.trim())
            .map_err(|_| upstream("malformed nextLink"))?;
        if next.origin() != self.assets_url.origin() {
            return Err(upstream(
                "a nextLink leads away from the ARM endpoint; not followed",
            ));
        }
        if !seen.insert(next.to_string()) {
            return Err(upstream("the nextLink loops"));
        }
        Ok(Some(next))
    }

    /// Every asset of the account as catalog rows (`catalog export --from ams`): `Assets -
    /// List` with `$top`, following every `@odata.nextLink`; `on_page` sees each page as it
    /// comes. The container is the asset's (else `asset-{assetId}`), the account its
    /// `storageAccountName` (else the configured default), `storageEncryptionFormat` as AMS
    /// reports it: the storage source refuses the encrypted ones as this source does.
    pub async fn export(&self, mut on_page: impl FnMut(ExportPage)) -> Result<(), SourceError> {
        let mut url = self.assets_url.clone();
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version)
            .append_pair("$top", EXPORT_PAGE_SIZE);
        let mut seen = HashSet::from([url.to_string()]);
        for page_number in 0..EXPORT_MAX_PAGES {
            let Some(body) = self.get(&url, "list assets").await? else {
                return Err(if page_number == 0 {
                    self.rest
                        .misconfigured("ARM has no such Media Services account (404 on its assets)")
                } else {
                    upstream("a nextLink page is gone (404)")
                });
            };
            let list: ArmAssetList = serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed Assets - List answer"))?;
            let mut page = ExportPage::default();
            for asset in list.value {
                let p = asset.properties;
                let asset_id = p.asset_id.unwrap_or_default();
                let container = match p.container.filter(|c| !c.is_empty()) {
                    Some(c) => c,
                    None if !asset_id.is_empty() => format!("asset-{asset_id}"),
                    None => {
                        page.skipped
                            .push(format!("{}: neither container nor assetId", asset.name));
                        continue;
                    }
                };
                page.rows.push(CatalogRow {
                    name: asset.name,
                    alternate_id: p.alternate_id.unwrap_or_default(),
                    asset_id,
                    container,
                    storage_account: p
                        .storage_account_name
                        .filter(|a| !a.is_empty())
                        .unwrap_or_else(|| self.default_account.clone()),
                    prefix: String::new(),
                    storage_encryption_format: p.storage_encryption_format.unwrap_or_default(),
                });
            }
            on_page(page);
            match self.next_page(list.next_link, &mut seen)? {
                Some(next) => url = next,
                None => return Ok(()),
            }
        }
        Err(upstream("too many pages"))
    }

    /// `listContainerSas` (Read, expiring within `container_sas_lifetime`): a container SAS
    /// for listing (and, when opted in, for the URLs handed out).
    async fn container_sas(&self, name: &str) -> Result<ContainerSas, SourceError> {
        let lifetime = self
            .container_sas_lifetime
            .ok_or_else(|| upstream("container SAS not enabled"))?;
        let mut url = self.assets_url.clone();
        url.path_segments_mut()
            .expect("ARM URLs have paths")
            .push(name)
            .push("listContainerSas");
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version);
        let expires_at = (time::OffsetDateTime::now_utc() + lifetime)
            .replace_nanosecond(0)
            .expect("0 is a valid nanosecond");
        let body = serde_json::json!({
            "permissions": "Read",
            "expiryTime": expires_at.format(&time::format_description::well_known::Rfc3339).expect("UTC formats"),
        });
        let answer = match self
            .rest
            .call(
                reqwest::Method::POST,
                &url,
                Some(&body),
                Access::Read,
                "listContainerSas",
            )
            .await?
        {
            Reply::Ok { body, .. } => body,
            Reply::NotFound => return Err(SourceError::NotFound),
            Reply::Refused(_) => unreachable!("reads are never `Refused`"),
        };
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct SasUrls {
            #[serde(default)]
            asset_container_sas_urls: Vec<String>,
        }
        let urls: SasUrls = serde_json::from_slice(&answer)
            .map_err(|_| upstream("malformed listContainerSas answer"))?;
        let url = urls
            .asset_container_sas_urls
            .into_iter()
            .find_map(|u| {
                Url::parse(&u)
                    .ok()
                    .filter(|u| u.query().is_some_and(|q| q.contains("sig=")))
            })
            .ok_or_else(|| upstream("listContainerSas returned no usable URL"))?;
        Ok(ContainerSas { url, expires_at })
    }

    fn location(&self, asset: ArmAsset) -> Result<AssetLocation, SourceError> {
        let p = asset.properties;
        if let Some(format) = p.storage_encryption_format.as_deref()
            && format != "None"
        {
            return Err(super::storage::unservable(&asset.name, format));
        }
        let container = match (p.container, p.asset_id) {
            (Some(c), _) if !c.is_empty() => c,
            (_, Some(id)) => format!("asset-{id}"),
            _ => return Err(upstream("the asset has neither container nor assetId")),
        };
        Ok(AssetLocation::new(
            p.storage_account_name
                .filter(|a| !a.is_empty())
                .unwrap_or_else(|| self.default_account.clone()),
            container,
        ))
    }
}

#[async_trait]
impl Catalog for AmsCatalog {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        let asset = self.find_asset(id).await?;
        let name = asset.name.clone();
        let mut location = self.location(asset)?;
        if self.container_sas_lifetime.is_some() {
            location.container_sas = Some(self.container_sas(&name).await?);
        }
        Ok(location)
    }
}

impl AmsCatalog {
    /// The asset an id names (by name, assetId or alternateId).
    pub async fn asset_record(&self, id: &AssetId) -> Result<AssetRecord, SourceError> {
        let asset = self.find_asset(id).await?;
        Ok(AssetRecord {
            name: asset.name,
            storage: asset
                .properties
                .storage_account_name
                .filter(|a| !a.is_empty()),
        })
    }

    /// Get by name; else `$filter` by assetId (GUIDs); else by alternateId.
    async fn find_asset(&self, id: &AssetId) -> Result<ArmAsset, SourceError> {
        if let Some(body) = self.get(&self.asset_url(id.as_str()), "get asset").await? {
            return serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed Assets - Get answer"));
        }
        if let Ok(guid) = uuid::Uuid::try_parse(id.as_str())
            && let Some(asset) = self
                .find(&format!("properties/assetId eq {}", guid.hyphenated()))
                .await?
        {
            return Ok(asset);
        }
        // `'` cannot occur in an asset id, so the literal needs no escaping.
        self.find(&format!("properties/alternateId eq '{}'", id.as_str()))
            .await?
            .ok_or(SourceError::NotFound)
    }
}

#[async_trait]
impl HealthCheck for AmsCatalog {
    fn name(&self) -> &str {
        "ams"
    }

    /// An upstream every replica shares: its outage is reported, never a reason to take this
    /// replica out of the load balancer (cached answers are still served, stale ones too).
    fn required(&self) -> bool {
        false
    }

    async fn check(&self) -> Result<(), String> {
        let mut url = self.assets_url.clone();
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version)
            .append_pair("$top", "1");
        match self.get(&url, "health").await {
            Ok(_) => Ok(()),
            Err(e) => Err(match e {
                SourceError::Misconfigured { .. } => "ARM rejects the service's identity".into(),
                SourceError::Throttled { .. } => "ARM is throttling".into(),
                SourceError::Timeout { .. } => "ARM did not answer in time".into(),
                _ => "ARM is unreachable or failing".into(),
            }),
        }
    }
}

fn upstream(message: &str) -> SourceError {
    SourceError::Upstream {
        backend: BACKEND,
        message: message.to_owned(),
    }
}
