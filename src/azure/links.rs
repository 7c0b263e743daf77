//! Linkers: the URL a client gets for a blob. Plain (public container or CDN), a service SAS
//! signed with the account key, or a user delegation SAS (no key shared: the service asks
//! Storage for a delegation key with its Entra ID identity, and renews it before it expires).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Url};
use azure_storage_blob::models::KeyInfo;
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use azure_storage_common::models::UserDelegationKey;
use time::OffsetDateTime;
use tokio::sync::Mutex;

use super::blob::BlobEndpoint;
use super::sas::{AccountKeySigner, SasProtocol, SasResource};
use super::source_error;
use super::validity::{Validity, truncate_seconds};
use crate::config::MAX_KEY_AHEAD;
use crate::model::Link;
use crate::source::{AssetLocation, Linker, SourceError};
use crate::url_path::{encode_blob_name, encode_segment};

/// Where URLs point: the storage endpoint, or a CDN base that replaces it.
#[derive(Debug, Clone)]
pub struct LinkBase {
    endpoint: BlobEndpoint,
    cdn_base: Option<String>,
}

impl LinkBase {
    pub fn new(endpoint: BlobEndpoint, cdn_base: Option<&Url>) -> Self {
        Self {
            endpoint,
            cdn_base: cdn_base.map(|u| u.as_str().trim_end_matches('/').to_owned()),
        }
    }

    fn url(&self, location: &AssetLocation, blob: &str) -> String {
        match &self.cdn_base {
            Some(base) => format!(
                "{base}/{}/{}",
                encode_segment(&location.container),
                encode_blob_name(blob)
            ),
            None => self
                .endpoint
                .blob_url(&location.account, &location.container, blob),
        }
    }
}

/// Unsigned URLs: the container is public, or a CDN in front of it handles access.
pub struct PublicLinker {
    pub base: LinkBase,
}

#[async_trait]
impl Linker for PublicLinker {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        Ok(names
            .iter()
            .map(|name| Link {
                url: self.base.url(location, name),
                expires_at: None,
            })
            .collect())
    }
}

/// Read-only, one-blob service SAS signed with the account key.
pub struct AccountKeySasLinker {
    pub base: LinkBase,
    pub signer: AccountKeySigner,
    pub validity: Validity,
}

#[async_trait]
impl Linker for AccountKeySasLinker {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        if self.signer.account() != location.account {
            return Err(SourceError::Misconfigured {
                backend: "storage",
                message: "the asset lives in a storage account whose key is not configured".into(),
            });
        }
        let span = self.validity.span(OffsetDateTime::now_utc());
        Ok(names
            .iter()
            .map(|name| {
                let sas = self.signer.sign(
                    SasResource::Blob {
                        container: &location.container,
                        blob: name,
                    },
                    "r",
                    Some(span.start),
                    span.expiry,
                    self.validity.protocol,
                    self.validity.cache_control.as_deref(),
                );
                Link {
                    url: format!("{}?{sas}", self.base.url(location, name)),
                    expires_at: Some(span.expiry),
                }
            })
            .collect())
    }
}

/// A user delegation key, when it stops being usable, and (with a window) the key period it
/// was asked for.
struct CachedKey {
    key: Arc<UserDelegationKey>,
    expires_at: OffsetDateTime,
    period: Option<OffsetDateTime>,
}

/// Read-only, one-blob user delegation SAS. Keys are cached per account and renewed when less
/// than `2 * lifetime` remains, so a SAS never outlives the key that signed it. With a window,
/// keys are asked for per key period instead (start and expiry on window boundaries): one key
/// signs every URL of a window, so refreshes within it sign the same URL, and every replica
/// asks for the same start and expiry.
pub struct UserDelegationLinker {
    pub base: LinkBase,
    pub endpoint: BlobEndpoint,
    pub credential: Arc<dyn TokenCredential>,
    pub options: ClientOptions,
    pub validity: Validity,
    /// How long a requested delegation key is valid (Azure allows at most 7 days).
    pub key_lifetime: Duration,
    keys: Mutex<HashMap<String, CachedKey>>,
}

impl UserDelegationLinker {
    pub fn new(
        base: LinkBase,
        endpoint: BlobEndpoint,
        credential: Arc<dyn TokenCredential>,
        options: ClientOptions,
        validity: Validity,
    ) -> Self {
        // Four URL lifetimes (renewed after two), within Azure's 7-day maximum.
        let key_lifetime = (validity.lifetime * 4).min(MAX_KEY_AHEAD);
        Self {
            base,
            endpoint,
            credential,
            options,
            validity,
            key_lifetime,
            keys: Mutex::new(HashMap::new()),
        }
    }

    /// The account's delegation key for URLs signed at `now`, fetched once and shared;
    /// renewed before it gets too short for a full URL lifetime, or with a window when the key
    /// period changes.
    async fn key(
        &self,
        account: &str,
        now: OffsetDateTime,
    ) -> Result<(Arc<UserDelegationKey>, OffsetDateTime), SourceError> {
        let period = self.validity.key_period(now);
        let mut keys = self.keys.lock().await;
        if let Some(cached) = keys.get(account) {
            let usable = match period {
                Some((start, _)) => cached.period == Some(start),
                None => cached.expires_at - now > self.validity.lifetime * 2,
            };
            if usable {
                return Ok((cached.key.clone(), cached.expires_at));
            }
        }
        let service_url = Url::parse(&self.endpoint.service_url(account)).map_err(|_| {
            SourceError::Misconfigured {
                backend: "storage",
                message: "the storage endpoint does not form a URL".into(),
            }
        })?;
        let client = BlobServiceClient::new(
            service_url,
            Some(self.credential.clone()),
            Some(BlobServiceClientOptions {
                client_options: self.options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| source_error("storage", &e))?;
        let (start, expires_at) = match period {
            // Up to the `se` of the period's last window.
            Some((start, length)) => (
                start - self.validity.clock_skew,
                start + length - self.validity.window + self.validity.lifetime,
            ),
            None => (now - self.validity.clock_skew, now + self.key_lifetime),
        };
        let expires_at = truncate_seconds(expires_at);
        let info = KeyInfo {
            start: Some(truncate_seconds(start)),
            expiry: Some(expires_at),
            ..Default::default()
        };
        let request = info.try_into().map_err(|e| source_error("storage", &e))?;
        let key = client
            .get_user_delegation_key(request, None)
            .await
            .map_err(|e| source_error("storage", &e))?
            .into_model()
            .map_err(|e| source_error("storage", &e))?;
        let expires_at = key.signed_expiry.unwrap_or(expires_at);
        tracing::info!(account, key_expires_at = %expires_at, "user delegation key obtained");
        let key = Arc::new(key);
        keys.insert(
            account.to_owned(),
            CachedKey {
                key: key.clone(),
                expires_at,
                period: period.map(|(start, _)| start),
            },
        );
        Ok((key, expires_at))
    }
}

#[async_trait]
impl Linker for UserDelegationLinker {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        // One instant for the key and the span: both belong to the same window.
        let now = OffsetDateTime::now_utc();
        let (key, key_expires_at) = self.key(&location.account, now).await?;
        let span = self.validity.span(now);
        // Never beyond the key's own expiry.
        let expiry = span.expiry.min(key_expires_at);
        let protocol = match self.validity.protocol {
            SasProtocol::Https => azure_storage_sas::SasProtocol::Https,
            SasProtocol::HttpsAndHttp => azure_storage_sas::SasProtocol::HttpsAndHttp,
        };
        names
            .iter()
            .map(|name| {
                let mut builder =
                    azure_storage_sas::SasBuilder::new(location.account.as_str(), &key, expiry)
                        .map_err(|e| source_error("storage", &e))?
                        .blob(location.container.as_str(), *name)
                        .read()
                        .start(span.start)
                        .protocol(protocol);
                if let Some(cache_control) = &self.validity.cache_control {
                    builder = builder.cache_control(cache_control.as_str());
                }
                let sas = builder.build();
                Ok(Link {
                    url: format!("{}?{sas}", self.base.url(location, name)),
                    expires_at: Some(expiry),
                })
            })
            .collect()
    }
}

/// Opt-in: URLs carrying the AMS container SAS (read and list of the whole container).
pub struct AmsContainerSasLinker {
    pub cdn_base: Option<String>,
}

#[async_trait]
impl Linker for AmsContainerSasLinker {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        let sas = location
            .container_sas
            .as_ref()
            .ok_or_else(|| SourceError::Misconfigured {
                backend: "ams",
                message: "no container SAS for this asset".into(),
            })?;
        let query = sas.url.query().unwrap_or_default();
        let container_url = match &self.cdn_base {
            Some(base) => format!("{base}/{}", encode_segment(&location.container)),
            None => {
                let mut u = sas.url.clone();
                u.set_query(None);
                u.as_str().trim_end_matches('/').to_owned()
            }
        };
        Ok(names
            .iter()
            .map(|name| Link {
                url: format!("{container_url}/{}?{query}", encode_blob_name(name)),
                expires_at: Some(sas.expires_at),
            })
            .collect())
    }
}
