//! The outbox trigger wakes the relay with NOTIFY — except while a relay has marked itself
//! busy (it drains continuously then, and skipping NOTIFY keeps producers' commits from
//! being serialized). An expired busy mark no longer suppresses wake-ups.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use sqlx::postgres::PgListener;

/// Whether emitting one row sends a NOTIFY. A marker notified after the emit's commit ends
/// the look: notifications arrive in commit order, so any NOTIFY of the emit comes first, and
/// no fixed wait decides "none came".
async fn notified_after_emit(fixture: &common::Fixture, listener: &mut PgListener) -> bool {
    const MARKER: &str = "test-marker";
    fixture.emit([common::probe(1, "")]).await;
    sqlx::query("SELECT pg_notify('worker_outbox', $1)")
        .bind(MARKER)
        .execute(&fixture.pool)
        .await
        .unwrap();
    let mut notified = false;
    loop {
        let notification = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("the marker notification never arrived")
            .unwrap();
        if notification.payload() == MARKER {
            return notified;
        }
        notified = true;
    }
}

#[tokio::test]
async fn trigger_notifies_only_while_no_relay_is_busy() {
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let mut listener = PgListener::connect_with(&fixture.pool).await.unwrap();
    listener.listen("worker_outbox").await.unwrap();

    assert!(
        notified_after_emit(&fixture, &mut listener).await,
        "an idle relay is woken"
    );

    sqlx::query("INSERT INTO outbox_relay_state (relay_id, busy_until) VALUES (gen_random_uuid(), now() + interval '1 hour')")
        .execute(&fixture.pool)
        .await
        .unwrap();
    assert!(
        !notified_after_emit(&fixture, &mut listener).await,
        "no NOTIFY while a relay is busy"
    );

    sqlx::query("UPDATE outbox_relay_state SET busy_until = now() - interval '1 second'")
        .execute(&fixture.pool)
        .await
        .unwrap();
    assert!(
        notified_after_emit(&fixture, &mut listener).await,
        "an expired busy mark does not suppress wake-ups"
    );
    fixture.cleanup().await;
}
