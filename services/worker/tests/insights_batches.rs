//! The insights handlers apply a fetched batch of `journal_entry.*` events in one transaction.
//! Events are published straight to JetStream (as the api's relay would), mostly before the
//! worker starts, so its consumers find full batches. What must hold:
//! - after a burst of one user's creates, updates, deletes and restores (interleaved across
//!   the four consumers, with replays and redeliveries), the insights equal an oracle computed
//!   here from the events themselves;
//! - a poison event in a batch is dead-lettered alone and the rest apply;
//! - redelivering batches that were applied changes nothing;
//! - a burst of one user's events is a handful of commits, not one per event.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::{DateTime, Duration as Days, NaiveDate, Utc};
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryFacts, JournalEntryRestored,
    JournalEntryUpdated,
};
use messages::sync::v1::Changeset;
use prost::Message;
use test_support::{TestBucket, TestDb, eventually, nats_url};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const CONSUMERS: [&str; 4] = [
    "worker--journal_entry_created",
    "worker--journal_entry_updated",
    "worker--journal_entry_deleted",
    "worker--journal_entry_restored",
];

// ---------------------------------------------------------------------------------------------
// events and the oracle

#[derive(Debug, Clone, Copy, PartialEq)]
enum Kind {
    Created,
    Updated,
    Deleted,
    Restored,
}

/// One entry event as the api would emit it.
#[derive(Debug, Clone)]
struct Event {
    kind: Kind,
    entry: Uuid,
    user: Uuid,
    version: i64,
    words: i32,
    entry_date: Option<NaiveDate>,
    local_date: NaiveDate,
    hour: i32,
    created: DateTime<Utc>,
}

impl Event {
    fn facts(&self) -> Option<JournalEntryFacts> {
        Some(JournalEntryFacts {
            word_count: self.words,
            entry_date: self.entry_date.map(|day| day.to_string()),
            created_local_date: self.local_date.to_string(),
            created_local_hour: self.hour,
            created_at_ms: self.created.timestamp_millis(),
        })
    }
}

/// What the insights of `user` must be: (entry count, words, active days, first day, last
/// day, current streak, longest streak, hour histogram) and the live days.
/// (entry count, words, active days, first day, last day, current streak, longest streak,
/// hour histogram).
type Totals = (
    i32,
    i64,
    i32,
    Option<NaiveDate>,
    Option<NaiveDate>,
    i32,
    i32,
    Vec<i32>,
);

#[derive(Debug, PartialEq)]
struct Expected {
    totals: Totals,
    days: BTreeMap<NaiveDate, (i32, i64)>,
}

/// Each entry ends as its newest version says; live entries count on their day.
fn oracle(events: &[Event], user: Uuid) -> Expected {
    let mut latest: BTreeMap<Uuid, &Event> = BTreeMap::new();
    for event in events.iter().filter(|event| event.user == user) {
        let newer = latest
            .get(&event.entry)
            .is_none_or(|stored| stored.version < event.version);
        if newer {
            latest.insert(event.entry, event);
        }
    }
    let mut days: BTreeMap<NaiveDate, (i32, i64)> = BTreeMap::new();
    let mut histogram = vec![0; 24];
    for event in latest.values() {
        if event.kind == Kind::Deleted {
            continue;
        }
        let day = days
            .entry(event.entry_date.unwrap_or(event.local_date))
            .or_default();
        day.0 += 1;
        day.1 += i64::from(event.words);
        histogram[event.hour as usize] += 1;
    }
    let (mut longest, mut run, mut previous) = (0, 0, None::<NaiveDate>);
    for day in days.keys() {
        run = if previous.and_then(|p| p.succ_opt()) == Some(*day) {
            run + 1
        } else {
            1
        };
        longest = longest.max(run);
        previous = Some(*day);
    }
    Expected {
        totals: (
            days.values().map(|(count, _)| count).sum(),
            days.values().map(|(_, words)| words).sum(),
            days.len() as i32,
            days.keys().next().copied(),
            days.keys().next_back().copied(),
            run,
            longest,
            histogram,
        ),
        days,
    }
}

/// A small deterministic generator (xorshift), so a failure replays.
struct Rng(u64);

impl Rng {
    fn below(&mut self, bound: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % bound
    }
}

/// `entries` entries of `user`, each created then updated, deleted and restored a few times,
/// the entries' events interleaved (each entry's in version order, as the api emits them).
fn burst(rng: &mut Rng, user: Uuid, entries: usize, max_changes: u64) -> Vec<Event> {
    let first_day = NaiveDate::from_ymd_opt(2026, 3, 1).unwrap();
    let day = |rng: &mut Rng| first_day + Days::days(rng.below(20) as i64);
    let mut per_entry: Vec<Vec<Event>> = Vec::new();
    for _ in 0..entries {
        let created = Utc::now();
        let mut event = Event {
            kind: Kind::Created,
            entry: Uuid::new_v4(),
            user,
            version: 1,
            words: rng.below(50) as i32,
            entry_date: (rng.below(2) == 0).then(|| day(rng)),
            local_date: day(rng),
            hour: rng.below(24) as i32,
            created,
        };
        let mut events = vec![event.clone()];
        for _ in 0..rng.below(max_changes + 1) {
            event.version += 1;
            event.kind = match event.kind {
                Kind::Deleted => Kind::Restored,
                _ if rng.below(3) == 0 => Kind::Deleted,
                _ => {
                    event.words = rng.below(50) as i32;
                    event.entry_date = (rng.below(2) == 0).then(|| day(rng));
                    Kind::Updated
                }
            };
            events.push(event.clone());
        }
        events.reverse();
        per_entry.push(events);
    }
    let mut interleaved = Vec::new();
    while !per_entry.is_empty() {
        let index = rng.below(per_entry.len() as u64) as usize;
        match per_entry[index].pop() {
            Some(event) => interleaved.push(event),
            None => {
                per_entry.swap_remove(index);
            }
        }
    }
    interleaved
}

// ---------------------------------------------------------------------------------------------
// the worker, alone, against its own database and namespace

struct Harness {
    db: TestDb,
    bucket: TestBucket,
    namespace: String,
    /// Publishes as the api's relay would.
    bus: bus::Bus,
    jetstream: async_nats::jetstream::Context,
    /// search_path = worker.
    pool: sqlx::PgPool,
    published: usize,
}

struct RunningWorker {
    shutdown: CancellationToken,
    task: JoinHandle<Result<(), worker::Error>>,
}

impl Harness {
    async fn new() -> Self {
        Self::on(TestDb::new().await).await
    }

    async fn on(db: TestDb) -> Self {
        let bucket = TestBucket::new().await;
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let client = platform::nats::connect(&nats_url(), "insights-batches-test")
            .await
            .unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let bus = bus::Bus::start(jetstream.clone(), &namespace, "test")
            .await
            .unwrap();
        let pool = platform::db::connect(
            &secrecy::SecretString::from(db.url().to_owned()),
            "worker",
            2,
        )
        .await
        .unwrap();
        platform::db::migrate(&pool, "worker", &worker::MIGRATOR)
            .await
            .unwrap();
        Self {
            db,
            bucket,
            namespace,
            bus,
            jetstream,
            pool,
            published: 0,
        }
    }

    async fn start_worker(&self) -> RunningWorker {
        let mut config = worker::Config::for_tests(self.db.url(), &nats_url());
        config.common.bus_namespace = self.namespace.clone();
        config.s3 = self.bucket.config().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker::run(config, listener, shutdown.clone()));
        RunningWorker { shutdown, task }
    }

    async fn stop_worker(&self, worker: RunningWorker) {
        worker.shutdown.cancel();
        test_support::assert_stops_ok("the worker", Duration::from_secs(30), worker.task).await;
    }

    async fn publish(&mut self, event: &Event, message_id: &str) {
        let entry = event.entry.to_string();
        let user = event.user.to_string();
        let published = match event.kind {
            Kind::Created => {
                self.bus
                    .publish(
                        &JournalEntryCreated {
                            journal_entry_id: entry,
                            author_user_id: user,
                            team_id: String::new(),
                            created_at_ms: event.created.timestamp_millis(),
                            version: event.version,
                            facts: event.facts(),
                        },
                        message_id,
                    )
                    .await
            }
            Kind::Updated => {
                self.bus
                    .publish(
                        &JournalEntryUpdated {
                            journal_entry_id: entry,
                            author_user_id: user,
                            version: event.version,
                            facts: event.facts(),
                            ..Default::default()
                        },
                        message_id,
                    )
                    .await
            }
            Kind::Deleted => {
                self.bus
                    .publish(
                        &JournalEntryDeleted {
                            journal_entry_id: entry,
                            author_user_id: user,
                            version: event.version,
                            facts: event.facts(),
                            ..Default::default()
                        },
                        message_id,
                    )
                    .await
            }
            Kind::Restored => {
                self.bus
                    .publish(
                        &JournalEntryRestored {
                            journal_entry_id: entry,
                            author_user_id: user,
                            version: event.version,
                            facts: event.facts(),
                            ..Default::default()
                        },
                        message_id,
                    )
                    .await
            }
        };
        published.unwrap();
        self.published += 1;
    }

    /// Publish `events` with fresh message ids.
    async fn publish_all(&mut self, events: &[Event]) {
        for event in events {
            let id = format!("m-{}", Uuid::new_v4());
            self.publish(event, &id).await;
        }
    }

    /// Every entry consumer exists and has delivered and settled (acked: committed, or
    /// dead-lettered) everything published so far.
    async fn caught_up(&self) {
        let stream = self
            .jetstream
            .get_stream(self.bus.stream_name("EVENTS"))
            .await
            .unwrap();
        let done = eventually(Duration::from_secs(60), || {
            let stream = stream.clone();
            async move {
                for name in CONSUMERS {
                    let Ok(info) = stream.consumer_info(name).await else {
                        return false;
                    };
                    if info.num_pending > 0 || info.num_ack_pending > 0 {
                        return false;
                    }
                }
                true
            }
        })
        .await;
        assert!(done, "the worker did not handle every event");
        // The stream holds every event published (none dropped as a duplicate).
        let mut stream = stream;
        let info = stream.info().await.unwrap();
        assert_eq!(info.state.messages as usize, self.published);
    }

    /// Make JetStream deliver every event again: the consumers are deleted while no worker
    /// runs, and the next worker creates them anew (from the start of the stream).
    async fn forget_consumers(&self) {
        let stream = self
            .jetstream
            .get_stream(self.bus.stream_name("EVENTS"))
            .await
            .unwrap();
        for name in CONSUMERS {
            stream.delete_consumer(name).await.unwrap();
        }
    }

    /// Every changeset the worker emitted under `subject_prefix`: published ones (the relay
    /// deletes what it publishes) and unsent outbox rows, each once, oldest first.
    async fn emitted_changes(&self, subject_prefix: &str) -> Vec<test_support::Emitted> {
        test_support::emitted(
            &self.pool,
            "outbox",
            &nats_url(),
            &self.namespace,
            "CHANGES",
            subject_prefix,
        )
        .await
        .unwrap()
    }

    /// The changesets of `user`'s scope the worker emitted, oldest first.
    async fn changesets(&self, user: Uuid) -> Vec<Changeset> {
        self.emitted_changes(&format!("changes.user.{user}"))
            .await
            .iter()
            .filter(|message| message.subject == format!("changes.user.{user}"))
            .map(|message| Changeset::decode(message.payload.as_slice()).unwrap())
            .collect()
    }

    /// Everything the insights wrote, to compare before and after.
    async fn snapshot(&self) -> (Vec<String>, Vec<String>, Vec<String>, i64) {
        let text = |sql: &'static str| {
            let pool = self.pool.clone();
            async move {
                sqlx::query_scalar::<_, String>(sql)
                    .fetch_all(&pool)
                    .await
                    .unwrap()
            }
        };
        (
            text(
                "SELECT format('%s %s %s %s %s', journal_entry_id, version, deleted, word_count,
                               updated_at)
                   FROM journal_entry_activity ORDER BY journal_entry_id",
            )
            .await,
            text("SELECT i::text FROM entry_insights i ORDER BY user_id").await,
            text("SELECT d::text FROM entry_insight_days d ORDER BY user_id, day").await,
            self.emitted_changes("changes.").await.len() as i64,
        )
    }

    /// The stored insights of `user` against the oracle, and what clients received (the
    /// latest change of every row) against the stored rows.
    async fn assert_insights(&self, user: Uuid, expected: &Expected) {
        let totals: Totals = sqlx::query_as(
            "SELECT entry_count, word_count, active_days, first_entry_day, last_entry_day,
                    current_streak_days, longest_streak_days, hour_histogram
               FROM entry_insights WHERE user_id = $1",
        )
        .bind(user)
        .fetch_one(&self.pool)
        .await
        .unwrap();
        assert_eq!(totals, expected.totals, "totals of {user}");
        let rows: Vec<(NaiveDate, i32, i64, bool)> = sqlx::query_as(
            "SELECT day, entry_count, word_count, deleted_at IS NOT NULL
               FROM entry_insight_days WHERE user_id = $1 ORDER BY day",
        )
        .bind(user)
        .fetch_all(&self.pool)
        .await
        .unwrap();
        let live: BTreeMap<NaiveDate, (i32, i64)> = rows
            .iter()
            .filter(|(.., deleted)| !deleted)
            .map(|(day, count, words, _)| (*day, (*count, *words)))
            .collect();
        assert_eq!(live, expected.days, "live days of {user}");
        for (day, count, words, deleted) in &rows {
            if *deleted {
                assert_eq!((*count, *words), (0, 0), "{day} is an empty tombstone");
            }
        }

        // Clients converge: each row's changes carry increasing versions and the last one is
        // the stored row.
        let mut latest: BTreeMap<String, (i64, serde_json::Value)> = BTreeMap::new();
        for changeset in self.changesets(user).await {
            for change in changeset.changes {
                let json: serde_json::Value = serde_json::from_slice(&change.row_json).unwrap();
                let key = format!("{}/{}", change.table, change.row_id);
                if let Some((previous, _)) = latest.get(&key) {
                    assert!(*previous < change.version, "{key}: version went backwards");
                }
                latest.insert(key, (change.version, json));
            }
        }
        let (_, insights) = &latest[&format!("entry_insights/{user}")];
        assert_eq!(insights["entryCount"], expected.totals.0);
        assert_eq!(insights["wordCount"], expected.totals.1);
        assert_eq!(insights["longestStreakDays"], expected.totals.6);
        assert_eq!(
            insights["hourHistogram"],
            serde_json::json!(expected.totals.7)
        );
        for (day, count, words, deleted) in &rows {
            let (_, json) = &latest[&format!("entry_insight_days/{user}:{day}")];
            assert_eq!(json["entryCount"], *count, "{day}");
            assert_eq!(json["wordCount"], *words, "{day}");
            assert_eq!(json["deletedAt"].is_i64(), *deleted, "{day}");
        }
    }

    async fn cleanup(self) {
        self.pool.close().await;
        self.bus.delete_streams().await.unwrap();
    }
}

// ---------------------------------------------------------------------------------------------
// the tests

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
