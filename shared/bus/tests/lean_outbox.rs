//! The lean outbox: the relay deletes what it publishes, writes many messages in one
//! statement, and stays correct beside the code of the previous release (a rolling deploy:
//! an old api's INSERT, an old relay that marks rows `sent_at` instead of deleting them).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, HashSet};
use std::time::{Duration, Instant};

use bus::headers;
use bus::outbox::OutboxBatch;
use bus::relay::{self, RelayConfig};
use common::{Fixture, Recorder, probe, sequences_by_key};
use messages::definition::BusMessage;
use messages::journal::v1::BusProbe;
use prost::Message;
use sqlx::PgPool;
use sqlx::types::Json;
use test_support::{eventually, nats_url};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

const WAIT: Duration = Duration::from_secs(30);

/// The api's INSERT of the release before the lean outbox, copied verbatim: a rolling deploy
/// runs it beside the new relay.
async fn old_emit(pool: &PgPool, message: &BusProbe) -> Uuid {
    let outbox_id = Uuid::now_v7();
    let key = (!message.aggregate_key.is_empty()).then_some(message.aggregate_key.as_str());
    let header_map: BTreeMap<String, String> =
        BTreeMap::from([(headers::MESSAGE_NAME.to_owned(), BusProbe::NAME.to_owned())]);
    sqlx::query(
        "INSERT INTO outbox (outbox_id, subject, payload, headers, ordering_key) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(outbox_id)
    .bind(BusProbe::subject())
    .bind(message.encode_to_vec())
    .bind(Json(header_map))
    .bind(key)
    .execute(pool)
    .await
    .unwrap();
    outbox_id
}

#[derive(sqlx::FromRow)]
struct OldRow {
    outbox_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: Json<BTreeMap<String, String>>,
}

/// One pass of the previous release's relay, its claim-and-mark SQL copied verbatim: claim
/// unsent heads, publish, wait for the acks, mark the rows `sent_at`. Returns how many rows
/// it published (claimed = published here: the test's NATS does not fail).
async fn old_relay_pass(fixture: &Fixture, batch_size: i64) -> u64 {
    let mut tx = fixture.pool.begin().await.unwrap();
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await
        .unwrap();
    let rows: Vec<OldRow> = sqlx::query_as(
        "SELECT o.outbox_id, o.subject, o.payload, o.headers, o.created_at, o.ordering_key, o.position
           FROM outbox o
          WHERE o.sent_at IS NULL
            AND (o.ordering_key IS NULL OR NOT EXISTS (
                   SELECT 1 FROM outbox earlier
                    WHERE earlier.ordering_key = o.ordering_key
                      AND earlier.sent_at IS NULL
                      AND earlier.position < o.position))
          ORDER BY o.position
          LIMIT $1
          FOR UPDATE SKIP LOCKED",
    )
    .bind(batch_size)
    .fetch_all(&mut *tx)
    .await
    .unwrap();
    let mut acks = Vec::new();
    for row in &rows {
        let mut header_map = async_nats::HeaderMap::new();
        header_map.insert(headers::MESSAGE_ID, row.outbox_id.to_string().as_str());
        for (key, value) in row.headers.iter() {
            header_map.insert(key.as_str(), value.as_str());
        }
        acks.push(
            fixture
                .bus
                .jetstream()
                .publish_with_headers(
                    fixture.bus.subject(&row.subject),
                    header_map,
                    row.payload.clone().into(),
                )
                .await
                .unwrap(),
        );
    }
    for ack in acks {
        ack.await.unwrap();
    }
    let sent: Vec<Uuid> = rows.iter().map(|row| row.outbox_id).collect();
    sqlx::query("UPDATE outbox SET sent_at = now(), publish_attempts = publish_attempts + 1 WHERE outbox_id = ANY($1)")
        .bind(&sent)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.commit().await.unwrap();
    sent.len() as u64
}

async fn outbox_rows(pool: &PgPool) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(pool)
        .await
        .unwrap()
}

/// Every message in the TASKS stream (no consumer runs in these tests, so the work queue
/// keeps them), in stream order: (Nats-Msg-Id, probe).
async fn stream_probes(fixture: &Fixture) -> Vec<(String, BusProbe)> {
    let stream = fixture
        .bus
        .jetstream()
        .get_stream(fixture.bus.stream_name("TASKS"))
        .await
        .unwrap();
    let state = stream.get_info().await.unwrap().state;
    let mut probes = Vec::new();
    if state.messages == 0 {
        return probes;
    }
    for sequence in state.first_sequence..=state.last_sequence {
        let message = stream.get_raw_message(sequence).await.unwrap();
        let message_id = message
            .headers
            .get(headers::MESSAGE_ID)
            .map(|value| value.as_str().to_owned())
            .unwrap();
        probes.push((
            message_id,
            BusProbe::decode(message.payload.as_ref()).unwrap(),
        ));
    }
    assert_eq!(probes.len() as u64, state.messages);
    probes
}

#[tokio::test]
async fn published_rows_are_deleted_and_each_message_arrives_once() {
    let fixture = Fixture::new(&nats_url()).await;
    let (shutdown, recorder, router) = fixture.record_probes(Recorder::default(), None);
    let keys = ["a", "b", ""];
    fixture
        .emit((0..30).map(|sequence| probe(sequence, keys[sequence as usize % 3])))
        .await;
    let (depth, oldest_seconds) = relay::outbox_depth(&fixture.pool).await.unwrap();
    assert_eq!(depth, 30);
    assert!(oldest_seconds > 0.0, "{oldest_seconds}");

    let published = relay::drain(&fixture.bus, &fixture.pool, &RelayConfig::new("worker"))
        .await
        .unwrap();
    assert_eq!(published, 30);
    assert_eq!(
        outbox_rows(&fixture.pool).await,
        0,
        "published rows are deleted, not marked"
    );
    assert_eq!(relay::outbox_depth(&fixture.pool).await.unwrap(), (0, 0.0));

    assert!(eventually(WAIT, || async { recorder.count() >= 30 }).await);
    fixture.wait_settled().await;
    let ids: HashSet<String> = recorder
        .deliveries
        .lock()
        .unwrap()
        .iter()
        .map(|(_, meta, _)| meta.message_id.clone())
        .collect();
    assert_eq!(recorder.count(), 30, "each message handled exactly once");
    assert_eq!(ids.len(), 30);
    fixture.stop(shutdown, router).await;
}

#[tokio::test]
async fn rows_from_the_old_insert_are_published_once_and_rows_an_old_relay_marked_never() {
    let fixture = Fixture::new(&nats_url()).await;
    // An old relay published and marked this one before the deploy.
    let marked = old_emit(&fixture.pool, &probe(-1, "k")).await;
    sqlx::query("UPDATE outbox SET sent_at = now(), publish_attempts = publish_attempts + 1 WHERE outbox_id = $1")
        .bind(marked)
        .execute(&fixture.pool)
        .await
        .unwrap();
    // An old api keeps writing with its own INSERT.
    let mut written = Vec::new();
    for sequence in 0..20 {
        written.push(
            old_emit(
                &fixture.pool,
                &probe(sequence, if sequence % 2 == 0 { "k" } else { "" }),
            )
            .await,
        );
    }

    let published = relay::drain(&fixture.bus, &fixture.pool, &RelayConfig::new("worker"))
        .await
        .unwrap();
    assert_eq!(published, 20);
    let in_stream = stream_probes(&fixture).await;
    let stream_ids: Vec<String> = in_stream.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(
        stream_ids.iter().collect::<HashSet<_>>(),
        written
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .iter()
            .collect::<HashSet<_>>(),
        "each old-insert row published exactly once, the marked row not at all"
    );
    assert_eq!(stream_ids.len(), 20);
    assert_eq!(
        sequences_by_key(in_stream.iter().map(|(_, probe)| probe))["k"],
        (0..20).step_by(2).collect::<Vec<_>>(),
        "a key's order holds for old-insert rows too"
    );
    // Only the marked row is left, and retention still prunes it.
    assert_eq!(outbox_rows(&fixture.pool).await, 1);
    sqlx::query("UPDATE outbox SET sent_at = now() - interval '2 days'")
        .execute(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(
        relay::prune(&fixture.pool, Duration::from_secs(24 * 3600))
            .await
            .unwrap(),
        1
    );
    assert_eq!(outbox_rows(&fixture.pool).await, 0);
    fixture.cleanup().await;
}

#[tokio::test]
async fn an_old_relay_beside_the_new_one_publishes_each_message_once_in_total_and_in_order() {
    let fixture = Fixture::new(&nats_url()).await;
    const ROWS: i64 = 400;
    let keys = ["a", "b", "c", "d", "e", "f", "g", ""];
    // Half the backlog from the old api's INSERT, half from the new emit.
    for sequence in 0..ROWS {
        let message = probe(sequence, keys[sequence as usize % keys.len()]);
        if sequence % 2 == 0 {
            old_emit(&fixture.pool, &message).await;
        } else {
            fixture.emit([message]).await;
        }
    }
    let mut config = RelayConfig::new("worker");
    config.batch_size = 15;

    let deadline = Instant::now() + WAIT;
    let new_relay = async {
        let mut published = 0;
        while fixture.unsent().await > 0 {
            assert!(Instant::now() < deadline, "the new relay never finished");
            published += relay::drain(&fixture.bus, &fixture.pool, &config)
                .await
                .unwrap();
        }
        published
    };
    let old_relay = async {
        let mut published = 0;
        while fixture.unsent().await > 0 {
            assert!(Instant::now() < deadline, "the old relay never finished");
            published += old_relay_pass(&fixture, 15).await;
            tokio::task::yield_now().await;
        }
        published
    };
    let (by_new, by_old) = tokio::join!(new_relay, old_relay);
    assert_eq!(
        by_new + by_old,
        ROWS as u64,
        "each row published once in total (new {by_new}, old {by_old})"
    );
    assert!(
        by_new > 0 && by_old > 0,
        "both relays took part: new {by_new}, old {by_old}"
    );

    let in_stream = stream_probes(&fixture).await;
    assert_eq!(
        in_stream.len() as i64,
        ROWS,
        "the stream holds each message once"
    );
    assert_eq!(
        in_stream
            .iter()
            .map(|(id, _)| id)
            .collect::<HashSet<_>>()
            .len() as i64,
        ROWS
    );
    for (key, sequences) in sequences_by_key(in_stream.iter().map(|(_, probe)| probe)) {
        if key.is_empty() {
            continue;
        }
        let mut sorted = sequences.clone();
        sorted.sort_unstable();
        assert_eq!(sequences, sorted, "order kept for key {key}");
    }
    // What is left is only what the old relay marked; the new relay's rows are gone.
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NOT NULL")
        .fetch_one(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(left as u64, by_old);
    assert_eq!(outbox_rows(&fixture.pool).await as u64, by_old);
    fixture.cleanup().await;
}

#[tokio::test]
async fn two_relays_keep_each_keys_order() {
    let fixture = Fixture::new(&nats_url()).await;
    let shutdown = CancellationToken::new();
    let relays: Vec<_> = (0..2)
        .map(|_| {
            let mut config = RelayConfig::new("worker");
            config.batch_size = 10;
            relay::spawn(
                fixture.bus.clone(),
                fixture.pool.clone(),
                config,
                shutdown.clone(),
            )
        })
        .collect();
    let keys = ["a", "b", "c", "d", "e"];
    // Written while the relays run, one transaction each.
    fixture
        .emit((0..40).flat_map(|sequence| keys.iter().map(move |key| probe(sequence, key))))
        .await;
    assert!(
        eventually(WAIT, || async { outbox_rows(&fixture.pool).await == 0 }).await,
        "the relays never emptied the outbox"
    );
    shutdown.cancel();
    for relay in relays {
        relay.await.unwrap();
    }
    let in_stream = stream_probes(&fixture).await;
    assert_eq!(in_stream.len(), 200);
    for (key, sequences) in sequences_by_key(in_stream.iter().map(|(_, probe)| probe)) {
        assert_eq!(
            sequences,
            (0..40).collect::<Vec<_>>(),
            "order kept for key {key}"
        );
    }
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_batch_writes_its_rows_in_one_statement_and_they_leave_in_push_order() {
    let fixture = Fixture::new(&nats_url()).await;
    // Count INSERT statements on the outbox (a statement trigger fires once per statement).
    for statement in [
        "CREATE TABLE outbox_insert_statements (counted integer)",
        "CREATE FUNCTION count_outbox_insert() RETURNS trigger LANGUAGE plpgsql AS $$
         BEGIN INSERT INTO outbox_insert_statements VALUES (1); RETURN NULL; END $$",
        "CREATE TRIGGER count_outbox_insert AFTER INSERT ON outbox
         FOR EACH STATEMENT EXECUTE FUNCTION count_outbox_insert()",
    ] {
        sqlx::query(statement).execute(&fixture.pool).await.unwrap();
    }
    let keys = ["a", "b", ""];
    let mut batch = OutboxBatch::new();
    let mut pushed = Vec::new();
    for sequence in 0..30 {
        let message = probe(sequence, keys[sequence as usize % 3]);
        pushed.push(if message.aggregate_key.is_empty() {
            batch.push(&message)
        } else {
            batch.push_ordered(&message, &message.aggregate_key)
        });
    }
    assert_eq!(batch.len(), 30);
    let mut tx = fixture.pool.begin().await.unwrap();
    let written = batch.write(&mut tx).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(written, pushed);

    let statements: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox_insert_statements")
        .fetch_one(&fixture.pool)
        .await
        .unwrap();
    assert_eq!(statements, 1, "30 rows, one INSERT");
    let by_position: Vec<Uuid> =
        sqlx::query_scalar("SELECT outbox_id FROM outbox ORDER BY position")
            .fetch_all(&fixture.pool)
            .await
            .unwrap();
    assert_eq!(by_position, pushed, "positions follow push order");
    let names: Vec<String> = sqlx::query_scalar("SELECT headers->>'Bus-Message' FROM outbox")
        .fetch_all(&fixture.pool)
        .await
        .unwrap();
    assert!(names.iter().all(|name| name == BusProbe::NAME), "{names:?}");

    let published = relay::drain(&fixture.bus, &fixture.pool, &RelayConfig::new("worker"))
        .await
        .unwrap();
    assert_eq!(published, 30);
    let in_stream = stream_probes(&fixture).await;
    let by_key = sequences_by_key(in_stream.iter().map(|(_, probe)| probe));
    assert_eq!(by_key["a"], (0..30).step_by(3).collect::<Vec<_>>());
    assert_eq!(by_key["b"], (1..30).step_by(3).collect::<Vec<_>>());
    assert_eq!(
        in_stream
            .iter()
            .map(|(id, _)| id.clone())
            .collect::<Vec<_>>(),
        pushed.iter().map(Uuid::to_string).collect::<Vec<_>>(),
        "one relay publishes the batch in push order"
    );
    // An empty batch writes nothing.
    let mut tx = fixture.pool.begin().await.unwrap();
    assert!(OutboxBatch::new().write(&mut tx).await.unwrap().is_empty());
    tx.commit().await.unwrap();
    fixture.cleanup().await;
}
