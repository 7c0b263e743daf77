//! The per-client rate limit: keyed GCRA (governor), `rate_limit.requests_per_second`
//! sustained with bursts of `rate_limit.burst`, by client identity; and the limit on failed
//! authentications per client address ([`AuthFailures`]).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use governor::clock::Clock;
use governor::{DefaultKeyedRateLimiter, Quota};

use crate::config::RateLimitSettings;

/// At most this many clients are tracked; a flood of new identities first drops those whose
/// allowance is full again, and past that new ones wait.
const MAX_CLIENTS: usize = 100_000;

pub struct RateLimiter {
    limiter: DefaultKeyedRateLimiter<String>,
}

impl RateLimiter {
    /// None when limiting is off (`requests_per_second = 0`).
    pub fn new(settings: &RateLimitSettings) -> Option<Self> {
        if settings.requests_per_second <= 0.0 {
            return None;
        }
        let period = Duration::from_secs_f64(1.0 / settings.requests_per_second);
        let quota = Quota::with_period(period.max(Duration::from_nanos(1)))?
            .allow_burst(NonZeroU32::new(settings.burst).unwrap_or(NonZeroU32::MIN));
        Some(Self {
            limiter: DefaultKeyedRateLimiter::keyed(quota),
        })
    }

    /// Takes one request's allowance for `client` (its bucket name, made for this request and
    /// used as the key as it is), or says how long until there is one.
    pub fn check(&self, client: String) -> Result<(), Duration> {
        if self.limiter.len() >= MAX_CLIENTS {
            self.limiter.retain_recent();
            if self.limiter.len() >= MAX_CLIENTS {
                return Err(Duration::from_secs(1));
            }
        }
        self.limiter
            .check_key(&client)
            .map_err(|not_until| not_until.wait_time_from(self.limiter.clock().now()))
    }
}

impl RateLimiter {
    /// Takes `n` more allowances for `client` at once (a batch's further ids), or says how long
    /// until there are; `None` when `n` exceeds the burst itself (it never will fit).
    pub fn check_n(&self, client: &String, n: u32) -> Option<Result<(), Duration>> {
        let Some(n) = NonZeroU32::new(n) else {
            return Some(Ok(()));
        };
        match self.limiter.check_key_n(client, n) {
            Err(_insufficient) => None,
            Ok(Ok(())) => Some(Ok(())),
            Ok(Err(not_until)) => Some(Err(not_until.wait_time_from(self.limiter.clock().now()))),
        }
    }
}

/// Failed authentications per client address: GCRA by hand, because the question asked before
/// every credential check is "is this address blocked?", which must not spend an allowance
/// (governor has no such peek). IPv6 addresses count by their /64, which one host usually has
/// whole.
pub struct AuthFailures {
    /// One failure's worth of time.
    interval: Duration,
    /// How far ahead of now an address's theoretical arrival time may run before it is blocked.
    tolerance: Duration,
    started: Instant,
    /// Until when (nanoseconds since `started`) some address may be blocked: while it is past,
    /// the check costs one atomic load and no lock.
    any_blocked_until: AtomicU64,
    /// Theoretical arrival time of each address's next failure, as an instant.
    tat: Mutex<HashMap<IpAddr, Instant, foldhash::fast::RandomState>>,
}

impl AuthFailures {
    /// None when off (`rate_limit.auth_failures_per_minute = 0`).
    pub fn new(settings: &RateLimitSettings) -> Option<Self> {
        if settings.auth_failures_per_minute <= 0.0 {
            return None;
        }
        let interval = Duration::from_secs_f64(60.0 / settings.auth_failures_per_minute);
        Some(Self {
            interval,
            // `burst` failures in a row are heard; the next is not.
            tolerance: interval * (settings.auth_failure_burst.max(1) - 1),
            started: Instant::now(),
            any_blocked_until: AtomicU64::new(0),
            tat: Mutex::new(HashMap::default()),
        })
    }

    fn key(addr: IpAddr) -> IpAddr {
        match addr {
            IpAddr::V6(v6) if v6.to_ipv4_mapped().is_none() => {
                let mut octets = v6.octets();
                octets[8..].fill(0);
                IpAddr::from(octets)
            }
            IpAddr::V6(v6) => IpAddr::V4(v6.to_ipv4_mapped().expect("checked")),
            v4 => v4,
        }
    }

    fn nanos(&self, at: Instant) -> u64 {
        at.saturating_duration_since(self.started).as_nanos() as u64
    }

    /// How long `addr` stays blocked, if it is.
    pub fn blocked(&self, addr: IpAddr) -> Option<Duration> {
        let now = Instant::now();
        if self.nanos(now) >= self.any_blocked_until.load(Ordering::Relaxed) {
            return None;
        }
        let tat = *self.lock().get(&Self::key(addr))?;
        let ahead = tat.saturating_duration_since(now);
        (ahead > self.tolerance).then(|| ahead - self.tolerance)
    }

    /// Counts one failed authentication from `addr`.
    pub fn record(&self, addr: IpAddr) {
        let now = Instant::now();
        let mut tat = self.lock();
        if tat.len() >= MAX_CLIENTS {
            // Addresses whose allowance is whole again hold nothing worth keeping; past that,
            // new addresses go uncounted rather than grow the map.
            tat.retain(|_, t| *t > now);
            if tat.len() >= MAX_CLIENTS {
                metrics::counter!("http_auth_failures_untracked_total").increment(1);
                return;
            }
        }
        let next = tat.entry(Self::key(addr)).or_insert(now);
        *next = (*next).max(now) + self.interval;
        if next.saturating_duration_since(now) > self.tolerance {
            let until = self.nanos(*next - self.tolerance);
            self.any_blocked_until.fetch_max(until, Ordering::Relaxed);
        }
    }

    fn lock(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<IpAddr, Instant, foldhash::fast::RandomState>> {
        self.tat.lock().unwrap_or_else(|e| e.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_waits_per_client() {
        let limiter = RateLimiter::new(&RateLimitSettings {
            requests_per_second: 10.0,
            burst: 3,
            ..RateLimitSettings::default()
        })
        .unwrap();
        for _ in 0..3 {
            assert!(limiter.check("a".into()).is_ok());
        }
        let wait = limiter.check("a".into()).unwrap_err();
        assert!(
            wait <= Duration::from_millis(100) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert!(
            limiter.check("b".into()).is_ok(),
            "allowances are per client"
        );
    }

    #[test]
    fn a_batch_takes_its_ids_at_once() {
        let limiter = RateLimiter::new(&RateLimitSettings {
            requests_per_second: 1.0,
            burst: 10,
            ..RateLimitSettings::default()
        })
        .unwrap();
        let client = "key:a".to_string();
        assert_eq!(limiter.check_n(&client, 8), Some(Ok(())));
        assert!(matches!(limiter.check_n(&client, 5), Some(Err(_))));
        assert_eq!(
            limiter.check_n(&client, 11),
            None,
            "more than the burst never fits"
        );
        assert_eq!(limiter.check_n(&client, 0), Some(Ok(())));
    }

    #[test]
    fn failures_block_an_address_after_the_burst_and_only_it() {
        let failures = AuthFailures::new(&RateLimitSettings {
            auth_failures_per_minute: 60.0,
            auth_failure_burst: 3,
            ..RateLimitSettings::default()
        })
        .unwrap();
        let a: IpAddr = "192.0.2.1".parse().unwrap();
        let b: IpAddr = "192.0.2.2".parse().unwrap();
        assert_eq!(failures.blocked(a), None);
        for _ in 0..2 {
            failures.record(a);
            assert_eq!(failures.blocked(a), None, "within the burst");
        }
        failures.record(a);
        let wait = failures.blocked(a).expect("blocked after the burst");
        assert!(
            wait <= Duration::from_secs(1) && wait > Duration::ZERO,
            "{wait:?}"
        );
        assert_eq!(failures.blocked(b), None, "per address");
        // Asking does not spend anything.
        assert!(failures.blocked(a).unwrap() <= wait);
    }

    #[test]
    fn ipv6_counts_by_its_64() {
        let failures = AuthFailures::new(&RateLimitSettings {
            auth_failures_per_minute: 60.0,
            auth_failure_burst: 1,
            ..RateLimitSettings::default()
        })
        .unwrap();
        failures.record("2001:db8::1".parse().unwrap());
        failures.record("2001:db8::2".parse().unwrap());
        assert!(
            failures
                .blocked("2001:db8::ffff".parse().unwrap())
                .is_some()
        );
        assert!(
            failures
                .blocked("2001:db8:0:1::1".parse().unwrap())
                .is_none()
        );
    }

    #[test]
    fn off_at_zero() {
        assert!(
            RateLimiter::new(&RateLimitSettings {
                requests_per_second: 0.0,
                burst: 3,
                ..RateLimitSettings::default()
            })
            .is_none()
        );
        assert!(
            AuthFailures::new(&RateLimitSettings {
                auth_failures_per_minute: 0.0,
                ..RateLimitSettings::default()
            })
            .is_none()
        );
    }
}
