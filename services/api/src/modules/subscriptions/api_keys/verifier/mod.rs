//! API key verification for the open API (the `open_api_public` tier), fast enough to run on
//! every request.
//!
//! A scrypt costs tens of milliseconds of CPU, so it must not run per request:
//!
//! - **Cache.** Verified keys are kept in a `moka` cache keyed by the SHA-256 of the presented
//!   key (never the key itself), for `API_KEY_CACHE_TTL_SECONDS`. A hit costs a hash and a few
//!   map lookups.
//! - **Single flight.** A miss loads through `try_get_with`, which runs one loader per key and
//!   hands its result to every concurrent caller: a burst of requests with a fresh key runs
//!   one scrypt.
//! - **Off the runtime, bounded.** scrypt runs in `spawn_blocking` behind a semaphore of
//!   `API_KEY_SCRYPT_CONCURRENCY` permits.
//! - **Failures are rate-limited** per client IP (GCRA, `governor`): after
//!   `API_KEY_FAILURES_PER_MINUTE` failures, uncached verifications from that IP answer
//!   `429 RATE_LIMITED` without touching the database or scrypt. Cache hits (keys already
//!   proven) are never limited. Nothing is limited per key or prefix: the prefix is public,
//!   so a limit on it would let anybody lock a key out of its own traffic; the secret's 256
//!   bits make guessing pointless, and the scrypt semaphore bounds what failures cost.
//! - **Revocation** is broadcast over NATS core pub/sub (`<namespace>.api_keys.invalidate`); every
//!   replica subscribes and refuses the key from then on. Deleting an app team (which takes its API
//!   team along) is broadcast the same way and refuses all of its keys. A replica also remembers
//!   recently revoked ids, so a load that raced the revocation cannot put the key back. A replica
//!   that missed the broadcast (NATS down at that moment) still stops trusting the key when its
//!   cache entry expires: the TTL bounds the window.
//! - **IP allow-lists** are cached per API team the same way and invalidated by the same
//!   broadcast when they change.
//! - **Plan changes** are broadcast the same way (`subscriptionChanged`), so every replica reloads
//!   the per-key plan rate it caches (`procedures::api_key::key_context`) at once rather than after
//!   that cache's TTL. (The monthly quota and the API access switch are read from Postgres on every
//!   request and need no broadcast.)
//! - **last_used_at** is written in the background: at most one write per key and minute per
//!   replica, batched every second, never on the request path.

pub mod limits;
pub mod types;

use domain::ids::{ApiKeyId, ApiTeamId, TeamId};
use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use futures::StreamExt;
use ipnet::IpNet;
use moka::future::Cache;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use self::limits::{FailureLimiter, LAST_USED_FLUSH, LastUsed, lock, rate_limited};
use self::types::{
    AllowList, Invalidation, KeyRow, LoadError, VerifiedKey, invalid_key, ip_not_allowed,
};
use super::key;
use crate::config::ApiKeyConfig;
use crate::http::error::ApiError;

/// The subject, relative to the bus namespace, that carries cache invalidations between api
/// replicas. Plain NATS (no stream captures it): only replicas running now need it.
pub const INVALIDATION_SUBJECT: &str = "api_keys.invalidate";

/// Longest presented key that is even hashed; longer is rejected outright.
const MAX_PRESENTED_LEN: usize = 256;
/// How long a plan change is remembered at least: longer than any cached plan rate lives
/// (`open_api`'s key contexts, 30 s).
const SUBSCRIPTION_CHANGE_MEMORY: Duration = Duration::from_secs(120);

pub struct KeyVerifier {
    db: PgPool,
    nats: async_nats::Client,
    /// The full invalidation subject (with the bus namespace).
    subject: String,
    ttl: Duration,
    keys: Cache<[u8; 32], Arc<VerifiedKey>>,
    allowlists: Cache<ApiTeamId, Arc<AllowList>>,
    /// Keys revoked recently (kept twice the TTL: longer than any entry loaded before).
    revoked: Mutex<HashMap<ApiKeyId, Instant>>,
    /// When each API team's allow-list last changed (kept twice the TTL).
    allowlist_changed: Mutex<HashMap<ApiTeamId, Instant>>,
    /// App teams deleted recently (kept twice the TTL): their keys are refused.
    deleted_teams: Mutex<HashMap<TeamId, Instant>>,
    /// When each API team's plan last changed (kept twice the TTL and at least as long as
    /// any plan-rate cache entry lives).
    subscription_changed: Mutex<HashMap<ApiTeamId, Instant>>,
    scrypt_permits: Arc<Semaphore>,
    scrypt_runs: AtomicU64,
    ip_failures: FailureLimiter<IpAddr>,
    last_used: LastUsed,
}

impl KeyVerifier {
    pub fn new(
        db: PgPool,
        nats: async_nats::Client,
        subject: String,
        config: &ApiKeyConfig,
    ) -> Self {
        Self {
            db,
            nats,
            subject,
            ttl: config.cache_ttl,
            keys: Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(config.cache_ttl)
                .build(),
            allowlists: Cache::builder()
                .max_capacity(config.cache_capacity)
                .time_to_live(config.cache_ttl)
                .build(),
            revoked: Mutex::default(),
            allowlist_changed: Mutex::default(),
            deleted_teams: Mutex::default(),
            subscription_changed: Mutex::default(),
            scrypt_permits: Arc::new(Semaphore::new(config.scrypt_concurrency.max(1))),
            scrypt_runs: AtomicU64::new(0),
            ip_failures: FailureLimiter::per_minute(config.failures_per_minute),
            last_used: LastUsed::default(),
        }
    }

    /// How many scrypt verifications this replica has run (tests and metrics: a cache hit or
    /// a coalesced caller runs none).
    pub fn scrypt_runs(&self) -> u64 {
        self.scrypt_runs.load(Ordering::Relaxed)
    }

    /// Verify `presented` (the `x-api-key` header) for a caller at `client_ip` (resolved by
    /// `client_ip`, trusted-proxy aware).
    pub async fn verify(
        &self,
        presented: &str,
        client_ip: IpAddr,
    ) -> Result<VerifiedKey, ApiError> {
        let result = self.verify_uncounted(presented, client_ip).await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(ApiError::TooManyRequests { .. }) => "rate_limited",
            Err(ApiError::Internal(_)) => "error",
            Err(error) if error.code() == "IP_NOT_ALLOWED" => "ip_not_allowed",
            Err(_) => "invalid",
        };
        metrics::counter!(
            "api_key_verifications_total",
            "service" => crate::SERVICE,
            "outcome" => outcome
        )
        .increment(1);
        result
    }

    async fn verify_uncounted(
        &self,
        presented: &str,
        client_ip: IpAddr,
    ) -> Result<VerifiedKey, ApiError> {
        // An IPv4 client reaching a dual-stack listener shows as ::ffff:a.b.c.d.
        let client_ip = client_ip.to_canonical();
        if presented.len() > MAX_PRESENTED_LEN {
            self.ip_failures.record(client_ip);
            return Err(invalid_key());
        }
        let cache_key: [u8; 32] = Sha256::digest(presented.as_bytes()).into();
        let verified = match self.keys.get(&cache_key).await {
            Some(verified) => verified,
            None => self.load(cache_key, presented, client_ip).await?,
        };
        if self.is_revoked(verified.api_key_id) || self.is_team_deleted(verified.team_id) {
            self.keys.invalidate(&cache_key).await;
            return Err(invalid_key());
        }
        if verified.expires_at.is_some_and(|at| at <= Utc::now()) {
            self.keys.invalidate(&cache_key).await;
            return Err(invalid_key());
        }
        let allowlist = self.allowlist(verified.api_team_id).await?;
        if !allowlist.allows(client_ip) {
            tracing::debug!(prefix = %verified.prefix, %client_ip, "api key used from a network outside the allow-list");
            return Err(ip_not_allowed());
        }
        self.last_used.touch(verified.api_key_id);
        Ok(VerifiedKey::clone(&verified))
    }

    /// The uncached path: rate limits, then one loader per key (single flight).
    async fn load(
        &self,
        cache_key: [u8; 32],
        presented: &str,
        client_ip: IpAddr,
    ) -> Result<Arc<VerifiedKey>, ApiError> {
        if let Some(wait) = self.ip_failures.blocked_for(&client_ip) {
            return Err(rate_limited(wait));
        }
        let Some(prefix) = key::prefix_of(presented) else {
            self.ip_failures.record(client_ip);
            return Err(invalid_key());
        };
        self.keys
            .try_get_with(cache_key, async {
                let outcome = self.load_uncached(prefix, presented).await;
                if matches!(outcome, Err(LoadError::Invalid)) {
                    tracing::debug!(prefix, %client_ip, "api key verification failed");
                    self.ip_failures.record(client_ip);
                }
                outcome
            })
            .await
            .map_err(|error| ApiError::from(error.as_ref()))
    }

    async fn load_uncached(
        &self,
        prefix: &str,
        presented: &str,
    ) -> Result<Arc<VerifiedKey>, LoadError> {
        let row: Option<KeyRow> = sqlx::query_as(
            "SELECT k.api_key_id, k.api_team_id, a.team_id, k.prefix, k.key_hash, k.expires_at,
                    k.revoked_at
               FROM api_keys k
               JOIN api_teams a ON a.api_team_id = k.api_team_id
               JOIN teams t ON t.team_id = a.team_id
              WHERE k.prefix = $1 AND t.deleted_at IS NULL",
        )
        .bind(prefix)
        .fetch_optional(&self.db)
        .await
        .map_err(LoadError::from)?;
        let Some(row) = row else {
            return Err(LoadError::Invalid);
        };
        // Dead keys are refused before the expensive part.
        if row.revoked_at.is_some() || row.expires_at.is_some_and(|at| at <= Utc::now()) {
            return Err(LoadError::Invalid);
        }
        if !self.scrypt_matches(presented, row.key_hash).await? {
            return Err(LoadError::Invalid);
        }
        Ok(Arc::new(VerifiedKey {
            api_key_id: row.api_key_id,
            api_team_id: row.api_team_id,
            team_id: row.team_id,
            prefix: row.prefix,
            expires_at: row.expires_at,
        }))
    }

    async fn scrypt_matches(&self, presented: &str, key_hash: String) -> Result<bool, LoadError> {
        let permit = Arc::clone(&self.scrypt_permits)
            .acquire_owned()
            .await
            .map_err(|error| LoadError::Internal(error.to_string()))?;
        self.scrypt_runs.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("api_key_scrypt_runs_total", "service" => crate::SERVICE).increment(1);
        let presented = SecretString::from(presented.to_owned());
        tokio::task::spawn_blocking(move || {
            // Held until scrypt finishes, even if every waiting request went away.
            let _permit = permit;
            key::matches(&presented, &key_hash)
        })
        .await
        .map_err(|error| LoadError::Internal(error.to_string()))?
        .map_err(LoadError::Internal)
    }

    /// Hash a new key (`apiKeys.create`) under the same bound on parallel scrypt runs.
    pub async fn hash_new_key(&self, key: SecretString) -> Result<String, ApiError> {
        let permit = Arc::clone(&self.scrypt_permits)
            .acquire_owned()
            .await
            .map_err(ApiError::internal)?;
        tokio::task::spawn_blocking(move || {
            let _permit = permit;
            key::hash(&key)
        })
        .await
        .map_err(ApiError::internal)?
        .map_err(ApiError::Internal)
    }

    async fn allowlist(&self, api_team_id: ApiTeamId) -> Result<Arc<AllowList>, ApiError> {
        if let Some(list) = self.allowlists.get(&api_team_id).await {
            if !self.allowlist_changed_since(api_team_id, list.loaded_at) {
                return Ok(list);
            }
            self.allowlists.invalidate(&api_team_id).await;
        }
        self.allowlists
            .try_get_with(api_team_id, async {
                let loaded_at = Instant::now();
                let cidrs: Vec<String> = sqlx::query_scalar(
                    "SELECT cidr::text FROM api_team_ip_rules WHERE api_team_id = $1",
                )
                .bind(api_team_id)
                .fetch_all(&self.db)
                .await
                .map_err(LoadError::from)?;
                let networks = cidrs
                    .iter()
                    .map(|cidr| {
                        cidr.parse::<IpNet>().map_err(|error| {
                            LoadError::Internal(format!("stored cidr {cidr:?}: {error}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                Ok::<_, LoadError>(Arc::new(AllowList {
                    networks,
                    loaded_at,
                }))
            })
            .await
            .map_err(|error| ApiError::from(error.as_ref()))
    }

    // -----------------------------------------------------------------------------------
    // Invalidation

    /// A key was revoked (the transaction committed): refuse it here at once and tell every
    /// other replica.
    pub async fn revoked(&self, api_key_id: ApiKeyId) {
        self.apply(&Invalidation::ApiKeyRevoked { api_key_id });
        self.broadcast(&Invalidation::ApiKeyRevoked { api_key_id })
            .await;
    }

    /// An app team was deleted (committed), and with it its API team: refuse its keys here at
    /// once and tell every other replica, so no cached key outlives the team.
    pub async fn team_deleted(&self, team_id: TeamId) {
        self.apply(&Invalidation::TeamDeleted { team_id });
        self.broadcast(&Invalidation::TeamDeleted { team_id }).await;
    }

    /// An API team's allow-list changed (committed): reload it here and on every replica.
    pub async fn allowlist_changed(&self, api_team_id: ApiTeamId) {
        self.apply(&Invalidation::AllowlistChanged { api_team_id });
        self.allowlists.invalidate(&api_team_id).await;
        self.broadcast(&Invalidation::AllowlistChanged { api_team_id })
            .await;
    }

    /// An API team's plan changed (committed): every replica reloads the plan rate it caches
    /// for the team's keys.
    pub async fn subscription_changed(&self, api_team_id: ApiTeamId) {
        self.apply(&Invalidation::SubscriptionChanged { api_team_id });
        self.broadcast(&Invalidation::SubscriptionChanged { api_team_id })
            .await;
    }

    /// Whether the API team's plan changed at or after `loaded_at` (as far as this replica
    /// heard): a cached plan rate loaded then is stale.
    pub fn subscription_changed_since(&self, api_team_id: ApiTeamId, loaded_at: Instant) -> bool {
        lock(&self.subscription_changed)
            .get(&api_team_id)
            .is_some_and(|changed_at| *changed_at >= loaded_at)
    }

    async fn broadcast(&self, message: &Invalidation) {
        let payload = match serde_json::to_vec(message) {
            Ok(payload) => payload,
            Err(error) => {
                tracing::error!(%error, "cannot encode an api key invalidation");
                return;
            }
        };
        // Not fatal: the change is committed, replicas that miss it stop trusting their
        // cached entry when it expires (the TTL).
        if let Err(error) = self
            .nats
            .publish(self.subject.clone(), payload.into())
            .await
        {
            tracing::warn!(%error, "api key invalidation not published");
            return;
        }
        if let Err(error) = self.nats.flush().await {
            tracing::warn!(%error, "api key invalidation not flushed");
        }
    }

    fn apply(&self, message: &Invalidation) {
        let now = Instant::now();
        let keep = self.ttl * 2;
        match message {
            Invalidation::ApiKeyRevoked { api_key_id } => {
                let mut revoked = lock(&self.revoked);
                revoked.retain(|_, at| now.duration_since(*at) < keep);
                revoked.insert(*api_key_id, now);
            }
            Invalidation::AllowlistChanged { api_team_id } => {
                let mut changed = lock(&self.allowlist_changed);
                changed.retain(|_, at| now.duration_since(*at) < keep);
                changed.insert(*api_team_id, now);
            }
            Invalidation::TeamDeleted { team_id } => {
                let mut deleted = lock(&self.deleted_teams);
                deleted.retain(|_, at| now.duration_since(*at) < keep);
                deleted.insert(*team_id, now);
            }
            Invalidation::SubscriptionChanged { api_team_id } => {
                // The plan-rate cache's TTL may exceed the key cache's: keep the longer.
                let keep = keep.max(SUBSCRIPTION_CHANGE_MEMORY);
                let mut changed = lock(&self.subscription_changed);
                changed.retain(|_, at| now.duration_since(*at) < keep);
                changed.insert(*api_team_id, now);
            }
        }
    }

    fn is_revoked(&self, api_key_id: ApiKeyId) -> bool {
        lock(&self.revoked).contains_key(&api_key_id)
    }

    fn is_team_deleted(&self, team_id: TeamId) -> bool {
        lock(&self.deleted_teams).contains_key(&team_id)
    }

    fn allowlist_changed_since(&self, api_team_id: ApiTeamId, loaded_at: Instant) -> bool {
        lock(&self.allowlist_changed)
            .get(&api_team_id)
            .is_some_and(|changed_at| *changed_at >= loaded_at)
    }

    /// Subscribe to the other replicas' invalidations and start the `last_used_at` writer;
    /// both stop with `shutdown`. Returns once the subscription is registered with the
    /// server, so nothing published after the service is ready can be missed.
    pub async fn start_background(
        self: &Arc<Self>,
        shutdown: CancellationToken,
    ) -> Result<JoinHandle<()>, async_nats::Error> {
        let mut subscription = self.nats.subscribe(self.subject.clone()).await?;
        self.nats.flush().await?;
        let verifier = Arc::clone(self);
        Ok(tokio::spawn(async move {
            let mut flush = tokio::time::interval(LAST_USED_FLUSH);
            flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = subscription.next() => match message {
                        Some(message) => match serde_json::from_slice::<Invalidation>(&message.payload) {
                            Ok(invalidation) => {
                                verifier.apply(&invalidation);
                                if let Invalidation::AllowlistChanged { api_team_id } = invalidation {
                                    verifier.allowlists.invalidate(&api_team_id).await;
                                }
                            }
                            Err(error) => tracing::warn!(%error, "unreadable api key invalidation"),
                        },
                        None => {
                            tracing::warn!("api key invalidation subscription ended");
                            break;
                        }
                    },
                    _ = flush.tick() => verifier.flush_last_used().await,
                }
            }
            let _ = subscription.unsubscribe().await;
            verifier.flush_last_used().await;
        }))
    }

    async fn flush_last_used(&self) {
        let ids = self.last_used.take();
        if ids.is_empty() {
            return;
        }
        let result = sqlx::query(
            "UPDATE api_keys SET last_used_at = now()
              WHERE api_key_id = ANY($1) AND (last_used_at IS NULL OR last_used_at < now())",
        )
        .bind(&ids)
        .execute(&self.db)
        .await;
        if let Err(error) = result {
            // Best effort: the next use queues the key again after LAST_USED_EVERY.
            tracing::warn!(%error, keys = ids.len(), "last_used_at not written");
        }
    }
}

#[cfg(test)]
mod tests;
