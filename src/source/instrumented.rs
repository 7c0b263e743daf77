//! Backends wrapped with upstream metrics (calls, latency, outcome by backend and operation).
//! The wrapped backends stay ignorant of metrics, as they are of caching.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;

use super::{AssetLocation, Backend, BlobStore, Catalog, Linker, SourceError};
use crate::asset_id::AssetId;
use crate::model::{BlobEntry, Link};

struct Instrumented<T: ?Sized> {
    inner: Arc<T>,
    backend: &'static str,
}

fn outcome<T>(result: &Result<T, SourceError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(SourceError::NotFound) => "not_found",
        Err(SourceError::Throttled { .. }) => "throttled",
        Err(SourceError::Timeout { .. }) => "timeout",
        Err(SourceError::Misconfigured { .. }) => "misconfigured",
        Err(SourceError::Unservable { .. }) => "unservable",
        Err(SourceError::Upstream { .. }) => "error",
    }
}

fn record<T>(backend: &'static str, operation: &'static str, started: Instant, result: &Result<T, SourceError>) {
    metrics::counter!("upstream_requests_total", "backend" => backend, "operation" => operation, "outcome" => outcome(result)).increment(1);
    metrics::histogram!("upstream_request_duration_seconds", "backend" => backend, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}

#[async_trait]
impl<T: Catalog + ?Sized> Catalog for Instrumented<T> {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        let started = Instant::now();
        let result = self.inner.locate(id).await;
        record(self.backend, "locate", started, &result);
        result
    }
}

#[async_trait]
impl<T: BlobStore + ?Sized> BlobStore for Instrumented<T> {
    async fn list(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
        let started = Instant::now();
        let result = self.inner.list(location).await;
        record(self.backend, "list", started, &result);
        result
    }

    async fn read(&self, location: &AssetLocation, name: &str, limit: usize) -> Result<Bytes, SourceError> {
        let started = Instant::now();
        let result = self.inner.read(location, name, limit).await;
        record(self.backend, "read", started, &result);
        result
    }
}

#[async_trait]
impl<T: Linker + ?Sized> Linker for Instrumented<T> {
    async fn link(&self, location: &AssetLocation, names: &[&str]) -> Result<Vec<Link>, SourceError> {
        let started = Instant::now();
        let result = self.inner.link(location, names).await;
        record(self.backend, "link", started, &result);
        result
    }
}

impl Backend {
    /// The same backend, each call counted and timed. `catalog` names the catalog's backend
    /// (local, storage, ams); blobs live in `store` (local or storage).
    pub fn instrumented(self, catalog: &'static str, store: &'static str) -> Self {
        Self {
            catalog: Arc::new(Instrumented { inner: self.catalog, backend: catalog }),
            store: Arc::new(Instrumented { inner: self.store, backend: store }),
            linker: Arc::new(Instrumented { inner: self.linker, backend: store }),
            health: self.health,
            local_root: self.local_root,
        }
    }
}
