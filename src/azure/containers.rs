//! Listing a storage account's containers (Blob Storage `List Containers`, every page), with
//! the Azure SDK's service client and the access the blob store uses: an account SAS that
//! only lists (`ss=b&srt=s&sp=l`, signed here with the account key), or the Entra ID
//! credential. `catalog scan` uses it; the service itself never lists containers.

use std::collections::HashSet;
use std::time::Duration;

use azure_core::http::{ClientOptions, Url};
use azure_storage_blob::models::BlobServiceClientListContainersOptions;
use azure_storage_blob::{BlobServiceClient, BlobServiceClientOptions};
use futures::TryStreamExt;
use time::OffsetDateTime;

use super::blob::{BlobEndpoint, StorageAccess};
use super::source_error;
use crate::config::Invalid;
use crate::source::SourceError;

const BACKEND: &str = "storage";
/// Lifetime of the listing SAS: one listing of many pages, with room for retries.
const LIST_SAS_LIFETIME: Duration = Duration::from_secs(60 * 60);
/// Pages followed at most (a runaway or looping listing).
const MAX_PAGES: usize = 100_000;

/// Lists the containers of the configured account.
pub struct ContainerLister {
    endpoint: BlobEndpoint,
    account: String,
    access: StorageAccess,
    options: ClientOptions,
    page_size: u32,
}

impl ContainerLister {
    pub fn new(
        endpoint: BlobEndpoint,
        account: &str,
        access: StorageAccess,
        options: ClientOptions,
        page_size: u32,
    ) -> Self {
        Self {
            endpoint,
            account: account.to_owned(),
            access,
            options,
            page_size,
        }
    }

    /// The account listed.
    pub fn account(&self) -> &str {
        &self.account
    }

    /// Whether the configured access can list containers at all: anonymous access and AMS
    /// container SAS cannot (the service needs neither to list containers when it serves).
    pub fn check(&self) -> Result<(), Invalid> {
        match self.access {
            StorageAccess::AccountKey { .. } | StorageAccess::Entra(_) => Ok(()),
            StorageAccess::Anonymous | StorageAccess::LocationSas => Err(Invalid::new(
                "storage.auth",
                "listing containers needs storage.auth = \"account-key\" or \"entra\"",
            )),
        }
    }

    fn client(&self) -> Result<BlobServiceClient, SourceError> {
        // The trailing slash addresses the service (List Containers), path-style too.
        let mut url = Url::parse(&format!("{}/", self.endpoint.service_url(&self.account)))
            .map_err(|_| SourceError::Misconfigured {
                backend: BACKEND,
                message: "the storage endpoint does not form a URL".into(),
            })?;
        let credential = match &self.access {
            StorageAccess::Entra(credential) => Some(credential.clone()),
            StorageAccess::AccountKey { signer, protocol } => {
                url.set_query(Some(&signer.sign_container_listing(
                    OffsetDateTime::now_utc() + LIST_SAS_LIFETIME,
                    *protocol,
                )));
                None
            }
            StorageAccess::Anonymous | StorageAccess::LocationSas => {
                return Err(SourceError::Misconfigured {
                    backend: BACKEND,
                    message: "no credential that may list containers".into(),
                });
            }
        };
        BlobServiceClient::new(
            url,
            credential,
            Some(BlobServiceClientOptions {
                client_options: self.options.clone(),
                ..Default::default()
            }),
        )
        .map_err(|e| source_error(BACKEND, &e))
    }

    /// Every container whose name starts with `prefix`, page by page: `on_page` sees each
    /// page's names (soft-deleted containers left out) as they come.
    pub async fn list(
        &self,
        prefix: &str,
        mut on_page: impl FnMut(Vec<String>),
    ) -> Result<(), SourceError> {
        let options = BlobServiceClientListContainersOptions {
            prefix: (!prefix.is_empty()).then(|| prefix.to_owned()),
            maxresults: Some(self.page_size as i32),
            ..Default::default()
        };
        let mut pages = self
            .client()?
            .list_containers(Some(options))
            .map_err(|e| source_error(BACKEND, &e))?
            .into_pages();
        let mut markers = HashSet::new();
        for _ in 0..MAX_PAGES {
            let Some(page) = pages
                .try_next()
                .await
                .map_err(|e| source_error(BACKEND, &e))?
            else {
                return Ok(());
            };
            let page = page.into_model().map_err(|e| source_error(BACKEND, &e))?;
            if let Some(marker) = page.next_marker.as_ref().filter(|m| !m.is_empty())
                && !markers.insert(marker.clone())
            {
                return Err(SourceError::Upstream {
                    backend: BACKEND,
                    message: "the listing's NextMarker loops".into(),
                });
            }
            on_page(
                page.container_items
                    .into_iter()
                    .filter(|item| item.deleted != Some(true))
                    .filter_map(|item| item.name)
                    .collect(),
            );
        }
        Err(SourceError::Upstream {
            backend: BACKEND,
            message: "too many pages".into(),
        })
    }
}
