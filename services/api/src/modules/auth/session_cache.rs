//! Verified sessions, cached per replica so an authenticated request does not read Postgres
//! before its write (issue 22).
//!
//! - **Key**: the SHA-256 of the token (never the token). **Value**: what the session check
//!   needs: session id, user id, `created_at` (the Sensitive tier's freshness) and
//!   `expires_at`. Only sessions of active users are cached (the lookup joins `users` on
//!   `deleted_at IS NULL`), and deleting an account revokes all its sessions.
//! - **Short TTL** (`SESSION_CACHE_TTL_SECONDS`, default 30, 0 turns the cache off),
//!   bounded capacity (`SESSION_CACHE_CAPACITY`). Expiry and the absolute lifetime are checked
//!   against the clock on every hit; sliding still writes (at most once a day per session).
//! - **Revocation** drops a session at once on every replica: the replica that revokes
//!   forgets it locally (before its transaction commits, so no request can re-cache it in
//!   between), and every replica follows `session.revoked` on the bus (see [`follow_revocations`]).
//!   A forgotten session id is remembered for twice the TTL and checked on every hit and
//!   after every insert, so a lookup that raced the revocation cannot put it back.
//! - **What the cache cannot see**: a session row changed in SQL by hand, and revocations
//!   published while this replica's NATS connection is down. The TTL bounds both; when the
//!   connection comes back the listener empties the cache, so only the outage itself is
//!   exposed (docs/security.md).

use domain::ids::{SessionId, UserId};
use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use std::sync::Arc;

use bus::Bus;
use bus::every_replica::EveryReplica;
use chrono::{DateTime, Utc};
use messages::journal::v1::SessionRevoked;
use moka::future::Cache;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::config::SessionCacheConfig;

/// The SHA-256 of a session token.
pub type TokenHash = [u8; 32];

/// A verified session as the request path needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CachedSession {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
}

impl CachedSession {
    /// Still usable at `now`: before its expiry and within the absolute lifetime.
    pub fn is_live(&self, now: DateTime<Utc>, absolute_lifetime: Duration) -> bool {
        let end_of_life = self.created_at
            + chrono::Duration::from_std(absolute_lifetime).unwrap_or(chrono::Duration::MAX);
        self.expires_at > now && end_of_life > now
    }
}

pub struct SessionCache {
    /// `None` when the cache is off (TTL 0).
    entries: Option<Cache<TokenHash, CachedSession>>,
    /// How long a forgotten session id is remembered: longer than any entry cached before.
    forget_for: Duration,
    /// Sessions revoked recently (by this replica or heard on the bus).
    forgotten: Mutex<HashMap<SessionId, Instant>>,
    /// How many `session.revoked` events this replica has heard (tests wait on it).
    heard: watch::Sender<u64>,
}

impl SessionCache {
    pub fn new(config: &SessionCacheConfig) -> Self {
        let entries = (!config.ttl.is_zero()).then(|| {
            Cache::builder()
                .max_capacity(config.capacity)
                .time_to_live(config.ttl)
                .build()
        });
        Self {
            entries,
            forget_for: config.ttl.saturating_mul(2),
            forgotten: Mutex::default(),
            heard: watch::Sender::new(0),
        }
    }

    pub fn enabled(&self) -> bool {
        self.entries.is_some()
    }

    /// The cached session of `token_hash`, unless it was revoked since.
    pub async fn get(&self, token_hash: &TokenHash) -> Option<CachedSession> {
        let entries = self.entries.as_ref()?;
        let session = entries.get(token_hash).await?;
        if self.is_forgotten(session.session_id) {
            entries.invalidate(token_hash).await;
            return None;
        }
        Some(session)
    }

    /// Cache `session` (just read from, or written to, Postgres).
    pub async fn insert(&self, token_hash: TokenHash, session: CachedSession) {
        let Some(entries) = &self.entries else {
            return;
        };
        entries.insert(token_hash, session).await;
        // Checked after the insert: a revocation recorded meanwhile sees the entry or is seen.
        if self.is_forgotten(session.session_id) {
            entries.invalidate(&token_hash).await;
        }
    }

    /// Drop the entry of `token_hash` (its session was refused by Postgres).
    pub async fn remove(&self, token_hash: &TokenHash) {
        if let Some(entries) = &self.entries {
            entries.invalidate(token_hash).await;
        }
    }

    /// Stop trusting the cached entry of `session_id` from now on (it was revoked).
    pub fn forget(&self, session_id: SessionId) {
        if self.entries.is_none() {
            return;
        }
        let now = Instant::now();
        let mut forgotten = self.lock();
        forgotten.retain(|_, at| now.duration_since(*at) < self.forget_for);
        forgotten.insert(session_id, now);
    }

    /// Forget every cached session (after missing revocations, e.g. a NATS reconnection).
    pub fn forget_all(&self) {
        if let Some(entries) = &self.entries {
            entries.invalidate_all();
        }
    }

    pub fn is_forgotten(&self, session_id: SessionId) -> bool {
        self.lock().contains_key(&session_id)
    }

    /// Counts the `session.revoked` events heard on the bus.
    pub fn heard_revocations(&self) -> watch::Receiver<u64> {
        self.heard.subscribe()
    }

    fn heard(&self, session_id: SessionId) {
        self.forget(session_id);
        self.heard.send_modify(|count| *count += 1);
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<SessionId, Instant>> {
        self.forgotten
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// How far back a (re)started listener reads `session.revoked`: events published while its
/// consumer was being created are not missed. Replaying older ones only costs a lookup.
const REPLAY: Duration = Duration::from_secs(60);

/// Follow `session.revoked` on this replica's own consumer until `shutdown`, forgetting the
/// sessions it names. When a new consumer replaces a failed one (the NATS connection was
/// replaced, say) the whole cache is emptied: revocations published meanwhile are unknown.
/// The first consumer is created before this returns, so a caller that waits for it before
/// serving misses no revocation published after readiness.
pub async fn follow_revocations(
    bus: Bus,
    sessions: Arc<SessionCache>,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, String> {
    let revocations = EveryReplica::<SessionRevoked>::new(bus, "api-session-revoked", REPLAY);
    let first = revocations.subscribe().await?;
    let cache = Arc::clone(&sessions);
    Ok(revocations.follow(
        Some(first),
        shutdown,
        move |event: SessionRevoked| {
            if let Ok(session_id) = event.parse_session_id() {
                cache.heard(session_id);
            }
        },
        move || sessions.forget_all(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(ttl_seconds: u64) -> SessionCacheConfig {
        SessionCacheConfig {
            ttl: Duration::from_secs(ttl_seconds),
            capacity: 100,
        }
    }

    fn session(expires_in: chrono::Duration) -> CachedSession {
        let now = Utc::now();
        CachedSession {
            session_id: SessionId::generate(),
            user_id: UserId::generate(),
            created_at: now - chrono::Duration::hours(1),
            expires_at: now + expires_in,
        }
    }

    #[tokio::test]
    async fn a_forgotten_session_is_not_served_nor_cached_again() {
        let cache = SessionCache::new(&config(600));
        let cached = session(chrono::Duration::days(7));
        cache.insert([1; 32], cached).await;
        assert_eq!(cache.get(&[1; 32]).await, Some(cached));
        cache.forget(cached.session_id);
        assert_eq!(cache.get(&[1; 32]).await, None);
        // A lookup that read the row before the revocation committed cannot put it back.
        cache.insert([1; 32], cached).await;
        assert_eq!(cache.get(&[1; 32]).await, None);
    }

    #[tokio::test]
    async fn a_zero_ttl_turns_the_cache_off() {
        let cache = SessionCache::new(&config(0));
        assert!(!cache.enabled());
        cache
            .insert([2; 32], session(chrono::Duration::days(7)))
            .await;
        assert_eq!(cache.get(&[2; 32]).await, None);
    }

    #[test]
    fn liveness_checks_expiry_and_absolute_lifetime() {
        let now = Utc::now();
        let thirty_days = Duration::from_secs(30 * 86_400);
        assert!(session(chrono::Duration::days(7)).is_live(now, thirty_days));
        assert!(!session(chrono::Duration::seconds(-1)).is_live(now, thirty_days));
        let mut old = session(chrono::Duration::days(7));
        old.created_at = now - chrono::Duration::days(31);
        assert!(!old.is_live(now, thirty_days));
    }
}
