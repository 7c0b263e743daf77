//! The resolver: asset id -> thumbnails with working URLs, through a moka cache.
//!
//! One load per asset however many requests arrive at once (`try_get_with` coalesces them);
//! each entry expires by its own clock (the TTL, or earlier so that no URL handed out from the
//! cache has less than `min_validity` left); "not found" is remembered briefly; failures are
//! never cached. A hit returns the JSON rendered at load time: no serialization per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use std::borrow::Cow;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::OnceLock;

use axum::http::HeaderValue;
use bytes::Bytes;
use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;
use serde::Deserialize;
use time::OffsetDateTime;

pub mod render;

use crate::asset_id::AssetId;
use crate::config::CacheSettings;
use crate::model::{AssetThumbnails, Link, Storyboard, Thumbnail, content_type_for};
use crate::recognise::{ParsedStoryboard, Recogniser, vtt};
use crate::source::{AssetLocation, Backend, SourceError};

/// Largest storyboard VTT read (a 10-hour video at one tile a second is ~600 KB).
const VTT_LIMIT: usize = 2 * 1024 * 1024;
/// At most this many VTT files are read per asset.
const VTT_MAX_FILES: usize = 4;

/// A resolved asset, as cached: the rendered answers in one buffer, and where each thumbnail's
/// object is in the JSON (the redirect routes read the few they need from there). No
/// structured copy of the thumbnails is kept: the JSON is the one copy.
// Fields in this order (`repr(C)`): what a hit reads first, together in the fewest cache lines.
#[repr(C)]
pub struct Resolved {
    valid_until: Instant,
    /// Past this, the entry is stale: still served while a refresh runs.
    fresh_until: Instant,
    /// The JSON, its ETag, the storyboard's VTT and JSON and the thumbnail spans, back to back.
    buffer: Bytes,
    /// The JSON answer, rendered once at load time.
    body: Span,
    /// Strong ETag of the JSON (quoted).
    etag: Span,
    /// Earliest expiry of any URL in the answer, on the monotonic clock (converted once at
    /// load: a hit reads one clock, not the wall clock too).
    urls_expire: Option<Instant>,
    /// The gzip variant and its ETag, made on the first request that accepts gzip: entries
    /// only ever read uncompressed (API clients, `batchGet`) do not hold it.
    gzip: OnceLock<Box<Gzipped>>,
    storyboard_vtt: Option<Span>,
    storyboard_json: Option<Span>,
    /// Each thumbnail's index and its object's place in `body`, in list order: 16 bytes each
    /// (index, start, length, little-endian), in `buffer` (no allocation of their own).
    thumbnails: Span,
}

struct Gzipped {
    body: Bytes,
    etag: HeaderValue,
}

/// A part of [`Resolved`]'s buffer.
#[derive(Debug, Clone, Copy)]
struct Span {
    start: u32,
    len: u32,
}

impl Span {
    fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

#[derive(Debug, Clone, Copy)]
struct ThumbnailSpan {
    index: u64,
    object: Span,
}

impl ThumbnailSpan {
    const BYTES: usize = 16;

    fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.object.start.to_le_bytes());
        out.extend_from_slice(&self.object.len.to_le_bytes());
    }

    fn read(b: &[u8]) -> Self {
        let u32_at = |i: usize| u32::from_le_bytes(b[i..i + 4].try_into().expect("4 bytes"));
        Self {
            index: u64::from_le_bytes(b[..8].try_into().expect("8 bytes")),
            object: Span {
                start: u32_at(8),
                len: u32_at(12),
            },
        }
    }
}

/// One thumbnail as the redirect routes need it, read from the cached JSON.
#[derive(Debug, Deserialize)]
pub struct ThumbnailView<'a> {
    pub index: u64,
    #[serde(borrow)]
    pub url: Cow<'a, str>,
    #[serde(borrow, default)]
    pub label: Option<Cow<'a, str>>,
    #[serde(default)]
    pub width: Option<u32>,
    #[serde(default)]
    pub time: Option<f64>,
}

impl std::fmt::Debug for Resolved {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Resolved")
            .field("body", &self.body.len)
            .field("etag", &String::from_utf8_lossy(self.etag_bytes()))
            .field("thumbnails", &self.spans().len())
            .field("urls_expire", &self.urls_expire)
            .finish_non_exhaustive()
    }
}

impl Resolved {
    fn new(
        rendered: render::Rendered,
        expires_at: Option<OffsetDateTime>,
        fresh_until: Instant,
        valid_until: Instant,
    ) -> Result<Self, String> {
        let mut spans_bytes = Vec::with_capacity(rendered.thumbnails.len() * ThumbnailSpan::BYTES);
        for &(index, start, len) in &rendered.thumbnails {
            ThumbnailSpan {
                index,
                object: Span {
                    start: start as u32,
                    len: len as u32,
                },
            }
            .write(&mut spans_bytes);
        }
        let parts = [
            Some(&rendered.json[..]),
            Some(rendered.etag.as_bytes()),
            rendered.storyboard_vtt.as_deref(),
            rendered.storyboard_json.as_deref(),
            Some(&spans_bytes[..]),
        ];
        let total: usize = parts.iter().flatten().map(|p| p.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(format!("{total} bytes of answers for one asset"));
        }
        let mut buffer = Vec::with_capacity(total);
        let mut spans = [None; 5];
        for (span, part) in spans.iter_mut().zip(parts) {
            if let Some(part) = part {
                *span = Some(Span {
                    start: buffer.len() as u32,
                    len: part.len() as u32,
                });
                buffer.extend_from_slice(part);
            }
        }
        let span = |i: usize| spans[i].expect("always present");
        Ok(Self {
            body: span(0),
            etag: span(1),
            gzip: OnceLock::new(),
            storyboard_vtt: spans[2],
            storyboard_json: spans[3],
            thumbnails: span(4),
            buffer: Bytes::from(buffer),
            urls_expire: expires_at.map(|at| {
                let left = at - OffsetDateTime::now_utc();
                Instant::now() + Duration::try_from(left).unwrap_or(Duration::ZERO)
            }),
            fresh_until,
            valid_until,
        })
    }

    /// Whether this is the entry of that id: the answer opens with it (ids whose JSON form
    /// needs escapes never match, and are served through moka).
    fn is_for(&self, id: &str) -> bool {
        const PREFIX: &[u8] = b"{\"assetId\":\"";
        self.body()
            .get(PREFIX.len()..PREFIX.len() + id.len() + 1)
            .is_some_and(|b| &b[..id.len()] == id.as_bytes() && b[id.len()] == b'"')
    }

    /// When this entry stops being served from the cache at all.
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// When this entry stops being fresh.
    pub fn fresh_until(&self) -> Instant {
        self.fresh_until
    }

    /// The JSON answer (for a response, see [`Resolution::answer`]).
    pub fn body(&self) -> &[u8] {
        &self.buffer[self.body.range()]
    }

    /// Strong ETag of `body` (quoted).
    fn etag_bytes(&self) -> &[u8] {
        &self.buffer[self.etag.range()]
    }

    /// `body`, gzip-compressed (compressed on the first call, then kept).
    pub fn body_gzip(&self) -> Bytes {
        self.gzipped().body.clone()
    }

    /// Strong ETag of `body_gzip` (quoted).
    pub fn etag_gzip(&self) -> &HeaderValue {
        &self.gzipped().etag
    }

    fn gzipped(&self) -> &Gzipped {
        self.gzip.get_or_init(|| {
            // One buffer: the compressed body, then its tag (the plain one, suffixed).
            let tag = self.etag_bytes();
            let mut buffer = render::gzip(self.body());
            let body_len = buffer.len();
            buffer.extend_from_slice(&tag[..tag.len() - 1]);
            buffer.extend_from_slice(b"-gzip\"");
            buffer.shrink_to_fit();
            let buffer = Bytes::from(buffer);
            Box::new(Gzipped {
                body: buffer.slice(..body_len),
                etag: HeaderValue::from_maybe_shared(buffer.slice(body_len..)).expect("a hex ETag"),
            })
        })
    }

    /// The storyboard as WebVTT with working sprite URLs, when there is one.
    pub fn storyboard_vtt(&self) -> Option<Bytes> {
        self.storyboard_vtt.map(|s| self.buffer.slice(s.range()))
    }

    /// The storyboard as JSON, when there is one.
    pub fn storyboard_json(&self) -> Option<Bytes> {
        self.storyboard_json.map(|s| self.buffer.slice(s.range()))
    }

    /// When the first URL in the answer expires (None: they do not expire).
    pub fn urls_expire(&self) -> Option<Instant> {
        self.urls_expire
    }

    fn spans(&self) -> std::slice::ChunksExact<'_, u8> {
        self.buffer[self.thumbnails.range()].chunks_exact(ThumbnailSpan::BYTES)
    }

    /// The thumbnails' indices, in list order.
    pub fn indices(&self) -> impl Iterator<Item = u64> + '_ {
        self.spans().map(|b| ThumbnailSpan::read(b).index)
    }

    /// The renditions of one index, in list order.
    pub fn at_index(&self, index: u64) -> impl Iterator<Item = ThumbnailView<'_>> + '_ {
        self.spans()
            .map(ThumbnailSpan::read)
            .filter(move |t| t.index == index)
            .map(|t| self.view(&t))
    }

    /// Every thumbnail, in list order.
    pub fn thumbnails(&self) -> impl Iterator<Item = ThumbnailView<'_>> + '_ {
        self.spans().map(|b| self.view(&ThumbnailSpan::read(b)))
    }

    fn view(&self, t: &ThumbnailSpan) -> ThumbnailView<'_> {
        serde_json::from_slice(&self.body()[t.object.range()])
            .expect("a thumbnail object rendered by this service parses")
    }
}

#[derive(Debug, Clone)]
enum Entry {
    Found(Arc<Resolved>),
    NotFound { valid_until: Instant },
}

impl Entry {
    fn valid_until(&self) -> Instant {
        match self {
            Entry::Found(r) => r.valid_until,
            Entry::NotFound { valid_until } => *valid_until,
        }
    }
}

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

/// The cache's found entries in a plain sharded map, which hits read instead of moka.
///
/// A moka read also records the access for its eviction policy (an atomic store in the
/// entry, an operation through a channel, later a move in its LRU list and a frequency count):
/// with many entries, each of those touches memory no other request has in the CPU caches, and
/// measured ~1.5 µs per hit against ~14 µs for a whole bare request. Here a hit is one hash
/// lookup under a read lock. Moka stays the owner of the entries (loads, coalescing, expiry,
/// size bounds, invalidation): its removal notices take entries out of this index, an entry is
/// added only while moka holds it ([`Inner::publish`]), a hit checks the entry's own expiry,
/// and one hit in [`READ_SAMPLE`] is still read through moka so that its recency and
/// frequency follow the reads (moka itself drops read records under load).
struct ReadIndex {
    shards: Box<[std::sync::RwLock<HotMap>]>,
    hasher: foldhash::fast::RandomState,
}

/// By the id's 64-bit hash: a lookup reads no key (the entry itself says whose it is, see
/// [`Resolved::is_for`]); two ids of the same hash share a slot, the later one wins and the
/// other is served through moka.
type HotMap = std::collections::HashMap<u64, Slot, BuildHasherDefault<HashIsKey>>;

/// An index entry: the cached entry, and where its JSON answer is.
///
/// A hit on one of many entries finds most of what it reads cold: the entry, the JSON it
/// checks the id against and then writes out, the ETag after it. Read one after the other,
/// each waits for memory in turn (perf put them at ~1.4 µs of a ~13 µs hit over 10,000 ids).
/// With the JSON's place kept next to the pointer to the entry, a hit asks for all of them at
/// once ([`prefetch`]) and waits for memory about once.
struct Slot {
    entry: Arc<Resolved>,
    /// Where the JSON starts (low 48 bits: the address) and how many bytes from there to the
    /// end of the ETag after it (high 16 bits, capped): a prefetch hint, never dereferenced.
    /// One word, so that a slot with its key is 24 bytes.
    hint: u64,
}

impl Slot {
    const ADDRESS_BITS: u32 = 48;

    fn new(entry: Arc<Resolved>) -> Self {
        let address = entry.body().as_ptr() as u64 & ((1 << Self::ADDRESS_BITS) - 1);
        let len = u64::from(entry.etag.start + entry.etag.len - entry.body.start).min(0xffff);
        Self {
            entry,
            hint: address | len << Self::ADDRESS_BITS,
        }
    }

    fn prefetch(&self) {
        prefetch(Arc::as_ptr(&self.entry) as usize, 128);
        let mask = (1 << Self::ADDRESS_BITS) - 1;
        prefetch(
            (self.hint & mask) as usize,
            (self.hint >> Self::ADDRESS_BITS) as usize,
        );
    }
}

/// Asks the CPU to bring `len` bytes from `addr` into its caches, without waiting for them.
#[inline(always)]
fn prefetch(addr: usize, len: usize) {
    #[cfg(target_arch = "x86_64")]
    for line in (addr & !63..addr + len).step_by(64) {
        // SAFETY: a prefetch is a hint: it never faults, whatever the address, and changes no
        // memory. The addresses are those of a live entry anyway.
        unsafe {
            std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(line as *const i8)
        };
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = (addr, len);
}

/// The keys are hashes already.
#[derive(Default)]
struct HashIsKey(u64);

impl Hasher for HashIsKey {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0.rotate_left(8) ^ u64::from(*b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

impl ReadIndex {
    const SHARDS: usize = 64;

    fn new() -> Self {
        Self {
            shards: (0..Self::SHARDS).map(|_| Default::default()).collect(),
            hasher: Default::default(),
        }
    }

    fn slot(&self, key: &str) -> (&std::sync::RwLock<HotMap>, u64) {
        use std::hash::BuildHasher;
        let hash = self.hasher.hash_one(key);
        // The map places entries by the low bits: the shard comes from others.
        (&self.shards[(hash >> 40) as usize % Self::SHARDS], hash)
    }

    /// The entry, while it may still be served at `now`.
    fn get(&self, key: &str, now: Instant) -> Option<Arc<Resolved>> {
        let (shard, hash) = self.slot(key);
        let found = {
            let shard = shard.read().expect("not poisoned");
            let slot = shard.get(&hash)?;
            slot.prefetch();
            slot.entry.clone()
        };
        (found.is_for(key) && now < found.valid_until).then_some(found)
    }

    fn insert(&self, key: &str, resolved: Arc<Resolved>) {
        if !resolved.is_for(key) {
            return;
        }
        let (shard, hash) = self.slot(key);
        shard
            .write()
            .expect("not poisoned")
            .insert(hash, Slot::new(resolved));
    }

    /// Removes the key if it still maps to this very entry.
    fn remove(&self, key: &str, resolved: &Arc<Resolved>) {
        let (shard, hash) = self.slot(key);
        let mut shard = shard.write().expect("not poisoned");
        if shard
            .get(&hash)
            .is_some_and(|s| Arc::ptr_eq(&s.entry, resolved))
        {
            shard.remove(&hash);
        }
    }

    fn forget(&self, key: &str) {
        let (shard, hash) = self.slot(key);
        shard.write().expect("not poisoned").remove(&hash);
    }
}

struct Inner {
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
        Self {
            inner: Arc::new(Inner::new(policy, refresh_deadline, recogniser, backend)),
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
            None => self.miss(id).await,
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
        tokio::spawn(async move {
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
        });
    }

    /// Drops an asset's cache entry.
    pub async fn invalidate(&self, id: &AssetId) {
        self.inner.hot.forget(id.as_str());
        self.inner.cache.invalidate(id.as_str()).await;
    }

    pub fn stats(&self) -> StatsSnapshot {
        self.inner.stats()
    }

    /// Bytes the cache holds, by its weigher (after pending maintenance has run).
    pub async fn weighted_size(&self) -> u64 {
        self.inner.cache.run_pending_tasks().await;
        self.inner.cache.weighted_size()
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
    ) -> Self {
        let hot = Arc::new(ReadIndex::new());
        let evicted = hot.clone();
        let cache = Cache::builder()
            .name("assets")
            .max_capacity(policy.max_bytes)
            .weigher(|key: &Arc<str>, entry: &Entry| {
                let value = match entry {
                    Entry::Found(r) => weigh(r.buffer.len()),
                    Entry::NotFound { .. } => 64,
                };
                value.saturating_add(key.len() as u32)
            })
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
            refresh_deadline,
            cache,
            backend,
            recogniser,
            policy,
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

    fn stats(&self) -> StatsSnapshot {
        StatsSnapshot {
            hits: self.stats.hits.load(Ordering::Relaxed),
            loads: self.stats.loads.load(Ordering::Relaxed),
            renders: self.stats.renders.load(Ordering::Relaxed),
        }
    }

    async fn load(&self, id: &AssetId) -> Result<Entry, SourceError> {
        self.stats.loads.fetch_add(1, Ordering::Relaxed);
        let started = Instant::now();
        let result = self.load_found(id).await;
        let elapsed_ms = started.elapsed().as_millis() as u64;
        match result {
            Ok(resolved) => {
                tracing::debug!(asset_id = %id, elapsed_ms, thumbnails = resolved.spans().len(), "asset loaded");
                Ok(Entry::Found(Arc::new(resolved)))
            }
            Err(SourceError::NotFound) => {
                tracing::debug!(asset_id = %id, elapsed_ms, "asset not found");
                Ok(Entry::NotFound {
                    valid_until: Instant::now() + self.policy.not_found_ttl,
                })
            }
            Err(e) => {
                tracing::warn!(asset_id = %id, elapsed_ms, error = %e, "asset load failed");
                Err(e)
            }
        }
    }

    async fn load_found(&self, id: &AssetId) -> Result<Resolved, SourceError> {
        let location = self.backend.catalog.locate(id).await?;
        let blobs = self.backend.store.list(&location).await?;
        let storyboards = self.read_storyboards(&location, &blobs).await?;
        let recognition = self.recogniser.recognise(&blobs, &storyboards);

        let mut names: Vec<&str> = recognition
            .thumbnails
            .iter()
            .map(|t| t.blob.name.as_str())
            .collect();
        if let Some(sb) = &recognition.storyboard {
            names.push(&sb.sprite.name);
        }
        let links = self.backend.linker.link(&location, &names).await?;
        if links.len() != names.len() {
            return Err(SourceError::Upstream {
                backend: "linker",
                message: format!("{} links for {} blobs", links.len(), names.len()),
            });
        }
        let expires_at = links.iter().filter_map(|l| l.expires_at).min();
        let mut links = links.into_iter();
        let mut next_url = || links.next().map(|l: Link| l.url).unwrap_or_default();

        let thumbnails = recognition
            .thumbnails
            .into_iter()
            .map(|r| Thumbnail {
                index: r.index,
                url: next_url(),
                content_type: content_type(&r.blob),
                size: r.blob.size,
                label: r.label,
                width: r.width,
                height: r.height,
                time: r.time,
                name: r.blob.name,
            })
            .collect();
        let storyboard = recognition.storyboard.map(|sb| Storyboard {
            url: next_url(),
            content_type: content_type(&sb.sprite),
            width: sb.sprite.dimensions.map(|d| d.0),
            height: sb.sprite.dimensions.map(|d| d.1),
            name: sb.sprite.name,
            vtt_name: sb.vtt_name,
            tiles: sb.tiles,
        });
        let asset = AssetThumbnails {
            asset_id: id.to_string(),
            thumbnails,
            storyboard,
            expires_at,
        };
        let rendered = render::render(&asset).map_err(|e| SourceError::Upstream {
            backend: "render",
            message: e.to_string(),
        })?;
        self.stats.renders.fetch_add(1, Ordering::Relaxed);
        let (fresh_for, keep_for) = self.lifetimes(expires_at);
        let now = Instant::now();
        Resolved::new(rendered, expires_at, now + fresh_for, now + keep_for).map_err(|message| {
            SourceError::Upstream {
                backend: "render",
                message,
            }
        })
    }

    /// How long an entry is fresh (`cache.ttl`) and how long it may be kept at all (fresh, then
    /// stale up to `cache.max_stale`), both shortened so that every URL in it still has
    /// `min_validity` left when it is last served (zero: not cached at all).
    fn lifetimes(&self, expires_at: Option<OffsetDateTime>) -> (Duration, Duration) {
        let keep = self.policy.ttl + self.policy.max_stale;
        let Some(expires_at) = expires_at else {
            return (self.policy.ttl, keep);
        };
        let left = expires_at - OffsetDateTime::now_utc() - self.policy.min_validity;
        let left = Duration::try_from(left).unwrap_or(Duration::ZERO);
        if left.is_zero() {
            tracing::warn!(
                "signed URLs expire within cache.min_validity: answers are not cached; \
                 lengthen the URL lifetime or shorten cache.min_validity"
            );
        }
        (left.min(self.policy.ttl), left.min(keep))
    }

    async fn read_storyboards(
        &self,
        location: &AssetLocation,
        blobs: &[crate::model::BlobEntry],
    ) -> Result<Vec<(String, ParsedStoryboard)>, SourceError> {
        let mut out = Vec::new();
        let vtts = blobs
            .iter()
            .filter(|b| b.name.to_ascii_lowercase().ends_with(".vtt"))
            .filter(|b| b.size <= VTT_LIMIT as u64)
            .take(VTT_MAX_FILES);
        for blob in vtts {
            let bytes = match self
                .backend
                .store
                .read(location, &blob.name, VTT_LIMIT)
                .await
            {
                Ok(b) => b,
                // Deleted between list and read: no storyboard from it.
                Err(SourceError::NotFound) => continue,
                Err(e) => return Err(e),
            };
            let Ok(text) = std::str::from_utf8(&bytes) else {
                continue;
            };
            if let Some(parsed) = vtt::parse(&blob.name, text) {
                out.push((blob.name.clone(), parsed));
            }
        }
        Ok(out)
    }
}

fn content_type(blob: &crate::model::BlobEntry) -> String {
    blob.content_type
        .clone()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| content_type_for(&blob.name))
}

/// Bytes an entry holds beyond its buffer: the `Resolved` itself, the
/// buffer's shared header, moka's entry, deque and timer nodes, the read index's slot, and
/// the allocator's overhead on each (measured with `bench/run`'s memory phase; see
/// bench/RESULTS.md). The gzip variant, made later, is not weighed (moka weighs an entry once,
/// when it is inserted): it adds about a seventh of the JSON's size.
const ENTRY_OVERHEAD: usize = 800;

/// Approximate bytes held by an entry.
fn weigh(buffer: usize) -> u32 {
    u32::try_from(buffer + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{AssetThumbnails, Thumbnail};

    fn resolved(id: &str) -> Arc<Resolved> {
        let asset = AssetThumbnails {
            asset_id: id.into(),
            thumbnails: vec![Thumbnail {
                index: 1,
                name: "Thumbnail000001.jpg".into(),
                url: "https://x/1.jpg".into(),
                content_type: "image/jpeg".into(),
                size: 1,
                label: None,
                width: Some(160),
                height: None,
                time: None,
            }],
            storyboard: None,
            expires_at: None,
        };
        let now = Instant::now();
        let rendered = render::render(&asset).unwrap();
        Arc::new(Resolved::new(rendered, None, now, now + Duration::from_secs(60)).unwrap())
    }

    #[test]
    fn an_entry_knows_its_id() {
        let r = resolved("abc");
        assert!(r.is_for("abc"));
        assert!(!r.is_for("ab"));
        assert!(!r.is_for("abcd"));
        // Escaped in the JSON: never matched, so served through moka.
        assert!(!resolved("a\"b").is_for("a\"b"));
        assert!(resolved("vidéo").is_for("vidéo"));
        let t: Vec<_> = r.thumbnails().collect();
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].url, "https://x/1.jpg");
        assert_eq!(r.indices().collect::<Vec<_>>(), [1]);
    }

    #[test]
    fn the_read_index_holds_only_what_it_was_given() {
        let index = ReadIndex::new();
        let (a, b) = (resolved("a"), resolved("b"));
        index.insert("a", a.clone());
        index.insert("b", b.clone());
        // An entry under another id is refused.
        index.insert("c", a.clone());
        assert!(index.get("c", Instant::now()).is_none());
        assert!(Arc::ptr_eq(&index.get("a", Instant::now()).unwrap(), &a));
        // Only that very entry is removed.
        index.remove("a", &b);
        assert!(index.get("a", Instant::now()).is_some());
        index.remove("a", &a);
        assert!(index.get("a", Instant::now()).is_none());
        index.forget("b");
        assert!(index.get("b", Instant::now()).is_none());
        // Past its validity an entry is not served.
        let now = Instant::now();
        let rendered = render::render(&AssetThumbnails {
            asset_id: "old".into(),
            thumbnails: vec![],
            storyboard: None,
            expires_at: None,
        })
        .unwrap();
        index.insert(
            "old",
            Arc::new(Resolved::new(rendered, None, now, now).unwrap()),
        );
        assert!(index.get("old", Instant::now()).is_none());
    }
}
