//! The cached entry's byte layout: one buffer holds the rendered JSON, its ETag, the
//! storyboard's VTT and JSON and a 16-byte span per thumbnail, so that a hit touches one
//! allocation and writes out views of it. Nothing here knows where entries are kept.

use std::borrow::Cow;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use axum::http::HeaderValue;
use bytes::Bytes;
use serde::Deserialize;
use time::OffsetDateTime;

use super::render;

/// A resolved asset, as cached: the rendered answers in one buffer, and where each thumbnail's
/// object is in the JSON (the redirect routes read the few they need from there). No
/// structured copy of the thumbnails is kept: the JSON is the one copy.
// Fields in this order (`repr(C)`): what a hit reads first, together in the fewest cache lines.
#[repr(C)]
pub struct Resolved {
    pub(super) valid_until: Instant,
    /// Past this, the entry is stale: still served while a refresh runs.
    pub(super) fresh_until: Instant,
    /// The JSON, its ETag, the storyboard's VTT and JSON and the thumbnail spans, back to back.
    pub(super) buffer: Bytes,
    /// The JSON answer, rendered once at load time.
    pub(super) body: Span,
    /// Strong ETag of the JSON (quoted).
    pub(super) etag: Span,
    /// Earliest expiry of any URL in the answer, on the monotonic clock (converted once at
    /// load: a hit reads one clock, not the wall clock too).
    pub(super) urls_expire: Option<Instant>,
    /// The gzip variant and its ETag, made on the first request that accepts gzip: entries
    /// only ever read uncompressed (API clients, `batchGet`) do not hold it.
    pub(super) gzip: OnceLock<Box<Gzipped>>,
    pub(super) storyboard_vtt: Option<Span>,
    pub(super) storyboard_json: Option<Span>,
    /// Each thumbnail's index and its object's place in `body`, in list order: 16 bytes each
    /// (index, start, length, little-endian), in `buffer` (no allocation of their own).
    pub(super) thumbnails: Span,
    /// Where the asset's blobs are, `{account}/{container}`: what a storage event names.
    pub(super) origin: Span,
}

pub(super) struct Gzipped {
    body: Bytes,
    etag: HeaderValue,
}

/// A part of [`Resolved`]'s buffer.
#[derive(Debug, Clone, Copy)]
pub(super) struct Span {
    pub(super) start: u32,
    pub(super) len: u32,
}

impl Span {
    #[inline]
    pub(super) fn range(self) -> std::ops::Range<usize> {
        self.start as usize..(self.start + self.len) as usize
    }
}

#[derive(Debug, Clone, Copy)]
pub(super) struct ThumbnailSpan {
    pub(super) index: u64,
    pub(super) object: Span,
}

impl ThumbnailSpan {
    const BYTES: usize = 16;

    pub(super) fn write(self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.index.to_le_bytes());
        out.extend_from_slice(&self.object.start.to_le_bytes());
        out.extend_from_slice(&self.object.len.to_le_bytes());
    }

    pub(super) fn read(b: &[u8]) -> Self {
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
    pub(super) fn new(
        rendered: render::Rendered,
        origin: &str,
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
            Some(origin.as_bytes()),
        ];
        let total: usize = parts.iter().flatten().map(|p| p.len()).sum();
        if u32::try_from(total).is_err() {
            return Err(format!("{total} bytes of answers for one asset"));
        }
        let mut buffer = Vec::with_capacity(total);
        let mut spans = [None; 6];
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
            origin: span(5),
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
    #[inline]
    pub(super) fn is_for(&self, id: &str) -> bool {
        const PREFIX: &[u8] = b"{\"assetId\":\"";
        self.body()
            .get(PREFIX.len()..PREFIX.len() + id.len() + 1)
            .is_some_and(|b| &b[..id.len()] == id.as_bytes() && b[id.len()] == b'"')
    }

    /// Whether the asset's blobs are in `container` of `account`.
    pub(super) fn lives_in(&self, account: &str, container: &str) -> bool {
        let origin = &self.buffer[self.origin.range()];
        origin.len() == account.len() + 1 + container.len()
            && origin.starts_with(account.as_bytes())
            && origin[account.len()] == b'/'
            && origin.ends_with(container.as_bytes())
    }

    /// `{account}/{container}` of the asset's blobs.
    pub(super) fn origin(&self) -> String {
        String::from_utf8_lossy(&self.buffer[self.origin.range()]).into_owned()
    }

    /// When this entry stops being served from the cache at all.
    #[inline]
    pub fn valid_until(&self) -> Instant {
        self.valid_until
    }

    /// When this entry stops being fresh.
    #[inline]
    pub fn fresh_until(&self) -> Instant {
        self.fresh_until
    }

    /// The JSON answer (for a response, see [`Resolution::answer`]).
    #[inline]
    pub fn body(&self) -> &[u8] {
        &self.buffer[self.body.range()]
    }

    /// Strong ETag of `body` (quoted).
    #[inline]
    pub(super) fn etag_bytes(&self) -> &[u8] {
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
    #[inline]
    pub fn urls_expire(&self) -> Option<Instant> {
        self.urls_expire
    }

    pub(super) fn spans(&self) -> std::slice::ChunksExact<'_, u8> {
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
pub(super) enum Entry {
    Found(Arc<Resolved>),
    NotFound { valid_until: Instant },
}

impl Entry {
    pub(super) fn valid_until(&self) -> Instant {
        match self {
            Entry::Found(r) => r.valid_until,
            Entry::NotFound { valid_until } => *valid_until,
        }
    }
}

/// Bytes a found entry holds beyond its buffer and its key: the `Resolved` itself, the
/// buffer's shared header, moka's entry, deque and timer nodes, the read index's slot, and
/// the allocator's overhead on each. Measured (jemalloc, 2026-12-03, bench/RESULTS.md
/// "Memory accounting"): 100,000 entries of 10 thumbnails grow RSS 2,680 B each, and weigh
/// 2,788 B each with this constant (1.04x; glibc 2,751 B, 1.01x), by
/// `python3 bench/memflood.py --found 100000` (bench/run's memory phase, for any binary).
/// The gzip variant, made later, is not weighed (moka weighs an entry once, when it is
/// inserted): it adds about a seventh of the JSON's size.
pub(super) const ENTRY_OVERHEAD: usize = 800;

/// Bytes a negative ("not found") entry holds beyond its key: moka's entry (`ValueEntry`,
/// `EntryInfo`), its access-order, write-order and timer-wheel nodes, the key's `Arc` header,
/// the `Entry` value, the concurrent map's bucket and the allocator's rounding on each
/// allocation (a negative entry has no buffer and no read-index slot). Measured (2026-12-03,
/// bench/RESULTS.md "Memory accounting"): 50,000 unknown 15-character ids grow RSS
/// 341–370 B each with jemalloc (415 B with glibc, 320 B with mimalloc), by
/// `python3 bench/memflood.py --ids 50000` (`GET /assets/{unknown}/thumbnails` on the release
/// binary); with this constant they weigh 367 B each (1.05x of jemalloc's RSS, 0.88x of
/// glibc's); 100- and 260-character ids weigh 452 and 612 B against 447 and 618 B of RSS
/// (`--id-len`), so the key's bytes count one for one. Before this was measured they weighed
/// 64 B + the key: a fifth of their cost.
pub(super) const NOT_FOUND_OVERHEAD: usize = 352;

/// Approximate bytes held by an entry of `buffer` bytes.
pub(super) fn weigh(buffer: usize) -> u32 {
    u32::try_from(buffer + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
}

/// The cache's weigher: approximate bytes of RSS that the entry for `key` holds, its key,
/// moka's own structures and the allocator's rounding included (see [`ENTRY_OVERHEAD`] and
/// [`NOT_FOUND_OVERHEAD`]), so that `cache.max_bytes` bounds the process's growth.
pub(super) fn weight(key: &str, entry: &Entry) -> u32 {
    let value = match entry {
        Entry::Found(r) => weigh(r.buffer.len()),
        Entry::NotFound { .. } => NOT_FOUND_OVERHEAD as u32,
    };
    value.saturating_add(u32::try_from(key.len()).unwrap_or(u32::MAX))
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::model::{AssetThumbnails, Thumbnail};

    pub(crate) fn resolved(id: &str) -> Arc<Resolved> {
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
        Arc::new(
            Resolved::new(
                rendered,
                "acct/box",
                None,
                now,
                now + Duration::from_secs(60),
            )
            .unwrap(),
        )
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
        assert!(r.lives_in("acct", "box"));
        assert!(!r.lives_in("acct", "bo"));
        assert!(!r.lives_in("acc", "box"));
        assert!(!r.lives_in("other", "box"));
    }

    #[test]
    fn a_negative_entry_weighs_what_it_was_measured_to_cost() {
        let not_found = Entry::NotFound {
            valid_until: Instant::now(),
        };
        // The 15-character ids of bench/memflood.py: RSS grew 341-415 B each, by allocator.
        let w = weight("unknown-0000000", &not_found);
        assert!(w >= 341, "{w}");
        assert!(f64::from(w) <= 415.0 * 1.5, "{w}");
        // Any id: at least the measured overhead, and its key on top (ids are stored once).
        assert!(weight("", &not_found) as usize >= NOT_FOUND_OVERHEAD);
        assert_eq!(
            weight(&"x".repeat(200), &not_found) - weight("x", &not_found),
            199
        );
        // Never the old 64 B + key: a seventh of what it costs.
        assert!(weight("x", &not_found) > 5 * (64 + 1));
    }

    #[test]
    fn a_found_entry_weighs_its_buffer_and_more_than_a_negative_one() {
        let r = resolved("abc");
        let found = Entry::Found(r.clone());
        let not_found = Entry::NotFound {
            valid_until: Instant::now(),
        };
        let w = weight("abc", &found) as usize;
        assert_eq!(w, r.buffer.len() + ENTRY_OVERHEAD + 3);
        assert!(w > weight("abc", &not_found) as usize + r.buffer.len());
    }

    // A found entry holds all a negative one does, and its `Resolved`, buffer header and
    // read-index slot too.
    const _: () = assert!(ENTRY_OVERHEAD > NOT_FOUND_OVERHEAD);

    #[test]
    fn weight_is_monotone_in_the_body_and_saturates() {
        let mut last = 0;
        for len in [0, 1, 100, 1_782, 65_536, 1 << 24] {
            let w = weigh(len);
            assert!(w > last, "{len}: {w} <= {last}");
            assert!(w as usize >= len + ENTRY_OVERHEAD);
            last = w;
        }
        assert_eq!(weigh(usize::MAX - ENTRY_OVERHEAD), u32::MAX);
        let not_found = Entry::NotFound {
            valid_until: Instant::now(),
        };
        assert_eq!(
            weight(&"x".repeat(300), &not_found),
            NOT_FOUND_OVERHEAD as u32 + 300
        );
    }
}
