//! The handlers' batches: the oracle, poison events, redeliveries, commits per burst.

use std::time::Duration;

use test_support::{TestDb, eventually};
use uuid::Uuid;

use crate::events::{Event, Rng, burst, oracle};
use crate::harness::Harness;

/// (a) One user's burst — creates, updates, deletes and restores interleaved over the four
/// consumers, replays under new ids, and half of it redelivered (same ids) mixed into the
/// batches of the other half — ends exactly as the events say.
#[tokio::test]
async fn a_burst_of_interleaved_events_with_replays_and_redeliveries_matches_the_oracle() {
    let mut harness = Harness::new().await;
    let mut rng = Rng(0x5eed_0022);
    let ada = Uuid::new_v4();
    let bob = Uuid::new_v4();
    let mut events = burst(&mut rng, ada, 120, 5);
    events.extend(burst(&mut rng, bob, 10, 2));
    // Replays of earlier events under new message ids (e.g. re-published by hand).
    let replays: Vec<Event> = (0..40)
        .map(|_| events[rng.below(events.len() as u64) as usize].clone())
        .collect();
    let (first_half, second_half) = events.split_at(events.len() / 2);

    harness.publish_all(first_half).await;
    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;
    harness.assert_insights(ada, &oracle(first_half, ada)).await;

    // The first half comes again with its own ids, before and among the rest.
    harness.forget_consumers().await;
    harness.publish_all(second_half).await;
    harness.publish_all(&replays).await;
    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;

    harness.assert_insights(ada, &oracle(&events, ada)).await;
    harness.assert_insights(bob, &oracle(&events, bob)).await;
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM dead_letters")
        .fetch_one(&harness.pool)
        .await
        .unwrap();
    assert_eq!(dead, 0);
    harness.cleanup().await;
}

/// (b) An event that makes no sense in the middle of a batch is dead-lettered alone, at its
/// first attempt; every other event of the batch applies.
#[tokio::test]
async fn a_poison_event_in_a_batch_is_dead_lettered_alone_and_the_rest_apply() {
    let mut harness = Harness::new().await;
    let mut rng = Rng(0xbad_0022);
    let ada = Uuid::new_v4();
    let events = burst(&mut rng, ada, 40, 0);
    let (before, after) = events.split_at(20);
    harness.publish_all(before).await;
    let poison = Event {
        hour: 25,
        entry: Uuid::new_v4(),
        ..events[0].clone()
    };
    harness.publish(&poison, "m-poison").await;
    harness.publish_all(after).await;

    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;

    let dead: Vec<(String, i32, String)> =
        sqlx::query_as("SELECT message_id, attempts, last_error FROM dead_letters")
            .fetch_all(&harness.pool)
            .await
            .unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].0, "m-poison");
    assert_eq!(dead[0].1, 1, "dead-lettered at once, not retried");
    assert!(dead[0].2.contains("created_local_hour 25"), "{}", dead[0].2);
    harness.assert_insights(ada, &oracle(&events, ada)).await;
    let poisoned: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM journal_entry_activity WHERE journal_entry_id = $1",
    )
    .bind(poison.entry)
    .fetch_one(&harness.pool)
    .await
    .unwrap();
    assert_eq!(poisoned, 0);
    harness.cleanup().await;
}

/// (c) Every applied batch delivered again (same message ids) changes nothing: no row, no
/// version, no changeset.
#[tokio::test]
async fn redelivering_applied_batches_changes_nothing() {
    let mut harness = Harness::new().await;
    let mut rng = Rng(0xc0ffee);
    let ada = Uuid::new_v4();
    let events = burst(&mut rng, ada, 60, 4);
    harness.publish_all(&events).await;
    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;
    let before = harness.snapshot().await;
    assert!(before.3 > 0, "changesets were written");

    harness.forget_consumers().await;
    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;
    assert_eq!(harness.snapshot().await, before);
    harness.assert_insights(ada, &oracle(&events, ada)).await;
    harness.cleanup().await;
}

/// (d) A burst of 500 creates of one user is a handful of transactions: one changeset per
/// batch (the old one-transaction-per-event handlers wrote 500).
#[tokio::test]
async fn a_burst_of_one_user_is_a_handful_of_commits() {
    const EVENTS: usize = 500;
    let mut harness = Harness::new().await;
    let mut rng = Rng(0xd00d);
    let ada = Uuid::new_v4();
    let events = burst(&mut rng, ada, EVENTS, 0);
    harness.publish_all(&events).await;

    let commits = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
        )
        .fetch_one(&harness.pool)
        .await
        .unwrap()
    };
    let commits_before = commits().await;
    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;

    let changesets = harness.changesets(ada).await.len();
    eprintln!(
        "{EVENTS} events: {changesets} changesets, about {} commits in the database \
         (all of the worker's, start-up included; the statistics lag)",
        commits().await - commits_before
    );
    assert!(
        changesets <= EVENTS / 25,
        "{changesets} changesets (transactions that changed the user's insights) for {EVENTS} events"
    );
    harness.assert_insights(ada, &oracle(&events, ada)).await;
    harness.cleanup().await;
}

/// Measurement, not a test (run by hand, `--ignored --nocapture`): commits and WAL bytes per
/// event for a burst of one user's creates, on a private Postgres so nothing else writes WAL.
/// The worker's own start and stop (migrations check, consumers, relay) are measured with no
/// events and subtracted.
#[tokio::test]
#[ignore = "a measurement for docs/worker.md"]
async fn measure_commits_and_wal_per_event() {
    const EVENTS: usize = 2000;
    let server = test_support::PrivatePostgres::start();
    let db = TestDb::on_server(&server.admin_url()).await;
    let database = db.name().to_owned();
    let mut harness = Harness::on(db).await;
    let admin = sqlx::PgPool::connect(&server.admin_url()).await.unwrap();
    // First run: migrations and consumers; then an idle run: the fixed cost of a run.
    measured_run(&harness, &admin, &database).await;
    let (idle_commits, idle_wal) = measured_run(&harness, &admin, &database).await;
    let mut rng = Rng(0x3ea5);
    let ada = Uuid::new_v4();
    let events = burst(&mut rng, ada, EVENTS, 0);
    harness.publish_all(&events).await;
    let (commits, wal) = measured_run(&harness, &admin, &database).await;
    let changesets = harness.changesets(ada).await.len();
    let (commits, wal) = (commits - idle_commits, wal - idle_wal);
    eprintln!(
        "{EVENTS} one-user creates: {commits} commits ({:.3}/event), {wal} WAL bytes ({:.0}/event), \
         {changesets} changesets (idle run: {idle_commits} commits, {idle_wal} WAL bytes)",
        commits as f64 / EVENTS as f64,
        wal as f64 / EVENTS as f64,
    );
    harness.assert_insights(ada, &oracle(&events, ada)).await;
}

/// One worker run until it handled everything: the (commits, WAL bytes) it cost, read once
/// its connections are gone (a backend flushes its statistics when it exits).
async fn measured_run(harness: &Harness, admin: &sqlx::PgPool, database: &str) -> (i64, i64) {
    let read = || async {
        sqlx::query("SELECT pg_stat_clear_snapshot()")
            .execute(admin)
            .await
            .unwrap();
        sqlx::query_as::<_, (i64, i64)>(
            "SELECT (SELECT sum(xact_commit)::bigint FROM pg_stat_database),
                    (pg_current_wal_lsn() - '0/0')::bigint",
        )
        .fetch_one(admin)
        .await
        .unwrap()
    };
    let (commits_before, wal_before) = read().await;
    let worker = harness.start_worker().await;
    harness.caught_up().await;
    harness.stop_worker(worker).await;
    let gone = eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .fetch_one(admin)
            .await
            .unwrap()
            <= 2 // the harness's own pool
    })
    .await;
    assert!(gone, "the worker's connections did not close");
    let (commits_after, wal_after) = read().await;
    (commits_after - commits_before, wal_after - wal_before)
}
