//! The worker, alone, against its own database and namespace.

use std::collections::BTreeMap;
use std::time::Duration;

use chrono::NaiveDate;
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryRestored, JournalEntryUpdated,
};
use messages::sync::v1::Changeset;
use prost::Message;
use test_support::{TestBucket, TestDb, eventually, nats_url};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::events::{Event, Expected, Kind, Totals};

pub(crate) const CONSUMERS: [&str; 4] = [
    "worker--journal_entry_created",
    "worker--journal_entry_updated",
    "worker--journal_entry_deleted",
    "worker--journal_entry_restored",
];

pub(crate) struct Harness {
    pub(crate) db: TestDb,
    pub(crate) bucket: TestBucket,
    pub(crate) namespace: String,
    /// Publishes as the api's relay would.
    pub(crate) bus: bus::Bus,
    pub(crate) jetstream: async_nats::jetstream::Context,
    /// search_path = worker.
    pub(crate) pool: sqlx::PgPool,
    pub(crate) published: usize,
}

pub(crate) struct RunningWorker {
    pub(crate) shutdown: CancellationToken,
    pub(crate) task: JoinHandle<Result<(), worker::Error>>,
}

impl Harness {
    pub(crate) async fn new() -> Self {
        Self::on(TestDb::new().await).await
    }

    pub(crate) async fn on(db: TestDb) -> Self {
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

    pub(crate) async fn start_worker(&self) -> RunningWorker {
        self.start_worker_with(|_| {}).await
    }

    /// A worker whose test config `change` adjusts first.
    pub(crate) async fn start_worker_with(
        &self,
        change: impl FnOnce(&mut worker::Config),
    ) -> RunningWorker {
        let mut config = worker::Config::for_tests(self.db.url(), &nats_url());
        change(&mut config);
        config.common.bus_namespace = self.namespace.clone();
        config.s3 = self.bucket.config().clone();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let shutdown = CancellationToken::new();
        let task = tokio::spawn(worker::run(config, listener, shutdown.clone()));
        RunningWorker { shutdown, task }
    }

    pub(crate) async fn stop_worker(&self, worker: RunningWorker) {
        worker.shutdown.cancel();
        test_support::assert_stops_ok("the worker", Duration::from_secs(30), worker.task).await;
    }

    pub(crate) async fn publish(&mut self, event: &Event, message_id: &str) {
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
    pub(crate) async fn publish_all(&mut self, events: &[Event]) {
        for event in events {
            let id = format!("m-{}", Uuid::new_v4());
            self.publish(event, &id).await;
        }
    }

    /// Every entry consumer exists and has delivered and settled (acked: committed, or
    /// dead-lettered) everything published so far.
    pub(crate) async fn caught_up(&self) {
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
    pub(crate) async fn forget_consumers(&self) {
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
    pub(crate) async fn emitted_changes(&self, subject_prefix: &str) -> Vec<test_support::Emitted> {
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
    pub(crate) async fn changesets(&self, user: Uuid) -> Vec<Changeset> {
        self.emitted_changes(&format!("changes.user.{user}"))
            .await
            .iter()
            .filter(|message| message.subject == format!("changes.user.{user}"))
            .map(|message| Changeset::decode(message.payload.as_slice()).unwrap())
            .collect()
    }

    /// Everything the insights wrote, to compare before and after.
    pub(crate) async fn snapshot(&self) -> (Vec<String>, Vec<String>, Vec<String>, i64) {
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
    pub(crate) async fn assert_insights(&self, user: Uuid, expected: &Expected) {
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

    pub(crate) async fn cleanup(self) {
        self.pool.close().await;
        self.bus.delete_streams().await.unwrap();
    }
}
