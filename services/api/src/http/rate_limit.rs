//! Per-client-IP rate limits (the sign-in endpoints): a GCRA limiter from `governor`, keyed
//! by the client IP that [`crate::http::client_ip`] resolves. Each api replica limits on its own;
//! with N replicas behind a balancer a client gets at most N times the configured rate.

use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::ApiError;

pub struct IpRateLimiter {
    limiter: DefaultKeyedRateLimiter<IpAddr>,
    clock: DefaultClock,
    checks: AtomicU64,
}

impl IpRateLimiter {
    /// `per_minute` requests per IP and minute, in a burst of up to `per_minute`.
    pub fn per_minute(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            checks: AtomicU64::new(0),
        }
    }

    /// Ok, or `429 TOO_MANY_REQUESTS` with the seconds until the next allowed request.
    pub fn check(&self, ip: IpAddr) -> Result<(), ApiError> {
        // Forget idle IPs now and then so the table cannot grow without bound.
        if self.checks.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&ip).map_err(|not_until| {
            let wait = not_until.wait_time_from(self.clock.now());
            ApiError::TooManyRequests {
                retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_limit_is_per_ip_and_says_when_to_retry() {
        let limiter = IpRateLimiter::per_minute(2);
        let first: IpAddr = [10, 0, 0, 1].into();
        let second: IpAddr = [10, 0, 0, 2].into();
        assert!(limiter.check(first).is_ok());
        assert!(limiter.check(first).is_ok());
        match limiter.check(first) {
            Err(ApiError::TooManyRequests {
                retry_after_seconds,
            }) => assert!((1..=30).contains(&retry_after_seconds)),
            other => panic!("expected 429, got {other:?}"),
        }
        assert!(limiter.check(second).is_ok());
    }
}
