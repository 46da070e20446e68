//! The outbox trigger wakes the relay with NOTIFY — except while a relay has marked itself
//! busy (it drains continuously then, and skipping NOTIFY keeps producers' commits from
//! being serialized). An expired busy mark no longer suppresses wake-ups. Back-to-back writes
//! turn the relay busy by themselves.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

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

/// Rows written one transaction each, back to back, as an api under load writes them: the
/// relay goes busy and polls, so producers stop sending NOTIFY (each of which would wake every
/// listening backend of the database), and every row is still published. When the writes
/// stop, the relay leaves busy mode and NOTIFY wakes it again.
#[tokio::test]
async fn back_to_back_writes_turn_the_relay_to_polling_and_stop_the_notifies() {
    const MARKER: &str = "test-marker";
    const WRITES: i64 = 300;
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let relay = bus::relay::spawn(
        fixture.bus.clone(),
        fixture.pool.clone(),
        bus::relay::RelayConfig::new("worker"),
        shutdown.clone(),
    );
    let mut listener = PgListener::connect_with(&fixture.pool).await.unwrap();
    listener.listen("worker_outbox").await.unwrap();

    for sequence in 0..WRITES {
        fixture.emit([common::probe(sequence, "")]).await;
    }
    sqlx::query("SELECT pg_notify('worker_outbox', $1)")
        .bind(MARKER)
        .execute(&fixture.pool)
        .await
        .unwrap();
    let mut notified = 0;
    loop {
        let notification = tokio::time::timeout(Duration::from_secs(30), listener.recv())
            .await
            .expect("the marker notification never arrived")
            .unwrap();
        if notification.payload() == MARKER {
            break;
        }
        notified += 1;
    }
    // Before it goes busy the relay is woken a few times; a relay that never went busy is
    // woken by every write.
    assert!(
        notified < WRITES / 3,
        "{notified} of {WRITES} writes sent a NOTIFY: the relay did not switch to polling"
    );

    let deadline = Instant::now() + Duration::from_secs(20);
    while fixture.unsent().await > 0 {
        assert!(Instant::now() < deadline, "rows were left unsent");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // With no more writes, the relay leaves busy mode and NOTIFY wakes it again.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let busy: i64 =
            sqlx::query_scalar("SELECT count(*) FROM outbox_relay_state WHERE busy_until > now()")
                .fetch_one(&fixture.pool)
                .await
                .unwrap();
        if busy == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "the relay stayed busy after the writes stopped"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(
        notified_after_emit(&fixture, &mut listener).await,
        "an idle relay is woken by NOTIFY again"
    );
    shutdown.cancel();
    relay.await.unwrap();
    fixture.cleanup().await;
}
