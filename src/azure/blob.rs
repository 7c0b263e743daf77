//! Blob Storage: listing an asset's container (every page) and reading small blobs, with the
//! Azure SDK. The SDK has no Shared Key, so account-key access lists through a container SAS
//! (`sp=l`) signed here; that SAS never leaves the service.

use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use azure_core::credentials::TokenCredential;
use azure_core::http::{ClientOptions, Url};
use azure_storage_blob::models::BlobContainerClientListBlobsOptions;
use azure_storage_blob::{BlobContainerClient, BlobContainerClientOptions};
use bytes::Bytes;
use futures::TryStreamExt;
use time::OffsetDateTime;

use super::sas::{AccountKeySigner, SasProtocol, SasResource};
use super::source_error;
use crate::model::BlobEntry;
use crate::source::{AssetLocation, BlobStore, SourceError};
use crate::url_path::{encode_blob_name, encode_segment};

const BACKEND: &str = "storage";
/// Lifetime of the listing SAS: one listing, with room for retries.
const LIST_SAS_LIFETIME: Duration = Duration::from_secs(15 * 60);
/// A container with more blobs than this is refused (a runaway or looping listing).
const MAX_BLOBS: usize = 1_000_000;

/// The blob service endpoint of each account, from a template (`https://{account}.blob...`).
#[derive(Debug, Clone)]
pub struct BlobEndpoint {
    template: String,
}

impl BlobEndpoint {
    pub fn new(template: &str) -> Self {
        Self {
            // A trailing slash makes the SDK address the service (List Containers) instead of
            // the container, and answer 0 blobs without an error.
            template: template.trim_end_matches('/').to_owned(),
        }
    }

    /// The account's blob service URL (no trailing slash).
    pub fn service_url(&self, account: &str) -> String {
        self.template.replace("{account}", account)
    }

    /// `{endpoint}/{container}`.
    pub fn container_url(&self, account: &str, container: &str) -> String {
        format!(
            "{}/{}",
            self.service_url(account),
            encode_segment(container)
        )
    }

    /// `{endpoint}/{container}/{blob}`, the blob name's folders kept.
    pub fn blob_url(&self, account: &str, container: &str, blob: &str) -> String {
        format!(
            "{}/{}",
            self.container_url(account, container),
            encode_blob_name(blob)
        )
    }
}

/// How the service itself authenticates to Blob Storage.
#[derive(Clone)]
pub enum StorageAccess {
    Anonymous,
    AccountKey {
        signer: AccountKeySigner,
        protocol: SasProtocol,
    },
    Entra(Arc<dyn TokenCredential>),
    /// The container SAS the catalog put in the location (AMS `listContainerSas`).
    LocationSas,
}

pub struct AzureBlobStore {
    endpoint: BlobEndpoint,
    access: StorageAccess,
    options: ClientOptions,
    page_size: u32,
    /// Upper bound on one list or read, retries included: the SDK waits out any
    /// `Retry-After` before it checks its own budget.
    deadline: Duration,
}

impl AzureBlobStore {
    pub fn new(
        endpoint: BlobEndpoint,
        access: StorageAccess,
        options: ClientOptions,
        page_size: u32,
        deadline: Duration,
    ) -> Self {
        Self {
            endpoint,
            access,
            options,
            page_size,
            deadline,
        }
    }

    fn container_client(
        &self,
        location: &AssetLocation,
    ) -> Result<BlobContainerClient, SourceError> {
        let mut url = Url::parse(
            &self
                .endpoint
                .container_url(&location.account, &location.container),
        )
        .map_err(|_| SourceError::Misconfigured {
            backend: BACKEND,
            message: "the storage endpoint does not form a URL".into(),
        })?;
        let credential = match &self.access {
            StorageAccess::LocationSas => {
                let sas =
                    location
                        .container_sas
                        .as_ref()
                        .ok_or_else(|| SourceError::Misconfigured {
                            backend: BACKEND,
                            message: "no container SAS for this asset".into(),
                        })?;
                url = sas.url.clone();
                None
            }
            StorageAccess::Anonymous => None,
            StorageAccess::Entra(credential) => Some(credential.clone()),
            StorageAccess::AccountKey { signer, protocol } => {
                if signer.account() != location.account {
                    return Err(SourceError::Misconfigured {
                        backend: BACKEND,
                        message: "the asset lives in a storage account whose key is not configured"
                            .into(),
                    });
                }
                // `l` to list and `r` to read the storyboard VTT.
                let sas = signer.sign(
                    SasResource::Container {
                        container: &location.container,
                    },
                    "rl",
                    None,
                    OffsetDateTime::now_utc() + LIST_SAS_LIFETIME,
                    *protocol,
                    None,
                );
                url.set_query(Some(&sas));
                None
            }
        };
        BlobContainerClient::new(
            url,
            credential,
            Some(BlobContainerClientOptions {
                client_options: self.options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| source_error(BACKEND, &e))
    }
}

#[async_trait]
impl BlobStore for AzureBlobStore {
    async fn list(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
        tokio::time::timeout(self.deadline, self.list_all(location))
            .await
            .unwrap_or(Err(SourceError::Timeout { backend: BACKEND }))
    }

    async fn read(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Bytes, SourceError> {
        tokio::time::timeout(self.deadline, self.read_one(location, name, limit))
            .await
            .unwrap_or(Err(SourceError::Timeout { backend: BACKEND }))
    }
}

impl AzureBlobStore {
    async fn list_all(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
        let client = self.container_client(location)?;
        let options = BlobContainerClientListBlobsOptions {
            prefix: (!location.prefix.is_empty()).then(|| location.prefix.clone()),
            maxresults: Some(self.page_size as i32),
            ..Default::default()
        };
        let mut pages = client
            .list_blobs(Some(options))
            .map_err(|e| source_error(BACKEND, &e))?
            .into_pages();
        let mut blobs = Vec::new();
        let mut page_count = 0u64;
        // A marker seen twice means the listing loops; a name seen twice is listed once.
        let mut markers = std::collections::HashSet::new();
        let mut names = std::collections::HashSet::new();
        while let Some(page) = pages
            .try_next()
            .await
            .map_err(|e| source_error(BACKEND, &e))?
        {
            page_count += 1;
            let page = page.into_model().map_err(|e| source_error(BACKEND, &e))?;
            if let Some(marker) = page.next_marker.as_ref().filter(|m| !m.is_empty())
                && !markers.insert(marker.clone())
            {
                return Err(SourceError::Upstream {
                    backend: BACKEND,
                    message: "the listing's NextMarker loops".into(),
                });
            }
            for item in page.blob_items {
                let Some(name) = item.name else { continue };
                if item.deleted == Some(true) || !names.insert(name.clone()) {
                    continue;
                }
                let properties = item.properties.unwrap_or_default();
                blobs.push(BlobEntry {
                    name,
                    size: properties.content_length.unwrap_or(0),
                    content_type: properties.content_type.filter(|c| !c.is_empty()),
                    dimensions: None,
                });
            }
            if blobs.len() > MAX_BLOBS {
                return Err(SourceError::Upstream {
                    backend: BACKEND,
                    message: format!("more than {MAX_BLOBS} blobs in one container"),
                });
            }
        }
        tracing::debug!(
            container = %location.container,
            blobs = blobs.len(),
            pages = page_count,
            "listed container"
        );
        Ok(blobs)
    }

    async fn read_one(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Bytes, SourceError> {
        let client = self.container_client(location)?.blob_client(name);
        let mut buffer = vec![0u8; limit];
        let result = client
            .download_into(&mut buffer, None)
            .await
            .map_err(|e| source_error(BACKEND, &e))?;
        buffer.truncate(result.len);
        Ok(Bytes::from(buffer))
    }
}
