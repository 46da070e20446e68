//! The relay is woken in process by the outbox writes of its own process, not by NOTIFY (which
//! costs every listening backend of the database a commit): an outbox write sends no NOTIFY,
//! a write wakes the relay long before its slow poll (also one whose transaction commits
//! late), and a row no wake-up announced is still published by the slow poll.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use bus::relay::{self, RelayConfig};
use messages::definition::BusMessage;
use messages::journal::v1::BusProbe;
use sqlx::postgres::PgListener;
use tokio_util::sync::CancellationToken;

/// How long a test waits for a row to be published; far below the slow poll it sets.
const PROMPT: Duration = Duration::from_secs(5);

/// A relay on the fixture whose slow poll runs every `poll_interval`.
fn spawn_relay(
    fixture: &common::Fixture,
    poll_interval: Duration,
    shutdown: &CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let mut config = RelayConfig::new("worker");
    config.poll_interval = poll_interval;
    relay::spawn(
        fixture.bus.clone(),
        fixture.pool.clone(),
        config,
        shutdown.clone(),
    )
}

async fn published_within(fixture: &common::Fixture, limit: Duration) -> Option<Duration> {
    let start = Instant::now();
    while start.elapsed() < limit {
        if fixture.unsent().await == 0 {
            return Some(start.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    None
}

#[tokio::test]
async fn an_outbox_write_sends_no_notify() {
    const MARKER: &str = "test-marker";
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let mut listener = PgListener::connect_with(&fixture.pool).await.unwrap();
    listener.listen("worker_outbox").await.unwrap();
    fixture.emit([common::probe(1, "")]).await;
    // Notifications arrive in commit order: a NOTIFY of the emit would come before the marker,
    // so no fixed wait decides "none came".
    sqlx::query("SELECT pg_notify('worker_outbox', $1)")
        .bind(MARKER)
        .execute(&fixture.pool)
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), listener.recv())
        .await
        .expect("the marker notification never arrived")
        .unwrap();
    assert_eq!(first.payload(), MARKER, "the outbox insert sent a NOTIFY");
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_write_wakes_the_relay_long_before_its_slow_poll_even_when_it_commits_late() {
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    // Only a wake-up can publish within the test's limits.
    let relay = spawn_relay(&fixture, Duration::from_secs(3600), &shutdown);
    // Let the relay's start-up drain pass, so it is asleep when the writes come.
    tokio::time::sleep(Duration::from_millis(300)).await;

    fixture.emit([common::probe(1, "")]).await;
    let took = published_within(&fixture, PROMPT).await;
    assert!(took.is_some(), "a committed write was not published");

    // The wake-up comes with the write, before the commit: the relay finds nothing, looks
    // again, and publishes the row once it commits.
    let mut tx = fixture.pool.begin().await.unwrap();
    bus::outbox::emit(&mut tx, &common::probe(2, ""))
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(150)).await;
    tx.commit().await.unwrap();
    let took = published_within(&fixture, PROMPT).await;
    assert!(
        took.is_some(),
        "a write that committed late was not published"
    );

    shutdown.cancel();
    relay.await.unwrap();
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_row_no_wake_up_announced_is_published_by_the_slow_poll() {
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    let relay = spawn_relay(&fixture, Duration::from_millis(300), &shutdown);
    tokio::time::sleep(Duration::from_millis(100)).await;
    // Written by "another process": plain SQL, no wake-up in this one.
    sqlx::query(
        "INSERT INTO outbox (outbox_id, subject, payload) VALUES (gen_random_uuid(), $1, '')",
    )
    .bind(<BusProbe as BusMessage>::subject())
    .execute(&fixture.pool)
    .await
    .unwrap();
    assert!(
        published_within(&fixture, PROMPT).await.is_some(),
        "the slow poll did not publish a row written elsewhere"
    );
    shutdown.cancel();
    relay.await.unwrap();
    fixture.cleanup().await;
}
