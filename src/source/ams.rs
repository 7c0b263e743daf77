//! Azure Media Services catalog: asset id -> container through ARM (`Assets - Get`, and
//! `Assets - List` with `$filter` for GUIDs and alternate ids), api-version 2023-01-01.
//!
//! Request form: an id is tried as an asset name first; when AMS has no asset of that name, as
//! an `assetId` (when the id is a GUID), then as an `alternateId`.
//!
//! ARM calls go through the service's reqwest client with a bearer token from the shared
//! credential, and a retry loop of our own: it honours `Retry-After` on 429 only while the
//! wait fits the configured budget (the SDK pipeline's policy has no such budget per call).

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use serde::Deserialize;
use url::Url;

use super::{AssetLocation, Catalog, ContainerSas, HealthCheck, SourceError};
use crate::asset_id::AssetId;
use crate::config::{AmsSourceSettings, UpstreamSettings};

const BACKEND: &str = "ams";
/// `Assets - List` pages followed at most (a runaway or looping `@odata.nextLink`).
const MAX_PAGES: usize = 1000;

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

#[derive(Debug, Deserialize)]
struct ArmErrorBody {
    error: ArmError,
}

#[derive(Debug, Deserialize)]
struct ArmError {
    #[serde(default)]
    code: String,
}

pub struct AmsCatalog {
    http: reqwest::Client,
    credential: Arc<dyn TokenCredential>,
    /// `{arm}/subscriptions/{sub}/resourceGroups/{rg}/providers/Microsoft.Media/mediaServices/{account}/assets`
    assets_url: Url,
    scope: String,
    api_version: String,
    default_account: String,
    upstream: UpstreamSettings,
    /// A rejected configuration is logged once, not on every request.
    misconfiguration_logged: AtomicBool,
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
    ) -> Result<Self, crate::config::ConfigError> {
        let base = settings.arm_endpoint.as_str().trim_end_matches('/');
        let assets_url = Url::parse(&format!(
            "{base}/subscriptions/{}/resourceGroups/{}/providers/Microsoft.Media/mediaServices/{}/assets",
            crate::url_path::encode_segment(&settings.subscription_id),
            crate::url_path::encode_segment(&settings.resource_group),
            crate::url_path::encode_segment(&settings.account_name),
        ))
        .map_err(|e| crate::config::ConfigError::Invalid {
            key: "source.arm_endpoint".into(),
            message: e.to_string(),
        })?;
        Ok(Self {
            http,
            credential,
            assets_url,
            scope: format!("{}/.default", settings.arm_audience.trim_end_matches('/')),
            api_version: settings.api_version.clone(),
            default_account: default_account.to_owned(),
            upstream: upstream.clone(),
            misconfiguration_logged: AtomicBool::new(false),
            container_sas_lifetime,
        })
    }

    fn asset_url(&self, name: &str) -> Url {
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

    /// One ARM GET with retries (see [`Self::send`]).
    async fn get(&self, url: &Url) -> Result<Option<bytes::Bytes>, SourceError> {
        self.send(reqwest::Method::GET, url, None).await
    }

    /// One ARM call with retries: 5xx and connection errors back off, 429 waits `Retry-After`
    /// while that fits the budget. Returns the body of a 2xx, `None` for 404.
    async fn send(
        &self,
        method: reqwest::Method,
        url: &Url,
        body: Option<&serde_json::Value>,
    ) -> Result<Option<bytes::Bytes>, SourceError> {
        let started = Instant::now();
        let mut attempt = 0u32;
        loop {
            let token = self
                .credential
                .get_token(&[self.scope.as_str()], None)
                .await
                .map_err(|_| self.misconfigured("the credential could not get a token for ARM"))?;
            let mut request = self
                .http
                .request(method.clone(), url.clone())
                .bearer_auth(token.token.secret())
                .header("accept", "application/json");
            if let Some(body) = body {
                request = request.json(body);
            }
            let result = request.send().await;
            let retry_in = match result {
                Ok(response) => {
                    let status = response.status().as_u16();
                    let retry_after = response
                        .headers()
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match status {
                        200..=299 => {
                            return response.bytes().await.map(Some).map_err(|e| {
                                if e.is_timeout() {
                                    SourceError::Timeout { backend: BACKEND }
                                } else {
                                    upstream("the answer was cut off")
                                }
                            });
                        }
                        404 => return Ok(None),
                        401 | 403 => {
                            let code = error_code(response).await;
                            return Err(self.misconfigured(&format!(
                                "ARM refused the service's identity ({status} {code})"
                            )));
                        }
                        429 => {
                            let wait = retry_after.unwrap_or(backoff(attempt));
                            if !self.fits(started, attempt, wait) {
                                return Err(SourceError::Throttled {
                                    backend: BACKEND,
                                    retry_after: Some(wait),
                                });
                            }
                            wait
                        }
                        500..=599 => {
                            let wait = retry_after.unwrap_or(backoff(attempt));
                            if !self.fits(started, attempt, wait) {
                                return Err(if status == 503 {
                                    SourceError::Throttled {
                                        backend: BACKEND,
                                        retry_after,
                                    }
                                } else {
                                    upstream(&format!("HTTP {status}"))
                                });
                            }
                            wait
                        }
                        _ => {
                            let code = error_code(response).await;
                            return Err(upstream(&format!("HTTP {status} {code}")));
                        }
                    }
                }
                Err(e) => {
                    let wait = backoff(attempt);
                    if !self.fits(started, attempt, wait) {
                        return Err(if e.is_timeout() {
                            SourceError::Timeout { backend: BACKEND }
                        } else {
                            SourceError::Unavailable { backend: BACKEND }
                        });
                    }
                    wait
                }
            };
            attempt += 1;
            tracing::debug!(
                attempt,
                wait_ms = retry_in.as_millis() as u64,
                "retrying ARM call"
            );
            tokio::time::sleep(retry_in).await;
        }
    }

    /// Whether another try after `wait` stays within the retry count and time budget.
    fn fits(&self, started: Instant, attempt: u32, wait: Duration) -> bool {
        attempt < self.upstream.max_retries
            && started.elapsed() + wait <= self.upstream.retry_budget
    }

    fn misconfigured(&self, message: &str) -> SourceError {
        if !self.misconfiguration_logged.swap(true, Ordering::Relaxed) {
            tracing::error!(
                backend = BACKEND,
                cause = message,
                "AMS rejects the configuration; answering 503 until fixed"
            );
        }
        SourceError::Misconfigured {
            backend: BACKEND,
            message: message.to_owned(),
        }
    }

    /// `Assets - List` with a filter, following `@odata.nextLink`; the first match wins.
    async fn find(&self, filter: &str) -> Result<Option<ArmAsset>, SourceError> {
        let mut url = self.filter_url(filter);
        let mut seen = HashSet::new();
        for _ in 0..MAX_PAGES {
            let Some(body) = self.get(&url).await? else {
                return Ok(None);
            };
            let page: ArmAssetList = serde_json::from_slice(&body)
                .map_err(|_| upstream("malformed Assets - List answer"))?;
            if let Some(asset) = page.value.into_iter().next() {
                return Ok(Some(asset));
            }
            let Some(next) = page.next_link else {
                return Ok(None);
            };
            let next = self
                .assets_url
                .join(&next)
                .map_err(|_| upstream("malformed nextLink"))?;
            if !seen.insert(next.to_string()) {
                return Err(upstream("the nextLink loops"));
            }
            url = next;
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
        let answer = self
            .send(reqwest::Method::POST, &url, Some(&body))
            .await?
            .ok_or(SourceError::NotFound)?;
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
            return Err(SourceError::Unservable {
                reason: format!(
                    "asset {} uses storage encryption {format}: its blobs are encrypted and cannot be served",
                    asset.name
                ),
            });
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
    /// Get by name; else `$filter` by assetId (GUIDs); else by alternateId.
    async fn find_asset(&self, id: &AssetId) -> Result<ArmAsset, SourceError> {
        if let Some(body) = self.get(&self.asset_url(id.as_str())).await? {
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

    fn required(&self) -> bool {
        true
    }

    async fn check(&self) -> Result<(), String> {
        let mut url = self.assets_url.clone();
        url.query_pairs_mut()
            .append_pair("api-version", &self.api_version)
            .append_pair("$top", "1");
        match self.get(&url).await {
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

/// 200 ms, 400 ms, 800 ms, … capped at 2 s, with ±25 % jitter.
fn backoff(attempt: u32) -> Duration {
    let base = 200u64.saturating_mul(1 << attempt.min(4)).min(2000);
    let jitter = (uuid::Uuid::new_v4().as_u128() % 51) as u64; // 0..=50 %
    Duration::from_millis(base * (75 + jitter) / 100)
}

async fn error_code(response: reqwest::Response) -> String {
    response
        .bytes()
        .await
        .ok()
        .and_then(|b| serde_json::from_slice::<ArmErrorBody>(&b).ok())
        .map(|b| b.error.code)
        .unwrap_or_default()
}
