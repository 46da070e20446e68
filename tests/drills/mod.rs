//! The pieces of the fault drills (`e2e/drills.rs`, issue 17): a cluster of the five real
//! binaries on a private NATS and a private Postgres whose processes a drill may kill and
//! restart, a steady load of creates that records every acknowledged one, SSE clients that
//! follow their users' rows as an offline-first app does, and the checks a drill ends with.

pub mod client;
pub mod load;

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::{PrivateNats, PrivatePostgres, TestBucket, TestDb};
use uuid::Uuid;

use crate::ServiceProcess;
pub use client::SseClient;
pub use load::{Load, LoadReport};

/// How long every eventual condition of a drill may take (a busy 2-core machine).
pub const WAIT: Duration = Duration::from_secs(60);

/// The recovery bounds of issue 17.
pub const NATS_RECOVERY_BOUND: Duration = Duration::from_secs(2);
pub const POSTGRES_RECOVERY_BOUND: Duration = Duration::from_secs(1);
pub const WORKER_REDO_BOUND: Duration = Duration::from_secs(10);

/// The random timing of a drill, from a seed (`DRILL_SEED`, printed so a failure can be
/// replayed; the processes' own timing still varies). A splitmix64 generator: the sequence
/// for a seed must not change with a dependency's version.
pub struct Timing {
    pub seed: u64,
    state: u64,
}

impl Timing {
    /// The seed from `DRILL_SEED`, or a fresh one; printed either way.
    pub fn from_env(drill: &str) -> Self {
        let seed = match std::env::var("DRILL_SEED") {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("DRILL_SEED must be a number, not {text:?}")),
            Err(_) => Uuid::new_v4().as_u64_pair().0,
        };
        eprintln!("drill {drill}: seed {seed} (replay with DRILL_SEED={seed})");
        Self { seed, state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `from` and `to` (milliseconds).
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from) + 1))
    }
}

/// Rounds per drill: `DRILL_ROUNDS`, default 2.
pub fn rounds() -> usize {
    std::env::var("DRILL_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2)
}

/// One service binary that a drill may kill and start again on the same port (its clients
/// and the load keep their addresses, as behind a stable service address).
pub struct Node {
    pub name: &'static str,
    port: u16,
    env: Vec<(&'static str, String)>,
    database_url: String,
    namespace: String,
    process: Option<ServiceProcess>,
}

impl Node {
    async fn start(
        name: &'static str,
        database_url: &str,
        namespace: &str,
        env: Vec<(&'static str, String)>,
    ) -> Self {
        let mut node = Self {
            name,
            port: test_support::free_port(),
            env,
            database_url: database_url.to_owned(),
            namespace: namespace.to_owned(),
            process: None,
        };
        node.restart().await;
        node
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGKILL (no drain, no lease handed over) and wait until it is gone.
    pub async fn kill(&mut self) {
        let mut process = self
            .process
            .take()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        process.signal(Signal::SIGKILL);
        process.wait_exit(Duration::from_secs(15)).await;
    }

    /// Start it (again) on its port and wait until it is ready.
    pub async fn restart(&mut self) {
        assert!(self.process.is_none(), "{} is running already", self.name);
        let env: Vec<(&str, String)> = self
            .env
            .iter()
            .map(|(key, value)| (*key, value.clone()))
            .collect();
        self.process = Some(
            ServiceProcess::start_on_port(
                self.name,
                self.port,
                &self.database_url,
                &self.namespace,
                &env,
            )
            .await,
        );
    }

    /// Fail now if the process exited on its own (a crash under the fault).
    pub fn assert_alive(&mut self) {
        if let Some(process) = self.process.as_mut() {
            let exited = process.child.try_wait().expect("polling a service process");
            assert!(
                exited.is_none(),
                "{} exited by itself: {exited:?}",
                self.name
            );
        }
    }

    /// SIGTERM, exit code 0.
    pub async fn stop(mut self) {
        if let Some(process) = self.process.take() {
            process.stop().await;
        }
    }
}

/// A signed-in user of the drill.
#[derive(Debug, Clone)]
pub struct User {
    pub user_id: Uuid,
    pub session: String,
}

/// The five services on their own NATS and Postgres. Fields drop in order: the processes
/// first, the servers last.
pub struct Cluster {
    pub api: Node,
    pub streamer: Node,
    pub workers: Vec<Node>,
    pub crons: Vec<Node>,
    pub notifier: Node,
    pub pool: PgPool,
    pub namespace: String,
    _bucket: TestBucket,
    db: TestDb,
    pub postgres: PrivatePostgres,
    pub nats: PrivateNats,
}

/// How many of each service a drill runs.
pub struct Shape {
    pub workers: usize,
    pub crons: usize,
}

impl Cluster {
    pub async fn start(shape: Shape) -> Self {
        let nats = PrivateNats::start();
        let postgres = PrivatePostgres::start();
        let db = TestDb::on_server(&postgres.admin_url()).await;
        let bucket = TestBucket::new().await;
        let namespace = crate::unique_namespace();
        let common = vec![
            ("NATS_URL", nats.url()),
            ("S3_ENDPOINT", bucket.config().endpoint.clone()),
            ("S3_BUCKET", bucket.name().to_owned()),
            ("DATABASE_MAX_CONNECTIONS", "8".to_owned()),
            ("RUST_LOG", "warn".to_owned()),
        ];
        let with = |extra: &[(&'static str, &str)]| {
            let mut env = common.clone();
            env.extend(extra.iter().map(|(key, value)| (*key, (*value).to_owned())));
            env
        };
        let url = db.url().to_owned();
        // The api first: its schema is the one the others' readers look at.
        let api = Node::start(
            "api",
            &url,
            &namespace,
            with(&[
                ("AUTH_DEV_LOGIN", "true"),
                ("AUTH_RATE_LIMIT_PER_MINUTE", "1000"),
            ]),
        )
        .await;
        let streamer = Node::start(
            "sync-streamer",
            &url,
            &namespace,
            with(&[("SYNC_HEARTBEAT_SECONDS", "1")]),
        )
        .await;
        let mut workers = Vec::new();
        for _ in 0..shape.workers {
            workers.push(Node::start("worker", &url, &namespace, with(&[])).await);
        }
        let mut crons = Vec::new();
        for replica in 0..shape.crons {
            let replica_id = format!("replica-{replica}");
            crons.push(
                Node::start(
                    "cron",
                    &url,
                    &namespace,
                    with(&[
                        ("CRON_SCHEDULE_DISPATCH_DUE_PROMPTS", "* * * * * *"),
                        ("CRON_DISABLED_JOBS", OTHER_CRON_JOBS),
                        ("CRON_LEASE_SECONDS", "3"),
                        ("CRON_REPLICA_ID", &replica_id),
                    ]),
                )
                .await,
            );
        }
        let notifier = Node::start("notifier", &url, &namespace, with(&[])).await;
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(3)
            .acquire_timeout(Duration::from_secs(5))
            .connect(&url)
            .await
            .expect("connecting to the drill's database");
        Self {
            api,
            streamer,
            workers,
            crons,
            notifier,
            pool,
            namespace,
            _bucket: bucket,
            db,
            postgres,
            nats,
        }
    }

    /// Sign in `count` users (dev login) and create nothing yet.
    pub async fn users(&self, count: usize) -> Vec<User> {
        let client = reqwest::Client::new();
        let mut users = Vec::new();
        for index in 0..count {
            let email = format!("drill-{index}-{}@example.com", Uuid::new_v4().simple());
            let login = crate::dev_login(
                &client,
                &self.api.base_url(),
                &email,
                &format!("Drill {index}"),
            )
            .await;
            users.push(User {
                user_id: login.user_id,
                session: login.token,
            });
        }
        users
    }

    /// An SSE client following `user`'s rows, reconnecting as `EventSource` does.
    pub async fn follow(&self, user: &User) -> SseClient {
        let client = reqwest::Client::new();
        let response = client
            .post(format!("{}/rpc/sync/token", self.api.base_url()))
            .bearer_auth(&user.session)
            .json(&json!({"json": null}))
            .send()
            .await
            .expect("sync/token");
        assert_eq!(response.status(), 200, "sync/token");
        let body: Value = response.json().await.expect("sync/token body");
        let token = body["json"]["token"].as_str().expect("token").to_owned();
        let client = SseClient::spawn(&self.streamer.base_url(), &token, user.user_id);
        let caught_up = test_support::eventually(WAIT, || async { client.caught_up() }).await;
        assert!(caught_up, "a new SSE client never caught up");
        client
    }

    /// Every live service process is still running (none crashed under the fault).
    pub fn assert_alive(&mut self) {
        self.api.assert_alive();
        self.streamer.assert_alive();
        self.notifier.assert_alive();
        for node in self.workers.iter_mut().chain(self.crons.iter_mut()) {
            node.assert_alive();
        }
    }

    /// Every outbox published and every consumer settled.
    pub async fn settle(&self) {
        crate::wait_settled_on(self.db.url(), &self.nats.url(), &self.namespace).await;
    }

    /// Write one entry for `user` as soon as the api takes it (retrying refusals while a
    /// fault heals); its id and when it was acknowledged.
    pub async fn probe_write(&self, user: &User, title: &str) -> (String, Instant) {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("http client");
        let deadline = Instant::now() + WAIT;
        loop {
            match load::create_entry(&client, &self.api.base_url(), &user.session, title).await {
                load::Outcome::Acknowledged(id) => return (id, Instant::now()),
                refused => assert!(
                    Instant::now() < deadline,
                    "the api never took the probe write: {refused:?}"
                ),
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stop every service with SIGTERM (each must exit 0).
    pub async fn stop(self) {
        let nodes = [self.api, self.streamer, self.notifier]
            .into_iter()
            .chain(self.workers)
            .chain(self.crons);
        for node in nodes {
            node.stop().await;
        }
        self.pool.close().await;
        crate::delete_namespace(&self.nats.url(), &self.namespace).await;
    }

    /// The last sequence of the namespace's stream `base` (`EVENTS`, `TASKS`, `CHANGES`):
    /// how many messages it has stored, duplicates (same `Nats-Msg-Id`) not counted.
    pub async fn last_sequence(&self, base: &str) -> u64 {
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connecting to NATS");
        let mut stream = async_nats::jetstream::new(client)
            .get_stream(format!("{}_{base}", self.namespace.to_ascii_uppercase()))
            .await
            .expect("the stream");
        stream
            .info()
            .await
            .expect("stream info")
            .state
            .last_sequence
    }

    /// The CHANGES stream's changesets: sequence → scope.
    pub async fn changes(&self) -> BTreeMap<u64, String> {
        use async_nats::jetstream::consumer;
        let client = async_nats::connect(self.nats.url())
            .await
            .expect("connecting to NATS");
        let jetstream = async_nats::jetstream::new(client);
        let mut stream = jetstream
            .get_stream(format!("{}_CHANGES", self.namespace.to_ascii_uppercase()))
            .await
            .expect("the CHANGES stream");
        let last = stream
            .info()
            .await
            .expect("CHANGES info")
            .state
            .last_sequence;
        let mut scopes = BTreeMap::new();
        if last == 0 {
            return scopes;
        }
        let mut messages = stream
            .create_consumer(consumer::pull::OrderedConfig::default())
            .await
            .expect("an ordered consumer on CHANGES")
            .messages()
            .await
            .expect("reading CHANGES");
        while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
            .await
            .expect("CHANGES stopped delivering before its last sequence")
        {
            let message = message.expect("a CHANGES message");
            let seq = message.info().expect("message info").stream_sequence;
            let changeset =
                <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
                    .expect("a changeset");
            scopes.insert(seq, changeset.scope);
            if seq >= last {
                break;
            }
        }
        scopes
    }
}

const OTHER_CRON_JOBS: &str =
    "purge-expired-sessions,purge-retention,roll-over-usage,clean-up-abandoned-uploads";

/// What the drill wrote and what must hold after it.
pub struct Verdict<'a> {
    pub cluster: &'a Cluster,
    pub users: &'a [User],
    pub clients: &'a [SseClient],
    /// Ids of every entry whose create was answered 200.
    pub acknowledged: &'a [String],
}

impl Verdict<'_> {
    /// The checks every drill ends with: no acknowledged write lost, every entry's worker
    /// effects exactly once, and every SSE client equal to the database with no gap and no
    /// duplicate.
    pub async fn assert_all(&self) {
        self.cluster.settle().await;
        self.assert_no_acknowledged_write_lost().await;
        self.assert_effects_exactly_once().await;
        self.assert_clients_equal_the_database().await;
    }

    async fn assert_no_acknowledged_write_lost(&self) {
        let acknowledged: Vec<Uuid> = self
            .acknowledged
            .iter()
            .map(|id| id.parse().expect("an entry id"))
            .collect();
        assert!(
            acknowledged.len() >= 100,
            "the load got only {} writes acknowledged",
            acknowledged.len()
        );
        let stored: Vec<Uuid> = sqlx::query_scalar(
            "SELECT journal_entry_id FROM api.journal_entries WHERE journal_entry_id = ANY($1)",
        )
        .bind(&acknowledged)
        .fetch_all(&self.cluster.pool)
        .await
        .expect("reading entries");
        let stored: BTreeSet<Uuid> = stored.into_iter().collect();
        let lost: Vec<&Uuid> = acknowledged
            .iter()
            .filter(|id| !stored.contains(id))
            .collect();
        assert!(
            lost.is_empty(),
            "{} of {} acknowledged writes are not in the database: {lost:?}",
            lost.len(),
            acknowledged.len()
        );
    }

    /// The worker's effects of each entry: one activity row, and per user totals that count
    /// each entry once (an effect applied twice would count it twice).
    async fn assert_effects_exactly_once(&self) {
        let pool = &self.cluster.pool;
        let without_activity: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api.journal_entries e
              WHERE NOT EXISTS (SELECT 1 FROM worker.journal_entry_activity a
                                 WHERE a.journal_entry_id = e.journal_entry_id)",
        )
        .fetch_one(pool)
        .await
        .expect("counting entries without activity");
        assert_eq!(without_activity, 0, "entries the worker never recorded");
        for user in self.users {
            let entries: i64 = sqlx::query_scalar(
                "SELECT count(*) FROM api.journal_entries
                  WHERE author_user_id = $1 AND deleted_at IS NULL",
            )
            .bind(user.user_id)
            .fetch_one(pool)
            .await
            .expect("counting entries");
            let (counted, words): (i32, i64) = sqlx::query_as(
                "SELECT entry_count, word_count FROM worker.entry_insights WHERE user_id = $1",
            )
            .bind(user.user_id)
            .fetch_optional(pool)
            .await
            .expect("reading insights")
            .unwrap_or((0, 0));
            assert_eq!(
                i64::from(counted),
                entries,
                "user {}: the worker counted {counted} entries, the database has {entries}",
                user.user_id
            );
            let activity_words: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(word_count), 0)::bigint FROM worker.journal_entry_activity
                  WHERE author_user_id = $1 AND NOT deleted",
            )
            .bind(user.user_id)
            .fetch_one(pool)
            .await
            .expect("summing words");
            assert_eq!(words, activity_words, "user {}: word totals", user.user_id);
            let per_day: i64 = sqlx::query_scalar(
                "SELECT coalesce(sum(entry_count), 0)::bigint FROM worker.entry_insight_days
                  WHERE user_id = $1 AND deleted_at IS NULL",
            )
            .bind(user.user_id)
            .fetch_one(pool)
            .await
            .expect("summing days");
            assert_eq!(per_day, entries, "user {}: entries per day", user.user_id);
        }
    }

    async fn assert_clients_equal_the_database(&self) {
        let changes = self.cluster.changes().await;
        for client in self.clients {
            let user_id = client.user_id;
            let expected = self.entries_of(user_id).await;
            let scope = format!("user.{user_id}");
            let in_scope: BTreeSet<u64> = changes
                .iter()
                .filter(|(_, changeset_scope)| **changeset_scope == scope)
                .map(|(seq, _)| *seq)
                .collect();
            let last = in_scope.last().copied().unwrap_or(0);
            let converged = test_support::eventually(WAIT, || async {
                client.entries() == expected && client.cursor() >= last
            })
            .await;
            assert!(
                converged,
                "user {user_id}: the client's copy differs from the database: {} entries \
                 ({} missing, {} extra or at another version), cursor {} of {last}",
                expected.len(),
                expected
                    .iter()
                    .filter(|(id, _)| !client.entries().contains_key(*id))
                    .count(),
                client
                    .entries()
                    .iter()
                    .filter(|(id, version)| expected.get(*id) != Some(version))
                    .count(),
                client.cursor()
            );
            client.assert_no_gap_and_no_duplicate(&in_scope);
        }
    }

    /// The user's live entries in the database: id → version.
    async fn entries_of(&self, user_id: Uuid) -> BTreeMap<String, i64> {
        let rows: Vec<(Uuid, i64)> = sqlx::query_as(
            "SELECT journal_entry_id, version FROM api.journal_entries
              WHERE author_user_id = $1 AND team_id IS NULL AND deleted_at IS NULL",
        )
        .bind(user_id)
        .fetch_all(&self.cluster.pool)
        .await
        .expect("reading entries");
        rows.into_iter()
            .map(|(id, version)| (id.to_string(), version))
            .collect()
    }
}

/// Recovery times measured against the bounds; every one is printed, and the drill
/// fails at its end (after the invariants were checked) with every bound that was missed.
#[derive(Default)]
pub struct Bounds {
    missed: Vec<String>,
}

impl Bounds {
    pub fn record(&mut self, what: &str, took: Duration, bound: Duration) {
        let verdict = if took <= bound { "within" } else { "OVER" };
        eprintln!("drill recovery: {what}: {took:?} ({verdict} the bound of {bound:?})");
        if took > bound {
            self.missed.push(format!(
                "{what}: {took:?} > {bound:?} (over by {:?})",
                took - bound
            ));
        }
    }

    pub fn assert_met(&self, seed: u64) {
        assert!(
            self.missed.is_empty(),
            "recovery bounds missed (DRILL_SEED={seed}):\n{}",
            self.missed.join("\n")
        );
    }
}
