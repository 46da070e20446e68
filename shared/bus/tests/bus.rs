//! The bus against real Postgres and NATS JetStream.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bus::BusRouter;
use bus::dead_letter::DeadLetterStore;
use bus::relay::{self, RelayConfig};
use common::{Fixture, Recorder, probe, record, sequences_by_key};
use messages::journal::v1::BusProbe;
use test_support::{PrivateNats, eventually, nats_url};
use tokio_util::sync::CancellationToken;

const WAIT: Duration = Duration::from_secs(20);

/// Wait for `expected` distinct messages (none lost), then the probes' sequences per
/// aggregate key in delivery order.
async fn sequences_per_key(recorder: &Recorder, expected: usize) -> BTreeMap<String, Vec<i64>> {
    assert!(
        eventually(WAIT, || async { recorder.count() >= expected }).await,
        "only {} handled",
        recorder.count()
    );
    let deliveries = recorder.deliveries.lock().unwrap().clone();
    let distinct: HashSet<String> = deliveries
        .iter()
        .map(|(_, meta, _)| meta.message_id.clone())
        .collect();
    assert_eq!(distinct.len(), expected, "none lost");
    sequences_by_key(deliveries.iter().map(|(_, _, probe)| probe))
}

#[tokio::test]
async fn failing_handler_retries_to_its_limit_with_growing_delays_then_dead_letters_and_redrives() {
    let fixture = Fixture::new(&nats_url()).await;
    let (shutdown, recorder, router) = fixture.record_probes(Recorder::failing(), None);
    fixture
        .bus
        .publish(&probe(1, ""), "retry-me")
        .await
        .unwrap();

    // retry_limit 3 → 4 attempts, then the dead letter.
    let store = DeadLetterStore::new(fixture.pool.clone());
    assert!(
        eventually(WAIT, || async {
            !store.list(false).await.unwrap().is_empty()
        })
        .await,
        "never dead-lettered"
    );
    fixture.wait_settled().await;
    let times: Vec<_> = recorder
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .map(|(at, meta, _)| (*at, meta.attempt))
        .collect();
    assert_eq!(times.len(), 4, "exactly retry_limit + 1 attempts, no more");
    assert_eq!(
        times
            .iter()
            .map(|(_, attempt)| *attempt)
            .collect::<Vec<_>>(),
        vec![1, 2, 3, 4]
    );
    let gaps: Vec<Duration> = times.windows(2).map(|pair| pair[1].0 - pair[0].0).collect();
    // 200 ms base doubling with ±20 % jitter: ~200, ~400, ~800 ms.
    assert!(
        gaps[0] >= Duration::from_millis(150),
        "first retry too early: {gaps:?}"
    );
    assert!(
        gaps[1] > gaps[0] && gaps[2] > gaps[1],
        "delays must grow: {gaps:?}"
    );

    let letters = store.list(false).await.unwrap();
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].attempts, 4);
    assert_eq!(letters[0].message_id, "retry-me");
    assert_eq!(letters[0].handler, "bus_probe--probe");
    assert!(
        letters[0].last_error.contains("told to fail"),
        "{}",
        letters[0].last_error
    );

    // Fix the cause, re-drive: the handler runs once more and succeeds.
    recorder.failing.store(false, Ordering::SeqCst);
    assert_eq!(store.request_redrive(None).await.unwrap(), 1);
    assert!(
        eventually(WAIT, || async {
            store.list(false).await.unwrap().is_empty()
        })
        .await,
        "re-drive did not succeed"
    );
    assert_eq!(recorder.count(), 5);
    let all = store.list(true).await.unwrap();
    assert!(all[0].redriven_at.is_some());

    fixture.stop(shutdown, router).await;
}

#[tokio::test]
async fn permanent_failure_dead_letters_on_the_first_attempt_and_failed_redrive_keeps_it() {
    let fixture = Fixture::new(&nats_url()).await;
    let (shutdown, recorder, router) = fixture.record_probes(Recorder::permanently_failing(), None);
    fixture.bus.publish(&probe(1, ""), "doomed").await.unwrap();
    let store = DeadLetterStore::new(fixture.pool.clone());
    assert!(
        eventually(WAIT, || async {
            !store.list(false).await.unwrap().is_empty()
        })
        .await
    );
    assert_eq!(recorder.count(), 1, "a permanent error is not retried");

    // Re-drive while still broken: the letter stays, with one more attempt counted.
    store.request_redrive(None).await.unwrap();
    assert!(
        eventually(WAIT, || async {
            let letters = store.list(false).await.unwrap();
            letters.len() == 1
                && letters[0].attempts == 2
                && letters[0].redrive_requested_at.is_none()
        })
        .await
    );
    fixture.stop(shutdown, router).await;
}

#[tokio::test]
async fn duplicate_publishes_with_one_outbox_id_are_delivered_once() {
    let fixture = Fixture::new(&nats_url()).await;
    let (shutdown, recorder, router) = fixture.record_probes(Recorder::default(), None);

    // One outbox row relayed, then "the relay's delete was lost in a crash" (it commits
    // with synchronous_commit off): the row is back and relayed again.
    fixture.emit([probe(1, "")]).await;
    sqlx::query("CREATE TABLE outbox_before_crash AS SELECT * FROM outbox")
        .execute(&fixture.pool)
        .await
        .unwrap();
    let config = RelayConfig::new("worker");
    assert_eq!(
        relay::drain(&fixture.bus, &fixture.pool, &config)
            .await
            .unwrap(),
        1
    );
    sqlx::query("INSERT INTO outbox SELECT * FROM outbox_before_crash")
        .execute(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(
        relay::drain(&fixture.bus, &fixture.pool, &config)
            .await
            .unwrap(),
        1
    );
    // And a direct publish twice with one id.
    fixture.bus.publish(&probe(2, ""), "same-id").await.unwrap();
    fixture.bus.publish(&probe(2, ""), "same-id").await.unwrap();

    assert!(eventually(WAIT, || async { recorder.count() >= 2 }).await);
    fixture.wait_settled().await;
    assert_eq!(recorder.count(), 2, "each message id is handled once");
    fixture.stop(shutdown, router).await;
}

#[tokio::test]
async fn rows_committed_while_nats_is_down_are_published_after_it_returns_in_order_per_key() {
    let mut nats = PrivateNats::start();
    let fixture = Fixture::new(&nats.url()).await;
    let (shutdown, recorder, router) = fixture.record_probes(Recorder::default(), Some(1));
    let relay = fixture.spawn_relay(&shutdown);

    nats.stop();
    let keys = ["a", "b", "c", "d", "e"];
    fixture
        .emit((0..10).flat_map(|sequence| keys.iter().map(move |key| probe(sequence, key))))
        .await;
    // Wait until the relay has tried and failed (it records the error on the rows), so the
    // count below is taken after a real publish attempt, not before the relay woke up.
    assert!(
        eventually(Duration::from_secs(60), || async {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM outbox WHERE last_error IS NOT NULL AND sent_at IS NULL",
            )
            .fetch_one(&fixture.pool)
            .await
            .unwrap()
                > 0
        })
        .await,
        "the relay never attempted a publish while NATS was down"
    );
    assert_eq!(
        fixture.unsent().await,
        50,
        "nothing can be sent while NATS is down"
    );

    nats.resume();
    assert!(
        eventually(Duration::from_secs(40), || async {
            fixture.unsent().await == 0
        })
        .await,
        "rows never flowed"
    );
    let per_key = sequences_per_key(&recorder, 50).await;
    for (key, sequences) in per_key {
        assert_eq!(
            sequences,
            (0..10).collect::<Vec<_>>(),
            "order kept for key {key}"
        );
    }
    shutdown.cancel();
    relay.await.unwrap();
    router.join().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_batch_whose_acks_never_come_fails_within_one_ack_timeout() {
    let mut nats = PrivateNats::start();
    let fixture = Fixture::new(&nats.url()).await;
    fixture
        .emit((0..30).map(|sequence| probe(sequence, "")))
        .await;
    nats.stop();

    // One batch of 30 rows, none acked: the drain gives up after one `ack_timeout` for the
    // batch, not one per row (30 s here), and records the failure on every row it claimed.
    let config = RelayConfig {
        ack_timeout: Duration::from_secs(1),
        ..RelayConfig::new("worker")
    };
    let started = std::time::Instant::now();
    let drained = tokio::time::timeout(
        Duration::from_secs(10),
        relay::drain(&fixture.bus, &fixture.pool, &config),
    )
    .await
    .expect("the drain waited for each ack in turn");
    assert!(drained.is_err(), "nothing can be published: {drained:?}");
    assert!(started.elapsed() < Duration::from_secs(10));
    let failed: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox
          WHERE sent_at IS NULL AND last_error IS NOT NULL AND publish_attempts = 1",
    )
    .fetch_one(&fixture.pool)
    .await
    .unwrap();
    assert_eq!(failed, 30, "every claimed row records the failure");

    nats.resume();
    let drained_after_return = async {
        while fixture.unsent().await > 0 {
            // The client reconnects by itself; until then a drain fails like the one above.
            if relay::drain(&fixture.bus, &fixture.pool, &config)
                .await
                .is_err()
            {
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), drained_after_return)
        .await
        .expect("the rows were never published after NATS returned");
    assert_eq!(fixture.unsent().await, 0);
    fixture.cleanup().await;
}

#[tokio::test]
async fn two_replicas_share_work_and_each_message_is_handled_once() {
    let fixture = Fixture::new(&nats_url()).await;
    let shutdown = CancellationToken::new();
    let first = Arc::new(Recorder::default());
    let second = Arc::new(Recorder::default());
    let replica_one = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), first.clone())
        .concurrency(4)
        .task::<BusProbe, _, _>(record)
        .spawn(shutdown.clone());
    let replica_two = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), second.clone())
        .concurrency(4)
        .task::<BusProbe, _, _>(record)
        .spawn(shutdown.clone());
    // Three relays at once on one outbox: rows are claimed, never published twice.
    let relays: Vec<_> = (0..3).map(|_| fixture.spawn_relay(&shutdown)).collect();
    fixture
        .emit((0..200).map(|sequence| probe(sequence, "")))
        .await;

    assert!(eventually(WAIT, || async { first.count() + second.count() >= 200 }).await);
    fixture.wait_settled().await;
    let ids: Vec<String> = first
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .chain(second.deliveries.lock().unwrap().iter())
        .map(|(_, meta, _)| meta.message_id.clone())
        .collect();
    assert_eq!(ids.len(), 200, "handled exactly once each");
    assert_eq!(ids.iter().collect::<HashSet<_>>().len(), 200);
    assert!(
        first.count() > 0 && second.count() > 0,
        "both replicas got work: {} / {}",
        first.count(),
        second.count()
    );
    let redelivered = ids.len() - ids.iter().collect::<HashSet<_>>().len();
    assert_eq!(redelivered, 0);

    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    replica_one.join().await;
    replica_two.join().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn rows_an_older_relay_marked_sent_are_pruned_after_retention() {
    let fixture = Fixture::new(&nats_url()).await;
    fixture
        .emit((0..4).map(|sequence| probe(sequence, "")))
        .await;
    // A relay of the release before the lean outbox marked rows sent instead of deleting
    // them: one long ago, two recently; the fourth row is unsent.
    sqlx::query(
        "UPDATE outbox SET sent_at = CASE WHEN position = (SELECT min(position) FROM outbox)
                                         THEN now() - interval '2 days' ELSE now() END
          WHERE position < (SELECT max(position) FROM outbox)",
    )
    .execute(&fixture.pool)
    .await
    .unwrap();
    let pruned = relay::prune(&fixture.pool, Duration::from_secs(24 * 3600))
        .await
        .unwrap();
    assert_eq!(pruned, 1);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(left, 3, "recently marked rows and unsent rows stay");
    assert_eq!(fixture.unsent().await, 1);
    fixture.cleanup().await;
}

#[tokio::test]
async fn one_keys_backlog_leaves_in_full_batches_and_in_order() {
    let fixture = Fixture::new(&nats_url()).await;
    let (shutdown, recorder, router) = fixture.record_probes(Recorder::default(), Some(1));
    // One busy aggregate (one team writing fast) and a quiet one.
    fixture
        .emit((0..250).map(|sequence| probe(sequence, "busy")))
        .await;
    fixture.emit([probe(0, "quiet")]).await;

    let mut config = RelayConfig::new("worker");
    config.batch_size = 100;
    // One pass of `drain` runs batches until one comes back short: the key's followers ride
    // along with its first row, so the whole backlog goes in three batches.
    let published = relay::drain(&fixture.bus, &fixture.pool, &config)
        .await
        .unwrap();
    assert_eq!(published, 251);
    assert_eq!(fixture.unsent().await, 0);

    let per_key = sequences_per_key(&recorder, 251).await;
    assert_eq!(
        per_key["busy"],
        (0..250).collect::<Vec<_>>(),
        "the key's order is kept"
    );
    fixture.stop(shutdown, router).await;
}

/// Services starting at once on a new namespace race to create its streams (every service
/// provisions them at start); the creates that lose the race look again, and every service
/// starts.
#[tokio::test]
async fn services_starting_at_once_on_a_new_namespace_all_start() {
    let namespace = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let starts = (0..8).map(|_| {
        let namespace = namespace.clone();
        async move {
            let client = async_nats::connect(nats_url()).await.unwrap();
            bus::Bus::start(async_nats::jetstream::new(client), &namespace, "bustest").await
        }
    });
    let started = futures::future::join_all(starts).await;
    let errors: Vec<String> = started
        .iter()
        .filter_map(|result| result.as_ref().err().map(ToString::to_string))
        .collect();
    assert!(errors.is_empty(), "services failed to start: {errors:?}");
    if let Some(Ok(bus)) = started.first() {
        bus.delete_streams().await.unwrap();
    }
}
