//! The bytes an entry is stored as in the shared tier: the rendered entry exactly as moka holds
//! it (one buffer and its spans) and its validity on the wall clock, since replicas share no
//! monotonic clock. Nothing secret is in it: the buffer is the answer clients get.
//!
//! Layout (integers little-endian): version `u8`, kind `u8` (0 not found, 1 found), valid
//! until, fresh until and URLs' expiry as UNIX milliseconds `u64` (0: no expiry), then for a
//! found entry six spans (`u32` start, `u32` length; length `u32::MAX`: absent) and the buffer.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use crate::resolver::entry::{Entry, Resolved, Span};

const VERSION: u8 = 1;
const HEADER: usize = 2 + 3 * 8;
const SPANS: usize = 6;
const ABSENT: u32 = u32::MAX;

/// One reading of both clocks, to convert between them.
#[derive(Debug, Clone, Copy)]
pub(in crate::resolver) struct Clocks {
    pub(in crate::resolver) now: Instant,
    unix_ms: u64,
}

impl Clocks {
    pub(in crate::resolver) fn read() -> Self {
        Self {
            now: Instant::now(),
            unix_ms: SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64),
        }
    }

    fn unix_ms_of(self, at: Instant) -> u64 {
        match at.checked_duration_since(self.now) {
            Some(ahead) => self.unix_ms.saturating_add(ahead.as_millis() as u64),
            None => self
                .unix_ms
                .saturating_sub(self.now.duration_since(at).as_millis() as u64),
        }
    }

    fn instant_of(self, ms: u64) -> Instant {
        if ms >= self.unix_ms {
            self.now + Duration::from_millis(ms - self.unix_ms)
        } else {
            self.now
                .checked_sub(Duration::from_millis(self.unix_ms - ms))
                .unwrap_or(self.now)
        }
    }

    /// Milliseconds from now until `at` (0 when past).
    pub(in crate::resolver) fn ms_until(self, at: Instant) -> u64 {
        at.saturating_duration_since(self.now).as_millis() as u64
    }
}

pub(in crate::resolver) fn encode(entry: &Entry, clocks: Clocks) -> Vec<u8> {
    let (kind, valid_until, fresh_until, urls_expire) = match entry {
        Entry::Found(r) => (1, r.valid_until, r.fresh_until, r.urls_expire),
        Entry::NotFound { valid_until } => (0, *valid_until, *valid_until, None),
    };
    let buffer_len = match entry {
        Entry::Found(r) => SPANS * 8 + r.buffer.len(),
        Entry::NotFound { .. } => 0,
    };
    let mut out = Vec::with_capacity(HEADER + buffer_len);
    out.extend_from_slice(&[VERSION, kind]);
    for at in [Some(valid_until), Some(fresh_until), urls_expire] {
        let ms = at.map_or(0, |at| clocks.unix_ms_of(at).max(1));
        out.extend_from_slice(&ms.to_le_bytes());
    }
    if let Entry::Found(r) = entry {
        let spans = [
            Some(r.body),
            Some(r.etag),
            r.storyboard_vtt,
            r.storyboard_json,
            Some(r.thumbnails),
            Some(r.origin),
        ];
        for span in spans {
            let (start, len) = span.map_or((0, ABSENT), |s| (s.start, s.len));
            out.extend_from_slice(&start.to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
        }
        out.extend_from_slice(&r.buffer);
    }
    out
}

/// The entry stored as `bytes`, or `None` when they are not one this version wrote (another
/// version of the service, or damage): the caller then loads the asset itself.
pub(in crate::resolver) fn decode(bytes: &[u8], clocks: Clocks) -> Option<Entry> {
    let u64_at = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(bytes.get(i..i + 8)?.try_into().ok()?))
    };
    let u32_at = |i: usize| -> Option<u32> {
        Some(u32::from_le_bytes(bytes.get(i..i + 4)?.try_into().ok()?))
    };
    if bytes.first() != Some(&VERSION) {
        return None;
    }
    let valid_until = clocks.instant_of(u64_at(2)?);
    let fresh_until = clocks.instant_of(u64_at(10)?);
    let urls_expire = match u64_at(18)? {
        0 => None,
        ms => Some(clocks.instant_of(ms)),
    };
    match bytes.get(1)? {
        0 => Some(Entry::NotFound { valid_until }),
        1 => {
            let buffer_at = HEADER + SPANS * 8;
            let buffer = bytes.get(buffer_at..)?;
            let mut spans = [None; SPANS];
            for (i, span) in spans.iter_mut().enumerate() {
                let (start, len) = (u32_at(HEADER + i * 8)?, u32_at(HEADER + i * 8 + 4)?);
                if len != ABSENT {
                    let end = (start as usize).checked_add(len as usize)?;
                    if end > buffer.len() {
                        return None;
                    }
                    *span = Some(Span { start, len });
                }
            }
            let resolved = Resolved {
                valid_until,
                fresh_until,
                buffer: Bytes::copy_from_slice(buffer),
                body: spans[0]?,
                etag: spans[1]?,
                urls_expire,
                gzip: OnceLock::new(),
                storyboard_vtt: spans[2],
                storyboard_json: spans[3],
                thumbnails: spans[4].filter(|s| s.len % 16 == 0)?,
                origin: spans[5]?,
            };
            // The ETag becomes a header value: only what a rendered tag can be.
            let etag = resolved.etag_bytes();
            if etag.len() < 2 || !etag.iter().all(|b| b.is_ascii_graphic()) {
                return None;
            }
            Some(Entry::Found(Arc::new(resolved)))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::resolver::entry::tests::resolved;

    #[test]
    fn a_found_entry_comes_back_as_it_went() {
        let clocks = Clocks::read();
        let r = resolved("abc");
        let bytes = encode(&Entry::Found(r.clone()), clocks);
        let Some(Entry::Found(back)) = decode(&bytes, clocks) else {
            panic!("decoded")
        };
        assert_eq!(back.buffer, r.buffer);
        assert_eq!(back.body(), r.body());
        assert_eq!(back.etag_bytes(), r.etag_bytes());
        assert!(back.is_for("abc"));
        assert!(back.lives_in("acct", "box"));
        assert_eq!(back.indices().collect::<Vec<_>>(), [1]);
        // Times survive to the millisecond.
        let off = |a: Instant, b: Instant| {
            a.checked_duration_since(b)
                .unwrap_or_else(|| b.duration_since(a))
        };
        assert!(off(back.valid_until, r.valid_until) <= Duration::from_millis(1));
        assert!(off(back.fresh_until, r.fresh_until) <= Duration::from_millis(1));
        assert_eq!(back.urls_expire.is_some(), r.urls_expire.is_some());
    }

    #[test]
    fn a_negative_entry_and_its_validity() {
        let clocks = Clocks::read();
        let until = clocks.now + Duration::from_secs(30);
        let bytes = encode(&Entry::NotFound { valid_until: until }, clocks);
        assert_eq!(bytes.len(), HEADER);
        let Some(Entry::NotFound { valid_until }) = decode(&bytes, clocks) else {
            panic!("decoded")
        };
        assert!(valid_until.duration_since(clocks.now) >= Duration::from_millis(29_999));
    }

    #[test]
    fn damaged_or_foreign_bytes_are_refused_not_trusted() {
        let clocks = Clocks::read();
        let good = encode(&Entry::Found(resolved("abc")), clocks);
        assert!(decode(&[], clocks).is_none());
        assert!(decode(&[2, 1], clocks).is_none());
        assert!(
            decode(&good[..good.len() - 1], clocks).is_none(),
            "truncated"
        );
        for cut in [1, 2, 10, HEADER, HEADER + 8] {
            assert!(decode(&good[..cut], clocks).is_none(), "cut at {cut}");
        }
        let mut kind = good.clone();
        kind[1] = 7;
        assert!(decode(&kind, clocks).is_none());
        // A span past the buffer.
        let mut span = good.clone();
        span[HEADER + 4..HEADER + 8].copy_from_slice(&u32::MAX.wrapping_sub(1).to_le_bytes());
        assert!(decode(&span, clocks).is_none());
    }
}
