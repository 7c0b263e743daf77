//! When a signed URL is valid. Without a window a URL is anchored at the instant it is signed,
//! so every refresh and every replica signs another `se`. With a window it is anchored at the
//! start of the wall-clock window (UNIX-epoch multiples) it is signed in: every signer of one
//! blob in one window produces the same `st`, `se` and `rscc`, so the same URL, and browsers
//! and CDNs see one URL per blob per window.
//!
//! A URL signed at `now` in the window starting at `b` ends at `b + lifetime`: it has between
//! `lifetime - window` (signed at the window's end) and `lifetime` (at its start) left, and
//! never more than an unaligned URL would have.

use std::time::Duration;

use time::OffsetDateTime;

use super::sas::SasProtocol;
use crate::config::{MAX_AGE_PLACEHOLDER, MAX_KEY_AHEAD};

/// Validity of signed URLs: from `clock_skew` before their anchor to `lifetime` after it.
#[derive(Debug, Clone)]
pub struct Validity {
    pub lifetime: Duration,
    pub clock_skew: Duration,
    pub protocol: SasProtocol,
    /// Whole seconds; zero: anchored at each signing instant.
    pub window: Duration,
    /// The SAS `rscc`, rendered once: it is the same for every URL.
    pub cache_control: Option<String>,
}

/// The signed start and expiry of one URL, whole seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Span {
    pub start: OffsetDateTime,
    pub expiry: OffsetDateTime,
}

impl Validity {
    /// The URL settings; `response_cache_control` is a `links.response_cache_control` template.
    pub fn new(
        lifetime: Duration,
        clock_skew: Duration,
        protocol: SasProtocol,
        window: Duration,
        response_cache_control: Option<&str>,
    ) -> Self {
        // What a URL has left at the latest it is signed: the end of its window.
        let max_age = lifetime.saturating_sub(window).as_secs().to_string();
        Self {
            lifetime,
            clock_skew,
            protocol,
            window,
            cache_control: response_cache_control
                .map(|template| template.replace(MAX_AGE_PLACEHOLDER, &max_age)),
        }
    }

    /// The start and expiry of a URL signed at `now`.
    pub fn span(&self, now: OffsetDateTime) -> Span {
        let anchor = window_start(now, self.window);
        Span {
            start: truncate_seconds(anchor - self.clock_skew),
            expiry: truncate_seconds(anchor + self.lifetime),
        }
    }

    /// For a window: the start of the delegation-key period `now` falls in and how long the
    /// period is. A period is whole windows (about two lifetimes, as without windows), so one
    /// key signs every URL of a window, and signers asking at the same time ask for the same key.
    pub fn key_period(&self, now: OffsetDateTime) -> Option<(OffsetDateTime, Duration)> {
        if self.window.is_zero() {
            return None;
        }
        let w = self.window.as_secs().max(1);
        // The key must reach the last window's `se`: period - window + lifetime ahead at most.
        let room = (MAX_KEY_AHEAD.saturating_sub(self.lifetime) + self.window)
            .min(MAX_KEY_AHEAD.saturating_sub(self.clock_skew));
        let windows = ((self.lifetime * 2).min(room).as_secs() / w).max(1);
        let period = Duration::from_secs(windows * w);
        Some((window_start(now, period), period))
    }
}

/// The start of the window of length `window` (UNIX-epoch multiples) that `now` falls in, in
/// whole seconds; a zero window: `now` in whole seconds.
pub fn window_start(now: OffsetDateTime, window: Duration) -> OffsetDateTime {
    let now = truncate_seconds(now);
    let w = window.as_secs() as i64;
    if w == 0 {
        return now;
    }
    let t = now.unix_timestamp();
    OffsetDateTime::from_unix_timestamp(t - t.rem_euclid(w)).expect("an earlier valid time")
}

pub fn truncate_seconds(t: OffsetDateTime) -> OffsetDateTime {
    t.replace_nanosecond(0).expect("0 is a valid nanosecond")
}

#[cfg(test)]
mod tests {
    use super::*;
    use time::macros::datetime;

    const HOUR: Duration = Duration::from_secs(3600);
    const MIN: Duration = Duration::from_secs(60);

    fn validity(window: Duration) -> Validity {
        Validity::new(
            HOUR,
            5 * MIN,
            SasProtocol::Https,
            window,
            Some("public, max-age={max_age}, immutable"),
        )
    }

    #[test]
    fn windows_start_on_epoch_multiples() {
        let w = 15 * MIN;
        assert_eq!(
            window_start(datetime!(2026-11-28 10:14:59.999 UTC), w),
            datetime!(2026-11-28 10:00:00 UTC)
        );
        // A boundary belongs to the window it starts.
        assert_eq!(
            window_start(datetime!(2026-11-28 10:15:00 UTC), w),
            datetime!(2026-11-28 10:15:00 UTC)
        );
        assert_eq!(
            window_start(datetime!(2026-11-28 10:15:00.001 UTC), w),
            datetime!(2026-11-28 10:15:00 UTC)
        );
        // Windows that do not divide a day still count from the epoch, not from midnight.
        let t = datetime!(2026-11-28 10:00:00 UTC);
        let seven = Duration::from_secs(7 * 60);
        assert_eq!(window_start(t, seven).unix_timestamp() % 420, 0);
        assert!(window_start(t, seven) <= t && t - window_start(t, seven) < seven);
        // No window: the instant itself, in whole seconds.
        assert_eq!(
            window_start(datetime!(2026-11-28 10:14:59.999 UTC), Duration::ZERO),
            datetime!(2026-11-28 10:14:59 UTC)
        );
    }

    #[test]
    fn one_window_signs_one_span_and_the_next_another() {
        let v = validity(15 * MIN);
        let early = v.span(datetime!(2026-11-28 10:00:00 UTC));
        let late = v.span(datetime!(2026-11-28 10:14:59.999 UTC));
        assert_eq!(early, late);
        assert_eq!(
            early,
            Span {
                start: datetime!(2026-11-28 09:55:00 UTC),
                expiry: datetime!(2026-11-28 11:00:00 UTC),
            }
        );
        // Two signers with their own settings agree.
        assert_eq!(
            validity(15 * MIN).span(datetime!(2026-11-28 10:07:31 UTC)),
            early
        );
        let next = v.span(datetime!(2026-11-28 10:15:00 UTC));
        assert_ne!(next, early);
        assert_eq!(next.expiry, datetime!(2026-11-28 11:15:00 UTC));
        assert_eq!(next.start, datetime!(2026-11-28 10:10:00 UTC));
    }

    #[test]
    fn validity_left_stays_between_lifetime_less_window_and_lifetime() {
        let window = 15 * MIN;
        let v = validity(window);
        let base = datetime!(2026-11-28 10:00:00 UTC).unix_timestamp();
        // Every second of three windows, plus instants just before and after each boundary.
        let mut instants: Vec<OffsetDateTime> = (0..3 * 900)
            .map(|s| OffsetDateTime::from_unix_timestamp(base + s).unwrap())
            .collect();
        for b in [900, 1800] {
            let at = OffsetDateTime::from_unix_timestamp(base + b).unwrap();
            instants.push(at - time::Duration::nanoseconds(1));
            instants.push(at + time::Duration::nanoseconds(1));
        }
        for now in instants {
            let span = v.span(now);
            let left = span.expiry - now;
            assert!(left <= HOUR, "{now}: {left} left");
            assert!(left > HOUR - window, "{now}: {left} left");
            assert!(span.start <= now - v.clock_skew, "{now}");
            assert!(now - span.start <= window + v.clock_skew, "{now}");
        }
    }

    #[test]
    fn without_a_window_urls_are_anchored_at_each_signing() {
        let v = validity(Duration::ZERO);
        let a = v.span(datetime!(2026-11-28 10:00:00.400 UTC));
        assert_eq!(
            a,
            Span {
                start: datetime!(2026-11-28 09:55:00 UTC),
                expiry: datetime!(2026-11-28 11:00:00 UTC),
            }
        );
        assert_ne!(v.span(datetime!(2026-11-28 10:00:01 UTC)), a);
        assert_eq!(v.key_period(datetime!(2026-11-28 10:00:00 UTC)), None);
    }

    #[test]
    fn cache_control_is_what_a_url_has_left_at_its_window_end() {
        assert_eq!(
            validity(15 * MIN).cache_control.as_deref(),
            Some("public, max-age=2700, immutable")
        );
        assert_eq!(
            validity(Duration::ZERO).cache_control.as_deref(),
            Some("public, max-age=3600, immutable")
        );
        let plain = Validity::new(
            HOUR,
            MIN,
            SasProtocol::Https,
            MIN,
            Some("private, no-transform"),
        );
        assert_eq!(
            plain.cache_control.as_deref(),
            Some("private, no-transform")
        );
    }

    #[test]
    fn key_periods_are_whole_windows_covering_every_url_they_sign() {
        let v = validity(15 * MIN);
        let (start, period) = v.key_period(datetime!(2026-11-28 10:07:00 UTC)).unwrap();
        assert_eq!(period, 2 * HOUR, "two lifetimes, in whole windows");
        assert_eq!(start, datetime!(2026-11-28 10:00:00 UTC));
        assert_eq!(
            v.key_period(datetime!(2026-11-28 11:59:59 UTC)),
            Some((start, period)),
            "the same key for every window of the period"
        );
        // The last window of the period signs `se` = its start + lifetime: the key reaches it.
        let last = v.span(datetime!(2026-11-28 11:59:59 UTC));
        assert!(last.expiry <= start + period - v.window + v.lifetime);
        // Long lifetimes: the key is asked for at most MAX_KEY_AHEAD ahead.
        let long = Validity::new(6 * 24 * HOUR, 5 * MIN, SasProtocol::Https, HOUR, None);
        let (_, period) = long.key_period(datetime!(2026-11-28 10:00:00 UTC)).unwrap();
        assert!(period - long.window + long.lifetime <= MAX_KEY_AHEAD);
        assert_eq!(period.as_secs() % 3600, 0);
        assert!(period >= long.window);
    }
}
