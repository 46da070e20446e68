//! The api and the worker in-process on port 0, against one fresh database, one bus namespace
//! and (for exports and attachments) a bucket of their own; helpers to call the api as clients do and to
//! read what the worker wrote.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::io::Cursor;
use std::time::Duration;

use messages::sync::v1::{ChangeOp, Changeset, RowChange};
use serde_json::{Value, json};
use test_support::{Emitted, Outbox, TestBucket, TestDb, eventually, nats_url};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub struct System {
    pub api_url: String,
    pub worker_url: String,
    pub db: TestDb,
    pub bucket: TestBucket,
    pub namespace: String,
    /// search_path = worker.
    pub worker_pool: sqlx::PgPool,
    /// search_path = api.
    pub api_pool: sqlx::PgPool,
    pub client: reqwest::Client,
    shutdown: CancellationToken,
    api: JoinHandle<Result<(), api::Error>>,
    worker: JoinHandle<Result<(), worker::Error>>,
}

/// A signed-in user.
pub type User = test_support::DevUser;

async fn schema_pool(db: &TestDb, schema: &'static str) -> sqlx::PgPool {
    sqlx::postgres::PgPoolOptions::new()
        .max_connections(2)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                sqlx::Executor::execute(conn, format!("SET search_path = {schema}").as_str())
                    .await?;
                Ok(())
            })
        })
        .connect(db.url())
        .await
        .unwrap()
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(|_| {}).await
    }

    pub async fn start_with(configure_worker: impl FnOnce(&mut worker::Config)) -> Self {
        Self::start_both(|_| {}, configure_worker).await
    }

    /// Both services configured by the test; both use the test's bucket.
    pub async fn start_both(
        configure_api: impl FnOnce(&mut api::Config),
        configure_worker: impl FnOnce(&mut worker::Config),
    ) -> Self {
        let db = TestDb::new().await;
        let bucket = TestBucket::new().await;
        let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
        let shutdown = CancellationToken::new();
        let client = reqwest::Client::new();

        let mut api_config = api::Config::for_tests(db.url(), &nats_url());
        api_config.common.bus_namespace = namespace.clone();
        api_config.s3 = bucket.config().clone();
        configure_api(&mut api_config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let api_url = format!("http://{}", listener.local_addr().unwrap());
        let api = tokio::spawn(api::run(api_config, listener, shutdown.clone()));

        let mut worker_config = worker::Config::for_tests(db.url(), &nats_url());
        worker_config.common.bus_namespace = namespace.clone();
        worker_config.s3 = bucket.config().clone();
        configure_worker(&mut worker_config);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let worker_url = format!("http://{}", listener.local_addr().unwrap());
        let worker = tokio::spawn(worker::run(worker_config, listener, shutdown.clone()));

        test_support::wait_ready(&api_url, "api").await;
        test_support::wait_ready(&worker_url, "worker").await;
        let worker_pool = schema_pool(&db, "worker").await;
        let api_pool = schema_pool(&db, "api").await;
        Self {
            api_url,
            worker_url,
            db,
            bucket,
            namespace,
            worker_pool,
            api_pool,
            client,
            shutdown,
            api,
            worker,
        }
    }

    pub async fn stop(self) {
        self.shutdown.cancel();
        test_support::assert_stops_ok("the worker", Duration::from_secs(20), self.worker).await;
        test_support::assert_stops_ok("the api", Duration::from_secs(20), self.api).await;
        self.worker_pool.close().await;
        self.api_pool.close().await;
        test_support::delete_streams(&self.namespace).await;
    }

    pub async fn login(&self, email: &str) -> User {
        test_support::dev_login(&self.client, &self.api_url, email).await
    }

    /// `POST /rpc/<procedure>` → (status, `json` of the envelope).
    pub async fn call(&self, user: &User, procedure: &str, input: Value) -> (u16, Value) {
        test_support::rpc_call(&self.client, &self.api_url, &user.token, procedure, input).await
    }

    /// A successful call's output.
    pub async fn ok(&self, user: &User, procedure: &str, input: Value) -> Value {
        test_support::rpc_ok(&self.client, &self.api_url, &user.token, procedure, input).await
    }

    /// A team of `owner` that each of `members` joined (invited, accepted); its id.
    pub async fn team(&self, owner: &User, name: &str, members: &[&User]) -> String {
        let team = self.ok(owner, "teams/create", json!({"name": name})).await;
        let team_id = team["teamId"].as_str().unwrap().to_owned();
        for member in members {
            self.ok(
                owner,
                "teams/invite",
                json!({"teamId": team_id, "email": member.email, "role": "member"}),
            )
            .await;
            let (_, invitations) = self
                .call(member, "teams/listInvitations", Value::Null)
                .await;
            self.ok(
                member,
                "teams/acceptInvitation",
                json!({"teamInvitationId": invitations[0]["teamInvitationId"]}),
            )
            .await;
        }
        team_id
    }

    /// What the api emitted through its outbox.
    pub fn api_outbox(&self) -> Outbox<'_> {
        Outbox::new(&self.api_pool, &self.namespace)
    }

    /// What the worker emitted through its outbox. The streams are shared with the api:
    /// filter by subject, table or content where both could emit.
    pub fn worker_outbox(&self) -> Outbox<'_> {
        Outbox::new(&self.worker_pool, &self.namespace)
    }

    /// [`Outbox::messages`] of the api's outbox.
    pub async fn api_emitted(&self, stream_base: &str, subject_prefix: &str) -> Vec<Emitted> {
        self.api_outbox()
            .messages(stream_base, subject_prefix)
            .await
    }

    /// [`Outbox::messages`] of the worker's outbox.
    pub async fn worker_emitted(&self, stream_base: &str, subject_prefix: &str) -> Vec<Emitted> {
        self.worker_outbox()
            .messages(stream_base, subject_prefix)
            .await
    }

    /// Wait until the worker has handled every `journal_entry.*` event the api emitted.
    pub async fn wait_for_worker(&self) {
        let settled = eventually(Duration::from_secs(30), || async {
            let emitted = self
                .api_emitted("EVENTS", "events.journal_entry.")
                .await
                .len() as i64;
            emitted == self.entry_events_handled().await
        })
        .await;
        assert!(settled, "the worker did not handle every entry event");
        // Insights changed by those events are published after the sync delay.
        let published = eventually(Duration::from_secs(30), || async {
            self.insights_unpublished().await == 0
        })
        .await;
        assert!(
            published,
            "the worker did not publish every changed insight"
        );
    }

    /// (user, day) insight rows changed but not yet published (`insight_sync_due`).
    pub async fn insights_unpublished(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM insight_sync_due")
            .fetch_one(&self.worker_pool)
            .await
            .unwrap()
    }

    /// The `journal_entry.*` events in the stream, once the worker's four consumers have
    /// settled every one of them (acked after the effect committed, or dead-lettered); -1
    /// while any is pending, awaiting an ack or not created yet. (The insights handlers record
    /// no message ids: their effect is idempotent by entry version.)
    pub async fn entry_events_handled(&self) -> i64 {
        use futures::TryStreamExt;
        let client = async_nats::connect(nats_url()).await.unwrap();
        let jetstream = async_nats::jetstream::new(client);
        let events = format!(
            "{}_EVENTS",
            self.namespace.to_ascii_uppercase().replace(['.', '-'], "_")
        );
        let Ok(stream) = jetstream.get_stream(events).await else {
            return -1;
        };
        for event in ["created", "updated", "deleted", "restored"] {
            let Ok(info) = stream
                .consumer_info(format!("worker--journal_entry_{event}"))
                .await
            else {
                return -1;
            };
            if info.num_pending > 0 || info.num_ack_pending > 0 {
                return -1;
            }
        }
        let subjects: Vec<(String, usize)> = stream
            .info_with_subjects(format!("{}.events.journal_entry.>", self.namespace))
            .await
            .unwrap()
            .try_collect()
            .await
            .unwrap();
        subjects.iter().map(|(_, count)| *count as i64).sum()
    }

    /// [`Outbox::changesets`] of the worker's outbox.
    pub async fn worker_changesets(&self) -> Vec<Changeset> {
        self.worker_outbox().changesets().await
    }

    /// [`Outbox::row_changes`] of the worker's outbox.
    pub async fn row_changes(&self, table: &str) -> Vec<(String, RowChange)> {
        self.worker_outbox().row_changes(table).await
    }
}

/// A change's row as JSON.
pub fn row_json(change: &RowChange) -> Value {
    serde_json::from_slice(&change.row_json).unwrap()
}

pub fn op(change: &RowChange) -> ChangeOp {
    ChangeOp::try_from(change.op).unwrap()
}

// ---------------------------------------------------------------------------------------------
// attachments and the retention purge

/// The cron hooks' secret the tests give the api.
pub const CRON_SECRET: &str = "cron-secret-0123456789";

pub fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 128])
    });
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

/// `cdn.createUploadUrl` → its output (panics on an error).
pub async fn create_upload(
    system: &System,
    user: &User,
    file_name: &str,
    content_type: &str,
    size: usize,
    entry: Option<&str>,
) -> Value {
    let mut input = json!({"fileName": file_name, "contentType": content_type, "sizeBytes": size});
    if let Some(entry) = entry {
        input["journalEntryId"] = json!(entry);
    }
    system.ok(user, "cdn/createUploadUrl", input).await
}

/// PUT `body` to the presigned upload as a browser's `fetch` would: the headers it was given
/// (but `Content-Length`, which the HTTP client computes from the body) with `content_type`.
pub async fn put_upload(system: &System, upload: &Value, content_type: &str, body: Vec<u8>) -> u16 {
    let upload = &upload["upload"];
    assert_eq!(upload["method"], "PUT");
    let mut request = system.client.put(upload["url"].as_str().unwrap());
    for (name, value) in upload["headers"].as_object().unwrap() {
        if name != "content-length" && name != "content-type" {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    let response = request
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    response.status().as_u16()
}

/// Poll `cdn.get` until the attachment leaves `verifying`.
pub async fn settled_attachment(system: &System, user: &User, attachment_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let attachment = system
            .ok(user, "cdn/get", json!({"attachmentId": attachment_id}))
            .await;
        if attachment["status"] != "verifying" {
            return attachment;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never verified: {attachment}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Upload `body` declared as `content_type`, complete it and wait for the verdict.
pub async fn upload_attachment(
    system: &System,
    user: &User,
    file_name: &str,
    content_type: &str,
    body: Vec<u8>,
    entry: Option<&str>,
) -> Value {
    let created = create_upload(system, user, file_name, content_type, body.len(), entry).await;
    assert_eq!(put_upload(system, &created, content_type, body).await, 200);
    let attachment_id = created["attachment"]["attachmentId"]
        .as_str()
        .unwrap()
        .to_owned();
    let completed = system
        .ok(
            user,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert!(
        ["verifying", "ready", "rejected"].contains(&completed["status"].as_str().unwrap()),
        "{completed}"
    );
    settled_attachment(system, user, &attachment_id).await
}

/// Run the `purge-retention` cron hook (the api needs `CRON_SECRET`); its report.
pub async fn purge_retention(system: &System) -> Value {
    let response = system
        .client
        .post(format!("{}/cron/purge-retention", system.api_url))
        .bearer_auth(CRON_SECRET)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    response.json().await.unwrap()
}
