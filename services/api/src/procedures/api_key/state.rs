//! The API-key tier's per-replica state: per-key rates, the quota counter and the cached key
//! contexts.

use crate::modules::subscriptions::metering::{KeyRateLimiter, QuotaCounter};
use domain::ids::{ApiKeyId, UserId};
use moka::future::Cache;
use std::time::{Duration, Instant};

/// How long a key's creator and plan rate are cached. A plan change is broadcast to every
/// replica (`KeyVerifier::subscription_changed`), which reloads at once; a replica that
/// missed the broadcast (NATS down at that moment) follows within this. The monthly quota and
/// the API access switch are read from Postgres on every request, so they are exact.
pub const KEY_CONTEXT_TTL: Duration = Duration::from_secs(30);

/// Per-replica state of the open API.
pub struct OpenApiState {
    /// Requests per second per key (per plan).
    pub key_rates: KeyRateLimiter,
    /// The monthly quota, counted in Postgres.
    pub quota: QuotaCounter,
    /// api_key_id → its creator and its plan's rate, and when they were read.
    pub(crate) contexts: Cache<ApiKeyId, (KeyContext, Instant)>,
}

impl Default for OpenApiState {
    fn default() -> Self {
        Self {
            key_rates: KeyRateLimiter::default(),
            quota: QuotaCounter::default(),
            contexts: Cache::builder()
                .max_capacity(100_000)
                .time_to_live(KEY_CONTEXT_TTL)
                .build(),
        }
    }
}

#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub(crate) struct KeyContext {
    pub(crate) created_by_user_id: UserId,
    pub(crate) requests_per_second: i32,
}
