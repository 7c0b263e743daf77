//! The per-client rate limit: keyed GCRA (governor), `rate_limit.requests_per_second`
//! sustained with bursts of `rate_limit.burst`, by client identity.

use std::num::NonZeroU32;
use std::time::Duration;

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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bursts_then_waits_per_client() {
        let limiter = RateLimiter::new(&RateLimitSettings {
            requests_per_second: 10.0,
            burst: 3,
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
    fn off_at_zero() {
        assert!(
            RateLimiter::new(&RateLimitSettings {
                requests_per_second: 0.0,
                burst: 3,
            })
            .is_none()
        );
    }
}
