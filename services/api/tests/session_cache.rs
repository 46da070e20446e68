//! The cache of verified sessions (issue 22) against real Postgres and NATS: two api
//! replicas on one database and one bus namespace. The TTL is set far above the tests'
//! duration, so only the cache's own rules (the `session.revoked` event, the clock) can
//! explain a refusal.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use chrono::{DateTime, Utc};
use common::{TestApi, TestUser};
use serde_json::{Value, json};
use uuid::Uuid;

/// Far longer than any test here runs.
const LONG_TTL: Duration = Duration::from_secs(600);

/// Longest a `session.revoked` event may take to travel (outbox → relay → NATS → listener).
const EVENT_BOUND: Duration = Duration::from_secs(15);

async fn start_cached() -> TestApi {
    TestApi::start_with(|config| config.session_cache.ttl = LONG_TTL).await
}

async fn me(api: &TestApi, user: &TestUser) -> u16 {
    api.query(Some(user), "users/me", Value::Null).await.status
}

async fn session_id_of(api: &TestApi, user: &TestUser) -> Uuid {
    let session = api
        .query(Some(user), "auth/session", Value::Null)
        .await
        .ok();
    session["session"]["sessionId"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap()
}

/// Wait (on the replica's own signal, not a sleep) until `api` has heard `count` revocation
/// events in all.
async fn heard(api: &TestApi, count: u64) {
    let mut heard = api.state.sessions.heard_revocations();
    let waited = tokio::time::timeout(EVENT_BOUND, heard.wait_for(|heard| *heard >= count))
        .await
        .is_ok_and(|heard| heard.is_ok());
    assert!(
        waited,
        "the replica heard {} session.revoked event(s), not {count}",
        *heard.borrow()
    );
}

async fn expiry_in_db(api: &TestApi, session_id: Uuid) -> (DateTime<Utc>, DateTime<Utc>) {
    sqlx::query_as("SELECT expires_at, last_seen_at FROM sessions WHERE session_id = $1")
        .bind(session_id)
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

/// `api_session_lookups_total{source="cache"}` of this test process.
async fn cache_hits(api: &TestApi) -> f64 {
    test_support::metrics_text(&api.base_url)
        .await
        .lines()
        .find(|line| line.starts_with("api_session_lookups_total{") && line.contains("\"cache\""))
        .and_then(|line| line.rsplit(' ').next())
        .map_or(0.0, |value| value.parse().unwrap())
}

/// Sign-out on replica A refuses the token on replica B as soon as B hears the event, although
/// B cached the session with a 600 s TTL; so do revoking one session and revoking all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_revocation_on_one_replica_is_refused_on_another_as_soon_as_the_event_arrives() {
    let a = start_cached().await;
    let b = a
        .replica(|config| config.session_cache.ttl = LONG_TTL)
        .await;
    let user = a.login("two-replicas@example.com").await;
    let session_id = session_id_of(&a, &user).await;
    // B caches the session.
    assert_eq!(me(&b, &user).await, 200);
    let hits = cache_hits(&b).await;
    assert_eq!(me(&b, &user).await, 200);
    assert!(
        cache_hits(&b).await > hits,
        "B served the session from its cache"
    );

    a.call(Some(&user), "auth/logout", json!({})).await.ok();
    assert_eq!(
        me(&a, &user).await,
        401,
        "refused at once where it was revoked"
    );
    heard(&b, 1).await;
    assert!(
        b.state
            .sessions
            .is_forgotten(domain::ids::SessionId::from_uuid(session_id))
    );
    assert_eq!(
        me(&b, &user).await,
        401,
        "refused on B once the event arrived"
    );

    // Revoke one of another session, and revoke all: the same.
    let phone = a.login("two-replicas@example.com").await;
    let laptop = a.login("two-replicas@example.com").await;
    let tablet = a.login("two-replicas@example.com").await;
    for token in [&phone, &laptop, &tablet] {
        assert_eq!(me(&b, token).await, 200);
    }
    let phone_session = session_id_of(&a, &phone).await;
    a.call(
        Some(&laptop),
        "auth/revokeSession",
        json!({ "sessionId": phone_session }),
    )
    .await
    .ok();
    heard(&b, 2).await;
    assert_eq!(me(&b, &phone).await, 401);
    assert_eq!(me(&b, &laptop).await, 200);
    a.call(Some(&laptop), "auth/revokeAllSessions", json!({}))
        .await
        .ok();
    heard(&b, 4).await;
    assert_eq!(me(&b, &laptop).await, 401);
    assert_eq!(me(&b, &tablet).await, 401);

    // Deleting the account (a Sensitive procedure) revokes its sessions on every replica too.
    let leaving = a.login("leaving@example.com").await;
    assert_eq!(me(&a, &leaving).await, 200);
    assert_eq!(me(&b, &leaving).await, 200);
    b.call(Some(&leaving), "users/delete", json!({})).await.ok();
    assert_eq!(me(&b, &leaving).await, 401);
    heard(&a, 5).await;
    assert_eq!(me(&a, &leaving).await, 401);

    b.stop().await;
    a.stop().await;
}

/// A session revoked in SQL, behind the api's back, keeps working from the cache until its
/// TTL: the cache is really used, and only revocations through the api are instant. With the
/// cache off (TTL 0) the same row is refused at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_serves_a_session_without_postgres_until_the_ttl() {
    let api = start_cached().await;
    let user = api.login("cached@example.com").await;
    assert_eq!(me(&api, &user).await, 200);
    sqlx::query(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = 'by hand' WHERE user_id = $1",
    )
    .bind(user.user_id)
    .execute(&api.pool)
    .await
    .unwrap();
    assert_eq!(
        me(&api, &user).await,
        200,
        "served from the cache: no event, no lookup"
    );
    let uncached = api
        .replica(|config| config.session_cache.ttl = Duration::ZERO)
        .await;
    assert!(!uncached.state.sessions.enabled());
    assert_eq!(
        me(&uncached, &user).await,
        401,
        "without the cache Postgres refuses it at once"
    );
    uncached.stop().await;
    api.forget_cached_sessions();
    assert_eq!(me(&api, &user).await, 401);
    api.stop().await;
}

/// A session read from the cache still slides (once, written to Postgres), and one whose
/// expiry passes while it is cached is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cached_session_still_slides_and_still_expires() {
    let api = start_cached().await;

    // Due to slide in three seconds: the first use (from Postgres) does not slide it.
    let user = api.login("slides@example.com").await;
    let session_id = session_id_of_in_db(&api, &user).await;
    let due: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE sessions SET expires_at = now() + interval '518403 seconds'
          WHERE session_id = $1 RETURNING expires_at",
    )
    .bind(session_id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    assert_eq!(me(&api, &user).await, 200);
    let (unchanged, _) = expiry_in_db(&api, session_id).await;
    assert_eq!(unchanged, due, "not due yet: no write");
    wait_until(due - chrono::Duration::days(6)).await;
    let hits = cache_hits(&api).await;
    assert_eq!(me(&api, &user).await, 200);
    assert!(cache_hits(&api).await > hits, "served from the cache");
    let (slid, last_seen) = expiry_in_db(&api, session_id).await;
    let week = Utc::now() + chrono::Duration::days(7);
    assert!((slid - week).num_seconds().abs() < 60, "slid to {slid}");
    assert!((Utc::now() - last_seen).num_seconds() < 60);
    // Slid once: the next uses write nothing.
    assert_eq!(me(&api, &user).await, 200);
    assert_eq!(expiry_in_db(&api, session_id).await.0, slid);

    // At the end of its absolute lifetime (30 days) in three seconds, so it cannot slide:
    // cached, then refused once the clock passes its expiry, with no event and no change in
    // Postgres.
    let ending = api.login("expires@example.com").await;
    let session_id = session_id_of_in_db(&api, &ending).await;
    let end: DateTime<Utc> = sqlx::query_scalar(
        "UPDATE sessions SET created_at = now() - interval '2591997 seconds',
                             expires_at = now() - interval '2591997 seconds'
                                          + interval '2592000 seconds'
          WHERE session_id = $1 RETURNING expires_at",
    )
    .bind(session_id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    let hits = cache_hits(&api).await;
    assert_eq!(me(&api, &ending).await, 200);
    assert_eq!(me(&api, &ending).await, 200);
    assert!(cache_hits(&api).await > hits, "served from the cache");
    wait_until(end + chrono::Duration::milliseconds(100)).await;
    assert_eq!(me(&api, &ending).await, 401, "expired while cached");
    api.stop().await;
}

async fn session_id_of_in_db(api: &TestApi, user: &TestUser) -> Uuid {
    sqlx::query_scalar("SELECT session_id FROM sessions WHERE user_id = $1")
        .bind(user.user_id)
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

/// Wait for the clock to pass `instant` (what is awaited is time itself).
async fn wait_until(instant: DateTime<Utc>) {
    let left = (instant - Utc::now()).to_std().unwrap_or_default();
    tokio::time::sleep(left + Duration::from_millis(50)).await;
}
