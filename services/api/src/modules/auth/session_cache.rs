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
//!   between), and every replica follows `session.revoked` on the bus (see [`run_listener`]).
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

use async_nats::jetstream::{self, consumer};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use messages::definition::BusMessage;
use messages::journal::v1::SessionRevoked;
use moka::future::Cache;
use prost::Message;
use tokio::sync::watch;
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

/// A `session.revoked` consumer of this replica's own, ready to follow (created before the
/// api serves, so no revocation published after readiness is missed).
pub struct Listener {
    jetstream: jetstream::Context,
    events_stream: String,
    subject: String,
}

impl Listener {
    pub fn new(jetstream: jetstream::Context, events_stream: String, subject: String) -> Self {
        Self {
            jetstream,
            events_stream,
            subject,
        }
    }

    /// Follow `session.revoked` until `shutdown`, forgetting the sessions it names; restart
    /// after any failure, and at once when the NATS connection is replaced (the ordered
    /// consumer lives on the server and may be gone with it). The first consumer is created
    /// before this returns.
    pub async fn start(
        self,
        sessions: std::sync::Arc<SessionCache>,
        shutdown: CancellationToken,
    ) -> Result<tokio::task::JoinHandle<()>, String> {
        let first = self.subscribe().await?;
        Ok(tokio::spawn(async move {
            let mut subscription = Some(first);
            while !shutdown.is_cancelled() {
                let outcome = match subscription.take() {
                    Some(first) => self.follow(first, &sessions, &shutdown).await,
                    None => match self.subscribe().await {
                        Ok(next) => {
                            // Revocations published while nobody listened are unknown.
                            sessions.forget_all();
                            self.follow(next, &sessions, &shutdown).await
                        }
                        Err(error) => Err(error),
                    },
                };
                if let Err(error) = outcome {
                    tracing::warn!(%error, "session.revoked listener failed; restarting");
                    tokio::select! {
                        () = tokio::time::sleep(Duration::from_millis(500)) => {}
                        () = shutdown.cancelled() => break,
                    }
                }
            }
        }))
    }

    async fn subscribe(&self) -> Result<Subscription, String> {
        let connection = ConnectionWatch::new(self.jetstream.client());
        let stream = self
            .jetstream
            .get_stream(&self.events_stream)
            .await
            .map_err(|error| error.to_string())?;
        let start_time = time::OffsetDateTime::now_utc() - REPLAY;
        let messages = stream
            .create_consumer(consumer::pull::OrderedConfig {
                // named, so it is created through the subject that carries its filter
                // (what the NATS permissions allow: bus::permissions)
                name: Some(bus::permissions::ordered_consumer_name(
                    "api-session-revoked",
                )),
                filter_subject: self.subject.clone(),
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            })
            .await
            .map_err(|error| error.to_string())?
            .messages()
            .await
            .map_err(|error| error.to_string())?;
        Ok(Subscription {
            connection,
            messages,
        })
    }

    async fn follow(
        &self,
        subscription: Subscription,
        sessions: &SessionCache,
        shutdown: &CancellationToken,
    ) -> Result<(), String> {
        let Subscription {
            connection,
            mut messages,
        } = subscription;
        loop {
            let message = tokio::select! {
                message = messages.next() => message,
                () = shutdown.cancelled() => return Ok(()),
                () = connection.lost() => {
                    tokio::select! {
                        () = connection.back() => {}
                        () = shutdown.cancelled() => return Ok(()),
                    }
                    return Err("the NATS connection was lost".to_owned());
                }
            };
            let message = message
                .ok_or("the consumer ended")?
                .map_err(|error| error.to_string())?;
            let Ok(event) = SessionRevoked::decode(message.payload.as_ref()) else {
                tracing::warn!("skipping an undecodable {}", SessionRevoked::NAME);
                continue;
            };
            let Ok(session_id) = SessionId::parse_field("session_id", &event.session_id) else {
                continue;
            };
            sessions.heard(session_id);
        }
    }
}

struct Subscription {
    connection: ConnectionWatch,
    messages: consumer::pull::Ordered,
}

/// Tells the listener that the NATS connection its consumer was created on is gone (the
/// sync-streamer's `hub::ConnectionWatch`, for the same reason: async-nats notices a lost
/// ordered consumer only ~15 s after the server is back).
struct ConnectionWatch {
    client: async_nats::Client,
    /// (server id, client id) when the watch started: a reconnection changes the client id,
    /// a restarted server the server id.
    identity: (String, u64),
}

impl ConnectionWatch {
    const POLL: Duration = Duration::from_millis(100);

    fn new(client: async_nats::Client) -> Self {
        let identity = Self::identity(&client);
        Self { client, identity }
    }

    fn identity(client: &async_nats::Client) -> (String, u64) {
        let info = client.server_info();
        (info.server_id, info.client_id)
    }

    fn connected(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
    }

    async fn lost(&self) {
        loop {
            if !self.connected() || Self::identity(&self.client) != self.identity {
                return;
            }
            tokio::time::sleep(Self::POLL).await;
        }
    }

    async fn back(&self) {
        while !self.connected() {
            tokio::time::sleep(Self::POLL).await;
        }
    }
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
