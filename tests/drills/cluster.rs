//! The cluster a drill runs: the five services on a private NATS and Postgres, their users
//! and the SSE clients that follow them.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use serde_json::{Value, json};
use sqlx::PgPool;
use test_support::{PrivateNats, PrivatePostgres, TestBucket, TestDb};
use uuid::Uuid;

use super::load;
use super::node::Node;
use super::{SseClient, WAIT};

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
