//! Worker replicas as real processes, with a real api, Postgres, NATS and S3-protocol server:
//! - a worker killed with SIGKILL in the middle of an export loses nothing: another replica
//!   gets the task after its ack wait (30 s) and completes it, exactly once;
//! - SIGTERM in the middle of an export lets it finish (and its `export.ready` leave) before
//!   the process exits 0.
//!
//! `WORKER_TEST_EXPORT_PAUSE_MS` holds the export between its upload and its commit, the
//! worst moment to die: the archive exists, nothing is recorded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use async_nats::jetstream::consumer;
use e2e_tests::ServiceProcess;
use futures::StreamExt;
use nix::sys::signal::Signal;
use serde_json::{Value, json};
use test_support::{TestBucket, TestDb, eventually, nats_url};

struct Setup {
    db: TestDb,
    namespace: String,
    bucket: TestBucket,
    api: ServiceProcess,
    client: reqwest::Client,
    token: String,
    user_id: String,
    worker_pool: sqlx::PgPool,
}

impl Setup {
    async fn start() -> Self {
        let db = TestDb::new().await;
        let namespace = e2e_tests::unique_namespace();
        let bucket = TestBucket::new().await;
        let dev_login = [("AUTH_DEV_LOGIN", "true".to_owned())];
        let api = ServiceProcess::start("api", db.url(), &namespace, &dev_login).await;
        let client = reqwest::Client::new();
        let login = e2e_tests::dev_login(&client, &api.base_url, "ada@example.com", "Ada").await;
        let worker_pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(2)
            .connect(db.url())
            .await
            .unwrap();
        Self {
            token: login.token,
            user_id: login.user_id.to_string(),
            db,
            namespace,
            bucket,
            api,
            client,
            worker_pool,
        }
    }

    async fn worker(&self, pause_ms: u64) -> ServiceProcess {
        let mut env = self.bucket.env();
        env.push(("WORKER_TEST_EXPORT_PAUSE_MS", pause_ms.to_string()));
        env.push(("SHUTDOWN_GRACE_SECONDS", "15".to_owned()));
        ServiceProcess::start("worker", self.db.url(), &self.namespace, &env).await
    }

    async fn rpc(&self, procedure: &str, input: Value) -> Value {
        test_support::rpc_ok(
            &self.client,
            &self.api.base_url,
            &self.token,
            procedure,
            input,
        )
        .await
    }

    /// Ask for an export; returns its id.
    async fn request_export(&self) -> String {
        self.rpc(
            "journalEntries/create",
            json!({"title": "Kept", "content": "something to export"}),
        )
        .await;
        let export = self.rpc("exports/create", Value::Null).await;
        export["exportId"].as_str().unwrap().to_owned()
    }

    /// The archive is in the bucket: the worker is past the upload, in its pause.
    async fn wait_for_upload(&self, export_id: &str) {
        let key = format!("exports/{}/{export_id}.json", self.user_id);
        let uploaded = eventually(Duration::from_secs(30), || async {
            self.bucket.keys().await.contains(&key)
        })
        .await;
        assert!(uploaded, "the worker never uploaded {key}");
    }

    async fn export_status(&self, export_id: &str) -> String {
        self.rpc("exports/get", json!({"exportId": export_id}))
            .await["status"]
            .as_str()
            .unwrap()
            .to_owned()
    }

    async fn count(&self, sql: &str, export_id: &str) -> i64 {
        sqlx::query_scalar(sql)
            .bind(export_id)
            .fetch_one(&self.worker_pool)
            .await
            .unwrap()
    }

    /// `export.ready` messages for this export in the EVENTS stream.
    async fn ready_events_in_stream(&self, export_id: &str) -> usize {
        let client = async_nats::connect(nats_url()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let stream = jetstream
            .get_stream(format!("{}_EVENTS", self.namespace.to_ascii_uppercase()))
            .await
            .unwrap();
        let consumer = stream
            .create_consumer(consumer::pull::Config {
                filter_subject: format!("{}.events.export.ready", self.namespace),
                deliver_policy: consumer::DeliverPolicy::All,
                ack_policy: consumer::AckPolicy::None,
                ..Default::default()
            })
            .await
            .unwrap();
        let mut messages = consumer
            .fetch()
            .max_messages(100)
            .expires(Duration::from_secs(2))
            .messages()
            .await
            .unwrap();
        let mut count = 0;
        while let Some(message) = messages.next().await {
            let message = message.unwrap();
            let ready = <messages::journal::v1::ExportReady as prost::Message>::decode(
                message.payload.clone(),
            )
            .unwrap();
            if ready.export_id == export_id {
                count += 1;
            }
        }
        count
    }

    async fn stop(mut self) {
        self.api.signal(Signal::SIGTERM);
        assert_eq!(self.api.wait_exit(Duration::from_secs(20)).await, Some(0));
        self.worker_pool.close().await;
        e2e_tests::delete_namespace(&nats_url(), &self.namespace).await;
    }
}

const RECORDED: &str = "SELECT count(*) FROM worker.data_exports WHERE export_id::text = $1";

#[tokio::test]
async fn a_worker_killed_mid_export_loses_nothing_and_the_export_completes_once() {
    let setup = Setup::start().await;
    let mut doomed = setup.worker(600_000).await;
    let export_id = setup.request_export().await;
    setup.wait_for_upload(&export_id).await;

    doomed.signal(Signal::SIGKILL);
    assert_eq!(
        doomed.wait_exit(Duration::from_secs(10)).await,
        None,
        "killed by the signal"
    );
    assert_eq!(setup.export_status(&export_id).await, "pending");
    assert_eq!(
        setup.count(RECORDED, &export_id).await,
        0,
        "nothing recorded"
    );

    // Another replica gets the task once its ack wait (30 s) has passed.
    let started = Instant::now();
    let mut survivor = setup.worker(0).await;
    let ready = eventually(Duration::from_secs(90), || async {
        setup.export_status(&export_id).await == "ready"
    })
    .await;
    assert!(ready, "the export never completed after the crash");
    eprintln!(
        "completed {:.1} s after the replacement started",
        started.elapsed().as_secs_f64()
    );

    assert_eq!(setup.count(RECORDED, &export_id).await, 1);
    // In the outbox or published (the relay deletes what it publishes).
    let emitted = test_support::emitted(
        &setup.worker_pool,
        "worker.outbox",
        &nats_url(),
        &setup.namespace,
        "EVENTS",
        "events.export.ready",
    )
    .await
    .unwrap();
    assert_eq!(emitted.len(), 1);
    assert_eq!(
        setup
            .count(
                "SELECT count(*) FROM worker.processed_messages
                  WHERE handler = 'exports--export_user_data' AND $1 <> ''",
                &export_id,
            )
            .await,
        1
    );
    assert_eq!(
        setup
            .count(
                "SELECT count(*) FROM worker.dead_letters WHERE $1 <> ''",
                &export_id
            )
            .await,
        0
    );
    assert_eq!(setup.ready_events_in_stream(&export_id).await, 1);
    // The link the survivor published downloads the archive.
    let export = setup
        .rpc("exports/get", json!({"exportId": export_id}))
        .await;
    let archive = test_support::get_json(export["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(archive["exportId"], export_id);
    assert_eq!(archive["journalEntries"][0]["title"], "Kept");

    survivor.signal(Signal::SIGTERM);
    assert_eq!(survivor.wait_exit(Duration::from_secs(30)).await, Some(0));
    setup.stop().await;
}

#[tokio::test]
async fn sigterm_mid_export_finishes_it_before_exiting() {
    let setup = Setup::start().await;
    let mut worker = setup.worker(3_000).await;
    let export_id = setup.request_export().await;
    setup.wait_for_upload(&export_id).await;

    worker.signal(Signal::SIGTERM);
    let stopping = Instant::now();
    assert_eq!(
        worker.wait_exit(Duration::from_secs(30)).await,
        Some(0),
        "clean exit"
    );
    eprintln!(
        "stopped {:.1} s after SIGTERM",
        stopping.elapsed().as_secs_f64()
    );
    // Finished and published before exiting: no other worker is running now.
    assert_eq!(setup.count(RECORDED, &export_id).await, 1);
    assert_eq!(
        setup
            .count(
                "SELECT count(*) FROM worker.outbox WHERE sent_at IS NULL AND $1 <> ''",
                &export_id
            )
            .await,
        0,
        "the relay sent what the last handler wrote"
    );
    let ready = eventually(Duration::from_secs(20), || async {
        setup.export_status(&export_id).await == "ready"
    })
    .await;
    assert!(ready);
    assert_eq!(setup.ready_events_in_stream(&export_id).await, 1);
    setup.stop().await;
}
