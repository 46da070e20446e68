//! Probes for the recovery bounds: timed frames, changesets published straight into
//! CHANGES, and when a condition first held.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::json;
use test_support::eventually;
use tokio::task::JoinHandle;

use crate::common::*;
use crate::fixtures::WAIT;

// Recovery bounds (issue 17): how soon live sync flows again once NATS or Postgres is back,
// measured from the moment the server accepts connections again. The probe changesets are
// published straight into CHANGES from the test, as the api's relay publishes them, so the
// bound is the streamer's own (the api's relay reconnects on its own schedule).

/// After NATS returns: live `change` frames, the read model and `session.revoked`.
pub(crate) const AFTER_NATS: Duration = Duration::from_secs(2);
/// After Postgres returns: the read model.
pub(crate) const AFTER_POSTGRES: Duration = Duration::from_secs(1);

/// Every event of one SSE connection, with when it arrived.
pub(crate) struct Frames {
    pub(crate) events: Arc<Mutex<Vec<(Instant, Event)>>>,
    pub(crate) task: JoinHandle<()>,
}

impl Frames {
    pub(crate) async fn open(base_url: &str, token: &str) -> Self {
        let mut sse = open_stream(base_url, token, None).await;
        assert_eq!(sse.status, 200, "stream refused: {:?}", sse.error);
        let events = Arc::new(Mutex::new(Vec::new()));
        let task = tokio::spawn({
            let events = Arc::clone(&events);
            async move {
                while let Some(event) = sse.next(Duration::from_secs(120)).await {
                    events.lock().unwrap().push((Instant::now(), event));
                }
            }
        });
        let frames = Self { events, task };
        assert!(
            eventually(WAIT, || async { frames.caught_up() }).await,
            "the stream never caught up"
        );
        frames
    }

    pub(crate) fn caught_up(&self) -> bool {
        self.events
            .lock()
            .unwrap()
            .iter()
            .any(|(_, event)| event.data["type"] == "delta" && event.data["isLastChunk"] == true)
    }

    /// When the `change` frame carrying row `row_id` arrived.
    pub(crate) fn change_of(&self, row_id: &str) -> Option<Instant> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, event)| {
                event.data["type"] == "change"
                    && event.data["changes"]
                        .as_array()
                        .is_some_and(|changes| changes.iter().any(|c| c["rowId"] == row_id))
            })
            .map(|(at, _)| *at)
    }

    /// When the stream was closed, and why.
    pub(crate) fn closed(&self) -> Option<(Instant, String)> {
        self.events
            .lock()
            .unwrap()
            .iter()
            .find(|(_, event)| event.data["type"] == "closed")
            .map(|(at, event)| (*at, event.data["reason"].to_string()))
    }
}

impl Drop for Frames {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Publish a journal entry change for `scope` into CHANGES on `nats_url`, as the api's relay
/// does (a new connection, retried while the server is still starting); returns its sequence.
pub(crate) async fn publish_change(
    nats_url: &str,
    namespace: &str,
    scope: &str,
    row_id: &str,
) -> u64 {
    let row = json!({
        "journalEntryId": row_id,
        "title": "probe",
        "content": "written after the restart",
        "version": 1,
        "deletedAt": null,
    });
    let changeset = messages::sync::v1::Changeset {
        scope: scope.to_owned(),
        changes: vec![messages::sync::v1::RowChange {
            table: "journal_entries".to_owned(),
            op: messages::sync::v1::ChangeOp::Insert as i32,
            row_id: row_id.to_owned(),
            version: 1,
            row_json: row.to_string().into_bytes(),
        }],
        written_at_ms: chrono::Utc::now().timestamp_millis(),
        ..Default::default()
    };
    let payload = prost::Message::encode_to_vec(&changeset);
    let subject = format!("{namespace}.changes.{scope}");
    publish_acked(nats_url, subject, payload).await
}

/// Publish `payload` to a stream's subject and wait for JetStream's ack; returns the sequence.
pub(crate) async fn publish_acked(nats_url: &str, subject: String, payload: Vec<u8>) -> u64 {
    let deadline = Instant::now() + WAIT;
    loop {
        let attempt = async {
            let client = async_nats::connect(nats_url).await.ok()?;
            let jetstream = async_nats::jetstream::new(client);
            let ack = jetstream
                .publish(subject.clone(), payload.clone().into())
                .await
                .ok()?;
            ack.await.ok().map(|ack| ack.sequence)
        };
        if let Ok(Some(seq)) = tokio::time::timeout(Duration::from_secs(1), attempt).await {
            return seq;
        }
        assert!(Instant::now() < deadline, "JetStream never acked {subject}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long after `since` `condition` first held (polled every 20 ms, for at most `WAIT`).
pub(crate) async fn first_true_after<F, Fut>(since: Instant, mut condition: F) -> Option<Duration>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    while since.elapsed() < WAIT {
        if condition().await {
            return Some(since.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    None
}

pub(crate) async fn watermark(pool: &sqlx::PgPool) -> u64 {
    let watermark: Option<i64> =
        sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
            .fetch_optional(pool)
            .await
            .unwrap_or(None);
    watermark.unwrap_or(0) as u64
}

pub(crate) fn session_of(token: &str) -> uuid::Uuid {
    session_id_of(token).uuid()
}

pub(crate) fn session_id_of(token: &str) -> domain::ids::SessionId {
    let key = sync_protocol::TokenKey::new(secrecy::SecretString::from(
        sync_protocol::DEVELOPMENT_SECRET,
    ));
    key.verify(token, chrono::Utc::now().timestamp_millis())
        .expect("the api's sync token verifies")
        .session_id
}
