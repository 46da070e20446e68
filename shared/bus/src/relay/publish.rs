//! One batch: claim the eligible rows (and their followers), publish them, delete the acked.

use std::collections::BTreeMap;

use sqlx::PgPool;

use sqlx::types::Json;

use uuid::Uuid;

use crate::headers;

use super::RelayConfig;
use crate::streams::Bus;

#[derive(sqlx::FromRow)]
struct OutboxRow {
    outbox_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: Json<BTreeMap<String, String>>,
    created_at: chrono::DateTime<chrono::Utc>,
    ordering_key: Option<String>,
    position: i64,
}

/// Publish batches until the outbox has no eligible rows. Returns how many were published.
pub async fn drain(bus: &Bus, pool: &PgPool, config: &RelayConfig) -> Result<u64, crate::BusError> {
    let mut total = 0;
    loop {
        let (published, claimed) = publish_batch(bus, pool, config).await?;
        total += published;
        if claimed < config.batch_size as u64 {
            return Ok(total);
        }
    }
}

/// Claim, publish and delete one batch. Returns (published, claimed).
pub(super) async fn publish_batch(
    bus: &Bus,
    pool: &PgPool,
    config: &RelayConfig,
) -> Result<(u64, u64), crate::BusError> {
    let mut tx = pool.begin().await?;
    // Deleting published rows need not wait for its WAL flush: if a crash loses the delete,
    // the rows come back unsent and are published again with the same Nats-Msg-Id, which the
    // stream drops inside its duplicate window (2 min; an unflushed commit is at most three
    // WAL writer delays old, and the republish follows the restart). Were Postgres down for
    // longer, the copy is one more at-least-once redelivery, which handlers absorb. The
    // producer's transaction — state change plus outbox row — stays synchronous, so no
    // acknowledged message is ever lost.
    sqlx::query("SET LOCAL synchronous_commit = off")
        .execute(&mut *tx)
        .await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(
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
    .bind(config.batch_size)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok((0, 0));
    }
    let rows = claim_followers(&mut tx, rows, config.batch_size).await?;
    let claimed = rows.len() as u64;

    // Send the whole batch, then collect the acks: one round trip's latency, not one per row.
    let mut pending = Vec::with_capacity(rows.len());
    let mut send_error = None;
    for row in &rows {
        let mut header_map = async_nats::HeaderMap::new();
        header_map.insert(headers::MESSAGE_ID, row.outbox_id.to_string().as_str());
        header_map.insert(
            headers::EMITTED_AT_MICROS,
            row.created_at.timestamp_micros().to_string().as_str(),
        );
        for (key, value) in row.headers.iter() {
            header_map.insert(key.as_str(), value.as_str());
        }
        match bus
            .jetstream()
            .publish_with_headers(
                bus.subject(&row.subject),
                header_map,
                row.payload.clone().into(),
            )
            .await
        {
            Ok(ack) => pending.push((row.outbox_id, ack)),
            Err(error) => {
                // Later rows may share an ordering key with this one; stop here.
                send_error = Some(error.to_string());
                break;
            }
        }
    }
    // One deadline for the whole batch, and the first failure ends the wait: rows after it
    // stay unsent anyway (they may share its ordering key). A timeout per ack, awaited one
    // after another, held a batch's claim for rows × `ack_timeout` while NATS was down, so
    // the failure was recorded minutes late.
    let deadline = tokio::time::Instant::now() + config.ack_timeout;
    let mut sent = Vec::with_capacity(pending.len());
    let mut ack_error = None;
    for (outbox_id, ack) in pending {
        match tokio::time::timeout_at(deadline, ack).await {
            Ok(Ok(_)) => sent.push(outbox_id),
            Ok(Err(error)) => {
                ack_error = Some(error.to_string());
                break;
            }
            Err(_) => {
                ack_error = Some("publish ack timed out".to_owned());
                break;
            }
        }
    }
    if !sent.is_empty() {
        // Deleted, not marked: nothing reads a published row again (the stream has it).
        sqlx::query("DELETE FROM outbox WHERE outbox_id = ANY($1)")
            .bind(&sent)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    metrics::counter!("bus_outbox_published_total").increment(sent.len() as u64);
    match send_error.or(ack_error) {
        Some(error) => {
            record_failure(pool, &rows, &sent, &error).await;
            Err(crate::BusError::JetStream {
                operation: "relaying outbox",
                message: error,
            })
        }
        None => Ok((sent.len() as u64, claimed)),
    }
}

/// Add to a batch the unsent rows that follow its rows in their ordering keys, in order.
///
/// Without this a batch would carry one row per key, and a busy key (one team writing fast)
/// would drain at one row per round trip while every pass rescans its backlog. The batch
/// holds the lock on each key's earliest unsent row, so no other relay can claim that key's
/// followers: they stay ineligible for it until the batch commits.
async fn claim_followers(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    heads: Vec<OutboxRow>,
    batch_size: i64,
) -> Result<Vec<OutboxRow>, sqlx::Error> {
    let room = batch_size - heads.len() as i64;
    let keys: Vec<&str> = heads
        .iter()
        .filter_map(|row| row.ordering_key.as_deref())
        .collect();
    if room <= 0 || keys.is_empty() {
        return Ok(heads);
    }
    let head_ids: Vec<Uuid> = heads.iter().map(|row| row.outbox_id).collect();
    // Ordered by position and cut by LIMIT, so each key gets a gap-free prefix of its
    // backlog. No row here can be locked by another relay (see above), so SKIP LOCKED
    // never skips one; it only keeps this query from waiting.
    let followers: Vec<OutboxRow> = sqlx::query_as(
        "SELECT o.outbox_id, o.subject, o.payload, o.headers, o.created_at, o.ordering_key, o.position
           FROM outbox o
          WHERE o.sent_at IS NULL
            AND o.ordering_key = ANY($1)
            AND o.outbox_id <> ALL($2)
          ORDER BY o.position
          LIMIT $3
          FOR UPDATE SKIP LOCKED",
    )
    .bind(&keys)
    .bind(&head_ids)
    .bind(room)
    .fetch_all(&mut **tx)
    .await?;
    if followers.is_empty() {
        return Ok(heads);
    }
    let mut rows = heads;
    rows.extend(followers);
    // Publish in position order: within a key that is the order of the outbox.
    rows.sort_by_key(|row| row.position);
    Ok(rows)
}

async fn record_failure(pool: &PgPool, rows: &[OutboxRow], sent: &[Uuid], error: &str) {
    let failed: Vec<Uuid> = rows
        .iter()
        .map(|row| row.outbox_id)
        .filter(|id| !sent.contains(id))
        .collect();
    let _ = sqlx::query(
        "UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2 WHERE outbox_id = ANY($1)",
    )
    .bind(&failed)
    .bind(error)
    .execute(pool)
    .await;
}
