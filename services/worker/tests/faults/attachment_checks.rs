//! Attachment checks through an S3 outage: verified once S3 is back, or by a redrive.

use std::io::Cursor;
use std::time::{Duration, Instant};

use messages::journal::v1::AttachmentVerified;
use prost::Message;
use serde_json::{Value, json};
use test_support::{eventually, free_port};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

use crate::common::{System, User};
use crate::fixtures::{count, deliveries};

const VERIFY_CONSUMER: &str = "media--verify_attachment";

/// A TCP gate in front of the S3 server on a port of its own: open, it forwards every
/// connection to the server; closed, nothing listens there and the connections it carried
/// are cut.
struct Gate {
    port: u16,
    upstream: String,
    serving: Option<JoinHandle<()>>,
}

impl Gate {
    fn new() -> Self {
        let endpoint = test_support::s3_endpoint();
        let upstream = endpoint
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        Self {
            port: free_port(),
            upstream,
            serving: None,
        }
    }

    fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    async fn open(&mut self) {
        assert!(self.serving.is_none(), "the gate is open already");
        let listener = TcpListener::bind(("127.0.0.1", self.port)).await.unwrap();
        let upstream = self.upstream.clone();
        self.serving = Some(tokio::spawn(async move {
            // Dropped with this task when the gate closes: every connection is cut.
            let mut connections = tokio::task::JoinSet::new();
            loop {
                let Ok((mut inbound, _)) = listener.accept().await else {
                    continue;
                };
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut outbound) = TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                while connections.try_join_next().is_some() {}
            }
        }));
    }

    async fn close(&mut self) {
        let serving = self.serving.take().expect("the gate is closed already");
        serving.abort();
        let _ = serving.await;
        let port = self.port;
        let closed = eventually(Duration::from_secs(30), || async move {
            TcpStream::connect(("127.0.0.1", port)).await.is_err()
        })
        .await;
        assert!(closed, "the gate's port still answers");
    }
}

/// Wait until the attachment check has been delivered `at_least` times — or has stopped
/// being retried because a verdict was recorded (which the caller's checks then report).
async fn wait_attempts(system: &System, user: &User, attachment_id: &str, at_least: u64) {
    let reached = eventually(Duration::from_secs(40), || async {
        deliveries(system, VERIFY_CONSUMER).await >= at_least
            || attachment(system, user, attachment_id).await["status"] != "verifying"
    })
    .await;
    assert!(
        reached,
        "{} deliveries, expected {at_least}",
        deliveries(system, VERIFY_CONSUMER).await
    );
}

async fn delete_bucket(system: &System) {
    let client = system.bucket.store().client();
    client
        .delete_bucket()
        .bucket(system.bucket.name())
        .send()
        .await
        .unwrap();
}

async fn create_bucket(system: &System) {
    system.bucket.store().ensure_bucket(true).await.unwrap();
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let image = image::RgbImage::from_fn(width, height, |x, y| {
        image::Rgb([(x % 256) as u8, (y % 256) as u8, 77])
    });
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), image::ImageFormat::Png)
        .unwrap();
    bytes
}

/// `cdn.createUploadUrl` and the PUT of `body` to its presigned URL: the attachment's id.
async fn uploaded(system: &System, user: &User, body: &[u8]) -> String {
    let created = system
        .ok(
            user,
            "cdn/createUploadUrl",
            json!({"fileName": "photo.png", "contentType": "image/png", "sizeBytes": body.len()}),
        )
        .await;
    let upload = &created["upload"];
    let mut request = system.client.put(upload["url"].as_str().unwrap());
    for (name, value) in upload["headers"].as_object().unwrap() {
        if name != "content-length" {
            request = request.header(name, value.as_str().unwrap());
        }
    }
    let response = request.body(body.to_vec()).send().await.unwrap();
    assert_eq!(response.status(), 200);
    created["attachment"]["attachmentId"]
        .as_str()
        .unwrap()
        .to_owned()
}

async fn attachment(system: &System, user: &User, attachment_id: &str) -> Value {
    system
        .ok(user, "cdn/get", json!({"attachmentId": attachment_id}))
        .await
}

/// While the worker cannot check it: still `verifying`, nothing served, no verdict, nothing
/// recorded as done, no verified copy or thumbnail.
async fn assert_unverified(system: &System, user: &User, attachment_id: &str) {
    assert_eq!(
        attachment(system, user, attachment_id).await["status"],
        "verifying"
    );
    let (status, error) = system
        .call(
            user,
            "cdn/getDownloadUrl",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("ATTACHMENT_NOT_READY")),
        "{error}"
    );
    assert_eq!(
        system
            .worker_emitted("EVENTS", "events.attachment.verified")
            .await
            .len(),
        0
    );
    assert_eq!(
        count(
            &system.worker_pool,
            "SELECT count(*) FROM processed_messages WHERE handler = 'media--verify_attachment'"
        )
        .await,
        0
    );
}

/// The single verdict the worker emitted.
async fn verdicts(system: &System) -> Vec<AttachmentVerified> {
    let payloads: Vec<Vec<u8>> = system
        .worker_emitted("EVENTS", "events.attachment.verified")
        .await
        .into_iter()
        .map(|message| message.payload)
        .collect();
    payloads
        .iter()
        .map(|payload| AttachmentVerified::decode(payload.as_slice()).unwrap())
        .collect()
}

async fn wait_ready(system: &System, user: &User, attachment_id: &str, within: Duration) -> Value {
    let deadline = Instant::now() + within;
    loop {
        let current = attachment(system, user, attachment_id).await;
        if current["status"] != "verifying" {
            return current;
        }
        assert!(Instant::now() < deadline, "never verified: {current}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// A ready attachment's download serves exactly `original`; the bucket holds the verified
/// copy and the thumbnail only.
async fn assert_served(system: &System, user: &User, attachment_id: &str, original: &[u8]) {
    let link = system
        .ok(
            user,
            "cdn/getDownloadUrl",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    let response = system
        .client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.bytes().await.unwrap().as_ref(), original);
    assert_eq!(
        system.bucket.keys().await,
        vec![
            format!("thumbnails/{attachment_id}.png"),
            format!("verified/{}/{attachment_id}", user.user_id)
        ]
    );
}

/// S3 unreachable, then reachable but without the bucket (the server's `NoSuchBucket` and
/// 404s), then back with the upload: the attachment stays `verifying` and unserved through
/// both failures — a 404 from a missing bucket is not taken for a missing upload — and is
/// verified once, from the original bytes, when S3 is back.
#[tokio::test]
async fn an_attachment_is_verified_once_s3_is_back_and_never_rejected_for_its_outage() {
    let mut gate = Gate::new();
    gate.open().await;
    let endpoint = gate.endpoint();
    let system = System::start_with(|config| config.s3.endpoint = endpoint).await;
    let ada = system.login("ada@example.com").await;
    let original = png(300, 200);
    let attachment_id = uploaded(&system, &ada, &original).await;
    let upload_key = format!("attachments/{}/{attachment_id}", ada.user_id);

    // The worker's S3 goes away; the api's still answers.
    gate.close().await;
    let completed = system
        .ok(
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!(completed["status"], "verifying");
    // The first attempt failed: the task is delivered again.
    wait_attempts(&system, &ada, &attachment_id, 2).await;
    assert_unverified(&system, &ada, &attachment_id).await;

    // Now the worker reaches the server, whose bucket is gone (changed behind the closed
    // gate, so no attempt sees it half done).
    let store = system.bucket.store();
    store.delete(&upload_key).await.unwrap();
    delete_bucket(&system).await;
    gate.open().await;
    // An attempt delivered after that has failed: a later one is delivered.
    let seen = deliveries(&system, VERIFY_CONSUMER).await;
    wait_attempts(&system, &ada, &attachment_id, seen + 2).await;
    assert_unverified(&system, &ada, &attachment_id).await;
    assert_eq!(
        count(&system.worker_pool, "SELECT count(*) FROM dead_letters").await,
        0
    );

    // S3 is back as it was (restored behind the closed gate).
    gate.close().await;
    create_bucket(&system).await;
    store
        .put_bytes(&upload_key, original.clone(), "image/png")
        .await
        .unwrap();
    gate.open().await;
    let ready = wait_ready(&system, &ada, &attachment_id, Duration::from_secs(60)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["hasThumbnail"], true, "{ready}");
    assert_served(&system, &ada, &attachment_id, &original).await;
    let verdicts = verdicts(&system).await;
    assert_eq!(verdicts.len(), 1, "{verdicts:?}");
    assert!(verdicts[0].accepted, "{verdicts:?}");
    assert_eq!(
        count(&system.worker_pool, "SELECT count(*) FROM dead_letters").await,
        0
    );
    system.stop().await;
}

/// S3 unreachable through the whole retry budget (six attempts, 2 s doubling): the task is
/// dead-lettered with the storage error, the attachment stays `verifying` and unserved (the
/// abandoned-uploads job expires it later); S3 back, an operator's re-drive verifies it once.
#[tokio::test]
async fn an_attachment_check_dead_lettered_by_an_outage_is_verified_by_a_redrive() {
    let mut gate = Gate::new();
    gate.open().await;
    let endpoint = gate.endpoint();
    let system = System::start_with(|config| config.s3.endpoint = endpoint).await;
    let ada = system.login("ada@example.com").await;
    let original = png(120, 90);
    let attachment_id = uploaded(&system, &ada, &original).await;

    gate.close().await;
    system
        .ok(
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    let dead = eventually(Duration::from_secs(180), || async {
        count(&system.worker_pool, "SELECT count(*) FROM dead_letters").await > 0
    })
    .await;
    assert!(dead, "never dead-lettered");
    let (handler, attempts, last_error): (String, i32, String) =
        sqlx::query_as("SELECT handler, attempts, last_error FROM dead_letters")
            .fetch_one(&system.worker_pool)
            .await
            .unwrap();
    assert_eq!(handler, VERIFY_CONSUMER);
    assert_eq!(attempts, 6, "the first attempt and five retries");
    assert!(
        last_error.starts_with("object storage "),
        "the storage failure, named: {last_error}"
    );
    assert_eq!(deliveries(&system, VERIFY_CONSUMER).await, 6);
    assert_unverified(&system, &ada, &attachment_id).await;

    gate.open().await;
    let store = bus::dead_letter::DeadLetterStore::new(system.worker_pool.clone());
    assert_eq!(store.request_redrive(None).await.unwrap(), 1);
    let ready = wait_ready(&system, &ada, &attachment_id, Duration::from_secs(60)).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_served(&system, &ada, &attachment_id, &original).await;
    assert_eq!(verdicts(&system).await.len(), 1);
    let redriven = eventually(Duration::from_secs(30), || async {
        count(
            &system.worker_pool,
            "SELECT count(*) FROM dead_letters WHERE redriven_at IS NOT NULL",
        )
        .await
            == 1
    })
    .await;
    assert!(redriven, "the dead letter is not marked re-driven");
    system.stop().await;
}
