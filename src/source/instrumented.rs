//! Backends wrapped with upstream metrics (calls, latency, outcome by backend and operation)
//! and a span per call (`locate`, `list`, `read`, `sign`: the upstream tries are its children).
//! The wrapped backends stay ignorant of metrics and spans, as they are of caching.

use std::sync::Arc;
use std::time::Instant;

use async_trait::async_trait;
use bytes::Bytes;
use tokio::sync::Semaphore;
use tracing::Instrument;

use super::{AssetLocation, Backend, BlobStore, Catalog, Linker, SourceError};
use crate::asset_id::AssetId;
use crate::model::{BlobEntry, Link};

struct Instrumented<T: ?Sized> {
    inner: Arc<T>,
    backend: &'static str,
    /// Calls in flight to this upstream (shared by the wrappers of one backend).
    limit: Arc<Semaphore>,
    /// Simulated latency (benchmarks); zero otherwise.
    latency: std::time::Duration,
}

impl<T: ?Sized> Instrumented<T> {
    async fn permit(&self) -> tokio::sync::SemaphorePermit<'_> {
        self.limit
            .acquire()
            .await
            .expect("the semaphore is never closed")
    }
}

fn outcome<T>(result: &Result<T, SourceError>) -> &'static str {
    match result {
        Ok(_) => "ok",
        Err(e) => outcome_of(e),
    }
}

/// The `outcome` label of a failed upstream call.
pub fn outcome_of(error: &SourceError) -> &'static str {
    match error {
        SourceError::NotFound => "not_found",
        SourceError::Throttled { .. } => "throttled",
        SourceError::Timeout { .. } => "timeout",
        SourceError::Unavailable { .. } => "unavailable",
        SourceError::Misconfigured { .. } => "misconfigured",
        SourceError::Unservable { .. } => "unservable",
        SourceError::Upstream { .. } => "error",
    }
}

fn record<T>(
    backend: &'static str,
    operation: &'static str,
    started: Instant,
    result: &Result<T, SourceError>,
) {
    metrics::counter!("upstream_requests_total", "backend" => backend, "operation" => operation, "outcome" => outcome(result)).increment(1);
    metrics::histogram!("upstream_request_duration_seconds", "backend" => backend, "operation" => operation)
        .record(started.elapsed().as_secs_f64());
}

#[async_trait]
impl<T: Catalog + ?Sized> Catalog for Instrumented<T> {
    async fn locate(&self, id: &AssetId) -> Result<AssetLocation, SourceError> {
        let span = tracing::info_span!("locate", backend = self.backend, asset_id = %id, outcome = tracing::field::Empty);
        async {
            let _permit = self.permit().await;
            let started = Instant::now();
            if !self.latency.is_zero() {
                tokio::time::sleep(self.latency).await;
            }
            let result = self.inner.locate(id).await;
            record(self.backend, "locate", started, &result);
            result
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| {
            span.record("outcome", outcome_of(e));
        })
    }

    /// In memory: no upstream call to count or bound.
    fn assets_in(&self, account: &str, container: &str) -> Vec<AssetId> {
        self.inner.assets_in(account, container)
    }
}

#[async_trait]
impl<T: BlobStore + ?Sized> BlobStore for Instrumented<T> {
    async fn list(&self, location: &AssetLocation) -> Result<Vec<BlobEntry>, SourceError> {
        let span = tracing::info_span!(
            "list",
            backend = self.backend,
            blobs = tracing::field::Empty,
            outcome = tracing::field::Empty
        );
        let result = async {
            let _permit = self.permit().await;
            let started = Instant::now();
            let result = self.inner.list(location).await;
            record(self.backend, "list", started, &result);
            result
        }
        .instrument(span.clone())
        .await;
        match &result {
            Ok(blobs) => span.record("blobs", blobs.len()),
            Err(e) => span.record("outcome", outcome_of(e)),
        };
        result
    }

    async fn read(
        &self,
        location: &AssetLocation,
        name: &str,
        limit: usize,
    ) -> Result<Bytes, SourceError> {
        let span = tracing::info_span!(
            "read",
            backend = self.backend,
            outcome = tracing::field::Empty
        );
        async {
            let _permit = self.permit().await;
            let started = Instant::now();
            let result = self.inner.read(location, name, limit).await;
            record(self.backend, "read", started, &result);
            result
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| {
            span.record("outcome", outcome_of(e));
        })
    }
}

#[async_trait]
impl<T: Linker + ?Sized> Linker for Instrumented<T> {
    async fn link(
        &self,
        location: &AssetLocation,
        names: &[&str],
    ) -> Result<Vec<Link>, SourceError> {
        // `sign`: what a linker does to a URL (a SAS, or nothing for public links).
        let span = tracing::info_span!(
            "sign",
            backend = self.backend,
            links = names.len(),
            outcome = tracing::field::Empty
        );
        async {
            let _permit = self.permit().await;
            let started = Instant::now();
            let result = self.inner.link(location, names).await;
            record(self.backend, "link", started, &result);
            result
        }
        .instrument(span.clone())
        .await
        .inspect_err(|e| {
            span.record("outcome", outcome_of(e));
        })
    }
}

impl Backend {
    /// The same backend, each call counted, timed and bounded: at most `max_concurrency`
    /// calls in flight to the catalog, and as many to the store and linker together. `catalog`
    /// names the catalog's backend (local, storage, ams); blobs live in `store`.
    pub fn instrumented(
        self,
        catalog: &'static str,
        store: &'static str,
        max_concurrency: usize,
        latency: std::time::Duration,
    ) -> Self {
        let catalog_limit = Arc::new(Semaphore::new(max_concurrency));
        let store_limit = Arc::new(Semaphore::new(max_concurrency));
        Self {
            catalog: Arc::new(Instrumented {
                inner: self.catalog,
                backend: catalog,
                limit: catalog_limit,
                latency,
            }),
            store: Arc::new(Instrumented {
                inner: self.store,
                backend: store,
                limit: store_limit.clone(),
                latency: std::time::Duration::ZERO,
            }),
            linker: Arc::new(Instrumented {
                inner: self.linker,
                backend: store,
                limit: store_limit,
                latency: std::time::Duration::ZERO,
            }),
            health: self.health,
            local_root: self.local_root,
        }
    }
}
