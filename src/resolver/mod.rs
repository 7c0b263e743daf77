//! The resolver: asset id -> thumbnails with working URLs, through a moka cache.
//!
//! One load per asset however many requests arrive at once (`try_get_with` coalesces them);
//! each entry expires by its own clock (the TTL, or earlier so that no URL handed out from the
//! cache has less than `min_validity` left); "not found" is remembered briefly; failures are
//! never cached. A hit returns the JSON rendered at load time: no serialization per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;
use tracing::Instrument;

mod entry;
mod load;
mod read_index;
pub mod render;
mod shared;

use entry::{Entry, weight};
pub use entry::{Resolved, ThumbnailView};
use read_index::ReadIndex;
pub use shared::SharedTier;

use crate::asset_id::AssetId;
use crate::config::CacheSettings;
use crate::recognise::Recogniser;
use crate::source::{Backend, SourceError};

/// Why an asset could not be resolved.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ResolveError {
    #[error("asset not found")]
    NotFound,
    #[error(transparent)]
    Source(Arc<SourceError>),
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    hits: AtomicU64,
    loads: AtomicU64,
    renders: AtomicU64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Requests answered from the cache (found or not found).
    pub hits: u64,
    /// Loads from the backend (one per miss, however many requests waited on it).
    pub loads: u64,
    /// JSON renderings (one per successful load).
    pub renders: u64,
}

struct EntryExpiry;

impl Expiry<Arc<str>, Entry> for EntryExpiry {
    fn expire_after_create(
        &self,
        _key: &Arc<str>,
        value: &Entry,
        created_at: Instant,
    ) -> Option<Duration> {
        Some(value.valid_until().saturating_duration_since(created_at))
    }
}

/// One hit in this many served from the [`ReadIndex`] is also read through moka.
const READ_SAMPLE: u32 = 16;

struct Inner {
    /// When assets were last invalidated here, for loads that were in flight then.
    invalidated: std::sync::Mutex<std::collections::HashMap<Box<str>, Instant>>,
    /// Assets whose background refresh is running.
    refreshing: std::sync::Mutex<std::collections::HashSet<Arc<str>>>,
    /// Longest a background refresh may run (the request timeout).
    refresh_deadline: Duration,
    cache: Cache<Arc<str>, Entry, foldhash::fast::RandomState>,
    /// The found entries of `cache`, for hits (see [`ReadIndex`]).
    hot: Arc<ReadIndex>,
    backend: Backend,
    recogniser: Recogniser,
    policy: CacheSettings,
    /// The tier the replicas share (Redis), when configured.
    shared: Option<SharedTier>,
    stats: Stats,
    counters: Counters,
}

/// Metric handles of the hit path, registered once (not per request).
struct Counters {
    hits: metrics::Counter,
    stale_served: metrics::Counter,
}

impl std::fmt::Debug for Resolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolver")
            .field("entries", &self.inner.cache.entry_count())
            .finish_non_exhaustive()
    }
}

/// The resolver (cheap to clone: clones share the cache).
#[derive(Clone)]
pub struct Resolver {
    inner: Arc<Inner>,
}

/// A resolved asset and whether it was served past its freshness (stale-while-revalidate).
#[derive(Debug, Clone)]
pub struct Resolution {
    pub resolved: Arc<Resolved>,
    pub stale: bool,
    /// When the entry was looked up (its freshness was judged at this instant).
    pub at: Instant,
}

impl Resolution {
    /// The JSON answer and its ETag, for one response.
    ///
    /// Both are views of the entry's buffer held through the entry's own reference count
    /// (`Bytes::from_owner`): a clone of `body` would count in the buffer's separate shared
    /// header instead, one more cache line no recent request has read when hits spread over
    /// many entries (perf: ~2 % of a hit's CPU time). The owner is a small fresh allocation.
    pub fn answer(&self) -> (Bytes, HeaderValue) {
        let r = &self.resolved;
        let buffer = Bytes::from_owner(Answer(r.clone()));
        let etag =
            HeaderValue::from_maybe_shared(buffer.slice(r.etag.range())).expect("a hex ETag");
        (buffer.slice(r.body.range()), etag)
    }
}

/// Owner of a [`Resolution::answer`]'s bytes: the entry.
struct Answer(Arc<Resolved>);

impl AsRef<[u8]> for Answer {
    fn as_ref(&self) -> &[u8] {
        &self.0.buffer
    }
}

impl std::ops::Deref for Resolution {
    type Target = Resolved;
    fn deref(&self) -> &Resolved {
        &self.resolved
    }
}

impl Resolver {
    /// A resolver over `backend`: `policy` bounds the cache, `refresh_deadline` a background
    /// refresh (no request timeout bounds one), `recogniser` reads the blob names.
    pub fn new(
        policy: CacheSettings,
        refresh_deadline: Duration,
        recogniser: Recogniser,
        backend: Backend,
    ) -> Self {
        Self::with_shared_tier(policy, refresh_deadline, recogniser, backend, None)
    }

    /// A resolver with `shared` behind its cache; its notice listener runs (on the current
    /// runtime) as long as the resolver lives.
    pub fn with_shared_tier(
        policy: CacheSettings,
        refresh_deadline: Duration,
        recogniser: Recogniser,
        backend: Backend,
        shared: Option<SharedTier>,
    ) -> Self {
        let inner = Arc::new(Inner::new(
            policy,
            refresh_deadline,
            recogniser,
            backend,
            shared,
        ));
        // Without a runtime (`check-config` builds everything without serving) nothing listens.
        if inner.shared.is_some()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            runtime.spawn(shared::listen::listen(Arc::downgrade(&inner)));
        }
        Self { inner }
    }

    /// Whether the shared tier works (`None`: there is none).
    pub async fn shared_tier_check(&self) -> Option<bool> {
        match &self.inner.shared {
            Some(tier) => Some(tier.check().await),
            None => None,
        }
    }

    /// The asset's thumbnails, from the cache or loaded once for all concurrent callers. Past
    /// `cache.ttl` an entry is still served (marked stale) while one background refresh runs;
    /// a failed refresh keeps it, up to `cache.max_stale` and never with URLs below
    /// `cache.min_validity`.
    pub async fn resolve(&self, id: &AssetId) -> Result<Resolution, ResolveError> {
        // One clock reading per hit, for the index's validity check and the freshness.
        let now = Instant::now();
        if let Some(found) = self.inner.hot.get(id.as_str(), now) {
            self.sample_read(id.as_str()).await;
            return self.hit(Entry::Found(found), now, || id.clone());
        }
        match self.inner.cache.get(id.as_str()).await {
            Some(entry) => {
                // Held by moka but not in the index (it lost a race with a removal notice).
                if let Entry::Found(r) = &entry {
                    self.inner.publish(id.key(), r).await;
                }
                self.hit(entry, Instant::now(), || id.clone())
            }
            // A span on the miss path only: a hit stays one lookup and one clock reading.
            None => {
                self.miss(id)
                    .instrument(tracing::info_span!("resolve", asset_id = %id))
                    .await
            }
        }
    }

    /// Tells moka of one hit in [`READ_SAMPLE`] served from the read index, so that its
    /// eviction order and admission frequencies still follow what is read.
    async fn sample_read(&self, id: &str) {
        thread_local! {
            static HITS: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
        }
        let n = HITS.with(|h| {
            let n = h.get().wrapping_add(1);
            h.set(n);
            n
        });
        if n.is_multiple_of(READ_SAMPLE) {
            let _ = self.inner.cache.get(id).await;
        }
    }

    fn hit(
        &self,
        entry: Entry,
        at: Instant,
        id: impl FnOnce() -> AssetId,
    ) -> Result<Resolution, ResolveError> {
        let inner = &self.inner;
        inner.stats.hits.fetch_add(1, Ordering::Relaxed);
        inner.counters.hits.increment(1);
        match entry {
            Entry::Found(resolved) => {
                let stale = at >= resolved.fresh_until;
                if stale {
                    inner.counters.stale_served.increment(1);
                    self.refresh_in_background(&id(), resolved.clone());
                }
                Ok(Resolution {
                    resolved,
                    stale,
                    at,
                })
            }
            Entry::NotFound { .. } => Err(ResolveError::NotFound),
        }
    }

    async fn miss(&self, id: &AssetId) -> Result<Resolution, ResolveError> {
        let inner = &self.inner;
        // Whether this caller's load ran, or it waited on another caller's.
        let loaded_here = std::sync::atomic::AtomicBool::new(false);
        let result = inner
            .cache
            // Boxed: the miss path must not make every hit's future large.
            .try_get_with(
                id.key(),
                Box::pin(async {
                    loaded_here.store(true, Ordering::Relaxed);
                    inner.load(id).await
                }),
            )
            .await;
        if loaded_here.load(Ordering::Relaxed) {
            metrics::counter!("cache_misses_total").increment(1);
        } else {
            metrics::counter!("cache_coalesced_total").increment(1);
        }
        match result.map_err(ResolveError::Source)? {
            // A load just made (or waited on) is as fresh as it gets.
            Entry::Found(resolved) => {
                inner.publish(id.key(), &resolved).await;
                Ok(Resolution {
                    resolved,
                    stale: false,
                    at: Instant::now(),
                })
            }
            Entry::NotFound { .. } => Err(ResolveError::NotFound),
        }
    }

    /// One refresh per asset at a time; the stale entry stays until a fresh one replaces it.
    /// The result replaces only that very entry: an invalidation (or another load) while the
    /// refresh ran wins.
    fn refresh_in_background(&self, id: &AssetId, stale: Arc<Resolved>) {
        if !self
            .inner
            .refreshing
            .lock()
            .expect("not poisoned")
            .insert(id.key())
        {
            return;
        }
        let inner = self.inner.clone();
        let id = id.clone();
        // Its own trace (no request waits on it), linked from the request that started it.
        let span = tracing::info_span!(parent: None, "refresh", asset_id = %id);
        span.follows_from(tracing::Span::current());
        tokio::spawn(
            async move {
                // No request waits on a refresh, so no request timeout bounds it: this does.
                let loaded = tokio::time::timeout(inner.refresh_deadline, inner.load(&id))
                    .await
                    .unwrap_or(Err(SourceError::Timeout { backend: "refresh" }));
                match loaded {
                    Ok(fresh) => {
                        let published = match &fresh {
                            Entry::Found(r) => Some(r.clone()),
                            Entry::NotFound { .. } => None,
                        };
                        let result = inner
                            .cache
                            .entry(id.key())
                            .and_compute_with(|current| {
                                let same = matches!(
                                    current.as_ref().map(|e| e.value()),
                                    Some(Entry::Found(r)) if Arc::ptr_eq(r, &stale)
                                );
                                std::future::ready(if same { Op::Put(fresh) } else { Op::Nop })
                            })
                            .await;
                        match (result, published) {
                            (moka::ops::compute::CompResult::ReplacedWith(_), Some(r)) => {
                                inner.publish(id.key(), &r).await;
                            }
                            // Now "not found": the stale entry (replaced in moka) leaves the index.
                            (moka::ops::compute::CompResult::ReplacedWith(_), None) => {
                                inner.hot.remove(id.as_str(), &stale);
                            }
                            _ => {}
                        }
                    }
                    Err(_) => {
                        metrics::counter!("cache_refresh_failures_total").increment(1);
                    }
                }
                inner
                    .refreshing
                    .lock()
                    .expect("not poisoned")
                    .remove(id.as_str());
            }
            .instrument(span),
        );
    }

    /// Drops an asset's cache entry, on every replica.
    pub async fn invalidate(&self, id: &AssetId) {
        self.inner.drop_local(id.as_str()).await;
        if let Some(tier) = &self.inner.shared {
            tier.invalidate(id.as_str()).await;
        }
    }

    /// Drops the entries of every asset whose blobs are in `container` of `account` (a blob
    /// there was written or deleted), on every replica; returns how many this one held.
    pub async fn invalidate_container(&self, account: &str, container: &str) -> usize {
        let dropped = self.inner.drop_local_container(account, container).await;
        if let Some(tier) = &self.inner.shared {
            tier.invalidate_container(&format!("{account}/{container}"))
                .await;
        }
        dropped
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }

    /// Bytes the cache holds, by its weigher (after pending maintenance has run).
    pub async fn weighted_size(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.weighted_size()
    }

    /// The cache's budget in bytes (`cache.max_bytes`).
    pub fn max_bytes(&self) -> u64 {
        self.inner.cache.policy().max_capacity().unwrap_or(u64::MAX)
    }

    pub async fn entry_count(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.entry_count()
    }

    pub fn backend(&self) -> &Backend {
        &self.inner.backend
    }
}

impl Inner {
    fn new(
        policy: CacheSettings,
        refresh_deadline: Duration,
        recogniser: Recogniser,
        backend: Backend,
        shared: Option<SharedTier>,
    ) -> Self {
        let hot = Arc::new(ReadIndex::new());
        let evicted = hot.clone();
        let cache = Cache::builder()
            .name("assets")
            .max_capacity(policy.max_bytes)
            .weigher(|key: &Arc<str>, entry: &Entry| weight(key, entry))
            .expire_after(EntryExpiry)
            .eviction_listener(move |key, value, cause| {
                if let Entry::Found(resolved) = &value {
                    evicted.remove(&key, resolved);
                }
                let cause = match cause {
                    moka::notification::RemovalCause::Expired => "expired",
                    moka::notification::RemovalCause::Explicit => "invalidated",
                    moka::notification::RemovalCause::Replaced => "replaced",
                    moka::notification::RemovalCause::Size => "size",
                };
                metrics::counter!("cache_evictions_total", "cause" => cause).increment(1);
            })
            .build_with_hasher(foldhash::fast::RandomState::default());
        Self {
            hot,
            refreshing: Default::default(),
            invalidated: Default::default(),
            refresh_deadline,
            cache,
            backend,
            recogniser,
            policy,
            shared,
            stats: Stats::default(),
            counters: {
                // The service's recorder first, so that the handles are its own.
                crate::metrics::handle();
                Counters {
                    hits: metrics::counter!("cache_hits_total"),
                    stale_served: metrics::counter!("cache_stale_served_total"),
                }
            },
        }
    }

    /// Puts a found entry into the read index, then makes sure that moka still holds that very
    /// entry: one evicted, replaced or invalidated meanwhile (its removal notice came before
    /// the insertion) is taken out again.
    async fn publish(&self, key: Arc<str>, resolved: &Arc<Resolved>) {
        if !resolved.is_for(&key) {
            return;
        }
        self.hot.insert(&key, resolved.clone());
        let held = self.cache.get(&*key).await;
        if !matches!(&held, Some(Entry::Found(r)) if Arc::ptr_eq(r, resolved)) {
            self.hot.remove(&key, resolved);
        }
    }

    /// Whether `id` was invalidated on this replica after `since`.
    fn invalidated_since(&self, id: &str, since: Instant) -> bool {
        let invalidated = self.invalidated.lock().expect("not poisoned");
        invalidated.get(id).is_some_and(|at| *at > since)
    }

    /// Remembers that `id` was invalidated now: a load in flight loads again.
    fn note_invalidated(&self, id: &str) {
        let now = Instant::now();
        let mut invalidated = self.invalidated.lock().expect("not poisoned");
        // Only loads in flight look: what is older than the longest load is forgotten.
        if invalidated.len() >= 1024 {
            invalidated.retain(|_, at| now.duration_since(*at) < self.refresh_deadline);
        }
        invalidated.insert(id.into(), now);
    }

    /// Drops `id`'s entry from this replica, and remembers when (for loads in flight).
    async fn drop_local(&self, id: &str) {
        self.note_invalidated(id);
        self.hot.forget(id);
        self.cache.invalidate(id).await;
    }

    /// Drops from this replica every entry whose blobs are in `container` of `account`.
    async fn drop_local_container(&self, account: &str, container: &str) -> usize {
        let keys: Vec<Arc<str>> = self
            .cache
            .iter()
            .filter_map(|(key, entry)| match entry {
                Entry::Found(r) if r.lives_in(account, container) => Some((*key).clone()),
                _ => None,
            })
            .collect();
        for key in &keys {
            self.drop_local(key).await;
        }
        keys.len()
    }

    /// Drops every entry this replica holds.
    async fn drop_everything_local(&self) {
        self.hot.clear();
        self.cache.invalidate_all();
        self.cache.run_pending_tasks().await;
    }

    fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.stats.hits.load(Ordering::Relaxed),
            loads: self.stats.loads.load(Ordering::Relaxed),
            renders: self.stats.renders.load(Ordering::Relaxed),
        }
    }
}
