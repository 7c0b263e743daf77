//! Backends: where an asset lives ([`Catalog`]), what is in it ([`BlobStore`]) and how a client
//! reaches a blob ([`Linker`]). They know nothing of caching or HTTP.

pub mod ams;
pub mod instrumented;
pub mod local;
pub mod mkio;
pub mod rest;
pub mod storage;

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;

use crate::asset_id::AssetId;
use crate::model::{BlobEntry, Link};

/// Where an asset's blobs are: a container of a storage account, optionally under a prefix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetLocation {
    /// Storage account (or, for the local source, the root folder's label).
    pub account: String,
    pub container: String,
    /// Blob-name prefix of the asset inside the container ("" for the whole container).
    pub prefix: String,
    /// A container SAS the catalog obtained for this asset (AMS `listContainerSas`).
    pub container_sas: Option<ContainerSas>,
}

impl AssetLocation {
    pub fn new(account: impl Into<String>, container: impl Into<String>) -> Self {
        Self {
            account: account.into(),
            container: container.into(),
            prefix: String::new(),
            container_sas: None,
        }
    }
}

/// A container URL with a SAS query, and when it expires. Its `Debug` hides the query.
#[derive(Clone, PartialEq, Eq)]
pub struct ContainerSas {
    pub url: url::Url,
    pub expires_at: time::OffsetDateTime,
}

impl fmt::Debug for ContainerSas {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ContainerSas")
            .field("container", &self.url.path())
            .field("expires_at", &self.expires_at)
            .finish()
    }
}

/// What the encoder needs to know of an asset (AMS and MK.IO catalogs).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AssetRecord {
    /// The backend's asset name (job inputs and outputs are named so).
    pub name: String,
    /// AMS: the storage account; MK.IO: the storage instance. A job's output goes there too.
    pub storage: Option<String>,
}

/// A backend failure, in domain terms. Only the HTTP layer turns these into status codes.
#[derive(Debug, Clone, thiserror::Error)]
pub enum SourceError {
    #[error("asset not found")]
    NotFound,
    #[error("{backend}: {message}")]
    Upstream {
        backend: &'static str,
        message: String,
    },
    #[error("{backend}: throttled")]
    Throttled {
        backend: &'static str,
        retry_after: Option<Duration>,
    },
    #[error("{backend}: timed out")]
    Timeout { backend: &'static str },
    /// The upstream cannot be reached at all (connection refused, reset, DNS).
    #[error("{backend}: unreachable")]
    Unavailable { backend: &'static str },
    #[error("{backend}: misconfigured: {message}")]
    Misconfigured {
        backend: &'static str,
        message: String,
    },
    /// The asset exists but its blobs cannot be handed out (storage-encrypted by AMS).
    #[error("asset cannot be served: {reason}")]
    Unservable { reason: String },
}

/// Maps an asset id to the place its blobs live.
#[async_trait]
pub trait Catalog: Send + Sync {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError>;

    /// The ids this catalog maps to `container` of `account` without asking an upstream, in
    /// every spelling a caller may have used (a blob written there may change their answers,
    /// and an id cached as "not found" is known only by its id). None by default: a catalog
    /// that cannot tell (AMS, MK.IO: the mapping lives upstream) leaves those to their TTL.
    fn assets_in(&self, account: &str, container: &str) -> Vec<AssetId> {
        let _ = (account, container);
        Vec::new()
    }
}

/// Lists and reads blobs.
#[async_trait]
pub trait BlobStore: Send + Sync {
    /// Every blob under the location (all pages).
    async fn list(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError>;
    /// A small blob's bytes (storyboard VTT files), at most `limit` bytes.
    async fn read(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Bytes, SourceError>;
}

/// Turns blob names into URLs a browser can load.
#[async_trait]
pub trait Linker: Send + Sync {
    /// One link per name, in order.
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError>;
}

/// Writes next to an asset's own blobs (what a job generates, and its state document), with
/// leases so that one replica at a time works on a job. Only the encoder writes.
#[async_trait]
pub trait BlobWriter: Send + Sync {
    /// Where ffmpeg reads blob `name` of the location from: a URL with a read-only SAS for that
    /// blob, valid for `lifetime`, or a file path; with the protocols it needs.
    async fn media_input(
        &self,
        location: &AssetLocation,
        name: &str,
        lifetime: Duration,
    ) -> Result<MediaInput, WriteError>;
    /// A blob's bytes (at most `limit`) and whether a lease is held on it; `None`: no such blob.
    async fn get(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Option<Stored>, WriteError>;
    async fn put(
        &self,
        location: &AssetLocation,
        name: &str,
        body: Bytes,
        content_type: &str,
        condition: PutCondition<'_>,
    ) -> Result<(), WriteError>;
    /// Deletes a blob; one already gone is no error. A leased blob needs its lease.
    async fn delete(
        &self,
        location: &AssetLocation,
        name: &str,
        lease: Option<&Lease>,
    ) -> Result<(), WriteError>;
    /// Takes a lease of `duration` on an existing blob; `None` when another holds one.
    async fn acquire(
        &self,
        location: &AssetLocation,
        name: &str,
        duration: Duration,
    ) -> Result<Option<Lease>, WriteError>;
    /// Renews a held lease; `WriteError::Conflict` when it was lost.
    async fn renew(&self, lease: &Lease) -> Result<(), WriteError>;
    async fn release(&self, lease: &Lease) -> Result<(), WriteError>;
}

/// What ffmpeg reads. Its `Debug` hides the URL's query (a SAS).
#[derive(Clone)]
pub struct MediaInput {
    /// The `-i` argument: an `https://` URL with a SAS, or a path.
    pub target: String,
    /// `-protocol_whitelist`: only what `target` needs.
    pub protocols: &'static str,
    /// `-ca_file`: the private CA that signed the endpoint's certificate (`upstream.ca_file`).
    pub ca_file: Option<std::path::PathBuf>,
}

impl fmt::Debug for MediaInput {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let shown = self.target.split('?').next().unwrap_or_default();
        f.debug_struct("MediaInput")
            .field("target", &shown)
            .field("protocols", &self.protocols)
            .finish()
    }
}

/// A blob as read back, with its lease state.
#[derive(Debug, Clone)]
pub struct Stored {
    pub bytes: Bytes,
    /// Someone (possibly this replica) holds a lease on it.
    pub leased: bool,
}

/// When a put may go ahead.
#[derive(Debug, Clone, Copy)]
pub enum PutCondition<'a> {
    /// Whatever is there (an unleased blob).
    Any,
    /// Only when no blob of that name exists (`If-None-Match: *`).
    Absent,
    /// Under the lease this replica holds on the blob.
    Leased(&'a Lease),
}

/// A held blob lease (or, for a folder, a held file lock).
#[derive(Debug, Clone)]
pub struct Lease {
    pub location: AssetLocation,
    pub name: String,
    pub id: String,
    /// The local source's lock: held while this lives.
    pub lock: Option<Arc<std::fs::File>>,
}

/// Why a write did not happen, in domain terms.
#[derive(Debug, Clone, thiserror::Error)]
pub enum WriteError {
    /// Storage refused the write (a read-only role, a SAS without write permission).
    #[error("storage refused the write (HTTP {status} {code})")]
    Refused { status: u16, code: String },
    /// A condition did not hold: the blob exists (`Absent`), a lease is held by another, or
    /// this replica's lease was lost.
    #[error("conflict: {0}")]
    Conflict(String),
    #[error(transparent)]
    Source(#[from] SourceError),
}

/// A dependency whose state `/readyz` reports.
#[async_trait]
pub trait HealthCheck: Send + Sync {
    fn name(&self) -> &str;
    /// Whether this replica cannot answer while this dependency is down (its own disk; not an
    /// upstream that every replica shares).
    fn required(&self) -> bool;
    async fn check(&self) -> Result<(), String>;
}

/// The backends a resolver works with.
#[derive(Clone)]
pub struct Backend {
    pub catalog: Arc<dyn Catalog>,
    pub store: Arc<dyn BlobStore>,
    pub linker: Arc<dyn Linker>,
    pub health: Vec<Arc<dyn HealthCheck>>,
    /// Folder the service itself serves under `/local/`, when the source is local.
    pub local_root: Option<std::path::PathBuf>,
}

impl fmt::Debug for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Backend")
            .field("local_root", &self.local_root)
            .finish_non_exhaustive()
    }
}
