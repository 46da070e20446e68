//! The verifier's bookkeeping: `last_used_at` written at most once a minute per key, and the
//! per-IP limit on failed verifications.

use domain::ids::ApiKeyId;
use governor::clock::Clock;
use std::collections::{HashMap, HashSet};
use std::hash::Hash;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// How often a key's `last_used_at` is written at most (per replica).
pub(crate) const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// How often pending `last_used_at` writes are flushed.
pub(crate) const LAST_USED_FLUSH: Duration = Duration::from_secs(1);

use governor::clock::DefaultClock;
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};

use crate::http::error::ApiError;

pub(crate) fn rate_limited(wait: Duration) -> ApiError {
    ApiError::TooManyRequests {
        retry_after_seconds: wait.as_secs() + u64::from(wait.subsec_nanos() > 0),
    }
}

pub(crate) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    // The maps hold plain data that no panic can leave half-written.
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Keys whose `last_used_at` should be written, at most once per key and LAST_USED_EVERY.
#[derive(Default)]
pub(crate) struct LastUsed {
    pub(crate) state: Mutex<LastUsedState>,
}

#[derive(Default)]
pub(crate) struct LastUsedState {
    pub(crate) queued_at: HashMap<ApiKeyId, Instant>,
    pub(crate) pending: HashSet<ApiKeyId>,
}

impl LastUsed {
    pub(crate) fn touch(&self, api_key_id: ApiKeyId) {
        let now = Instant::now();
        let mut state = lock(&self.state);
        let due = state
            .queued_at
            .get(&api_key_id)
            .is_none_or(|at| now.duration_since(*at) >= LAST_USED_EVERY);
        if due {
            state.queued_at.insert(api_key_id, now);
            state.pending.insert(api_key_id);
        }
    }

    pub(crate) fn take(&self) -> Vec<ApiKeyId> {
        let now = Instant::now();
        let mut state = lock(&self.state);
        state
            .queued_at
            .retain(|_, at| now.duration_since(*at) < LAST_USED_EVERY);
        state.pending.drain().collect()
    }
}

/// Counts failures per key with GCRA (`governor`); once a key has used its quota, it is
/// blocked until the limiter would admit it again. Only failures count, so a client's good
/// requests never use up its quota.
pub(crate) struct FailureLimiter<K: Hash + Eq + Clone> {
    pub(crate) limiter: DefaultKeyedRateLimiter<K>,
    pub(crate) clock: DefaultClock,
    pub(crate) blocked: Mutex<HashMap<K, Instant>>,
    pub(crate) records: AtomicU64,
}

impl<K: Hash + Eq + Clone> FailureLimiter<K> {
    pub(crate) fn per_minute(per_minute: u32) -> Self {
        let per_minute = NonZeroU32::new(per_minute).unwrap_or(NonZeroU32::MIN);
        Self {
            limiter: RateLimiter::keyed(Quota::per_minute(per_minute)),
            clock: DefaultClock::default(),
            blocked: Mutex::default(),
            records: AtomicU64::new(0),
        }
    }

    /// How long `key` stays blocked, if it is.
    pub(crate) fn blocked_for<Q>(&self, key: &Q) -> Option<Duration>
    where
        K: std::borrow::Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let now = Instant::now();
        lock(&self.blocked)
            .get(key)
            .and_then(|until| until.checked_duration_since(now))
            .filter(|wait| !wait.is_zero())
    }

    pub(crate) fn record(&self, key: K) {
        // Forget idle keys now and then so the tables cannot grow without bound.
        if self.records.fetch_add(1, Ordering::Relaxed) % 1024 == 1023 {
            self.limiter.retain_recent();
            let now = Instant::now();
            lock(&self.blocked).retain(|_, until| *until > now);
        }
        if let Err(not_until) = self.limiter.check_key(&key) {
            let wait = not_until.wait_time_from(self.clock.now());
            lock(&self.blocked).insert(key, Instant::now() + wait);
        }
    }
}
