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

/// Validity of signed URLs: from `clock_skew` ago to `lifetime` ahead.
#[derive(Debug, Clone, Copy)]
pub struct Validity {
    pub lifetime: Duration,
    pub clock_skew: Duration,
    pub protocol: SasProtocol,
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
        let now = OffsetDateTime::now_utc();
        let start = now - self.validity.clock_skew;
        // Whole seconds: the SAS carries seconds, and the reported expiry must not be later.
        let expiry = truncate_seconds(now + self.validity.lifetime);
        Ok(names
            .iter()
            .map(|name| {
                let sas = self.signer.sign(
                    SasResource::Blob {
                        container: &location.container,
                        blob: name,
                    },
                    "r",
                    Some(start),
                    expiry,
                    self.validity.protocol,
                );
                Link {
                    url: format!("{}?{sas}", self.base.url(location, name)),
                    expires_at: Some(expiry),
                }
            })
            .collect())
    }
}

/// A user delegation key and when it stops being usable.
struct CachedKey {
    key: Arc<UserDelegationKey>,
    expires_at: OffsetDateTime,
}

/// Read-only, one-blob user delegation SAS. Keys are cached per account and renewed when less
/// than `2 * lifetime` remains, so a SAS never outlives the key that signed it.
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
        let key_lifetime = (validity.lifetime * 4).min(Duration::from_secs(7 * 24 * 3600 - 60));
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

    /// The account's delegation key, fetched once and shared; renewed before it gets too short
    /// for a full URL lifetime.
    async fn key(
        &self,
        account: &str,
    ) -> Result<(Arc<UserDelegationKey>, OffsetDateTime), SourceError> {
        let now = OffsetDateTime::now_utc();
        let mut keys = self.keys.lock().await;
        if let Some(cached) = keys.get(account)
            && cached.expires_at - now > self.validity.lifetime * 2
        {
            return Ok((cached.key.clone(), cached.expires_at));
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
        let expires_at = truncate_seconds(now + self.key_lifetime);
        let info = KeyInfo {
            start: Some(truncate_seconds(now - self.validity.clock_skew)),
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
        let (key, key_expires_at) = self.key(&location.account).await?;
        let now = OffsetDateTime::now_utc();
        // Never beyond the key's own expiry.
        let expiry = truncate_seconds((now + self.validity.lifetime).min(key_expires_at));
        let start = now - self.validity.clock_skew;
        let protocol = match self.validity.protocol {
            SasProtocol::Https => azure_storage_sas::SasProtocol::Https,
            SasProtocol::HttpsAndHttp => azure_storage_sas::SasProtocol::HttpsAndHttp,
        };
        names
            .iter()
            .map(|name| {
                let sas =
                    azure_storage_sas::SasBuilder::new(location.account.as_str(), &key, expiry)
                        .map_err(|e| source_error("storage", &e))?
                        .blob(location.container.as_str(), *name)
                        .read()
                        .start(start)
                        .protocol(protocol)
                        .build();
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

fn truncate_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 is a valid nanosecond")
}
