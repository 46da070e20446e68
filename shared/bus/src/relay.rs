//! The outbox relay: publishes committed outbox rows to JetStream.
//!
//! - Wakes on LISTEN/NOTIFY (the insert trigger notifies at commit), with a slow poll as a
//!   safety net for notifications lost while reconnecting.
//! - Claims rows with `FOR UPDATE SKIP LOCKED` inside a transaction held while it publishes:
//!   no cursor over ids (they commit out of order), and concurrent relays never take the
//!   same row. A row whose ordering key has an earlier unsent row is not eligible, so one
//!   key's messages go out in order even with several relays.
//! - Publishes the whole batch, waits for every JetStream ack, marks the acked rows sent.
//!   A crash between publish and commit re-publishes with the same `Nats-Msg-Id`, which the
//!   stream's duplicate window drops.
//! - While NATS is down, rows wait and the relay retries with backoff; nothing is lost.
//! - Sent rows are deleted after the retention period.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use sqlx::types::Json;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::headers;
use crate::streams::Bus;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The schema whose outbox this relay drains (the NOTIFY channel is `<schema>_outbox`).
    pub schema: String,
    pub batch_size: i64,
    /// Sent rows older than this are pruned.
    pub retention: Duration,
    /// Poll interval when no notification arrives.
    pub poll_interval: Duration,
    /// How long to wait for JetStream acks of one batch.
    pub ack_timeout: Duration,
}

impl RelayConfig {
    pub fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            batch_size: 500,
            retention: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            ack_timeout: Duration::from_secs(5),
        }
    }
}

#[derive(sqlx::FromRow)]
struct OutboxRow {
    outbox_id: Uuid,
    subject: String,
    payload: Vec<u8>,
    headers: Json<BTreeMap<String, String>>,
    created_at: chrono::DateTime<chrono::Utc>,
}

/// Start the relay on its own task; it stops when `shutdown` is cancelled.
pub fn spawn(
    bus: Bus,
    pool: PgPool,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(bus, pool, config, shutdown))
}

pub async fn run(bus: Bus, pool: PgPool, config: RelayConfig, shutdown: CancellationToken) {
    let channel = format!("{}_outbox", config.schema);
    let mut listener = None;
    let mut failures: u32 = 0;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    tracing::info!(schema = %config.schema, "outbox relay started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if listener.is_none() {
            listener = connect_listener(&pool, &channel).await;
        }
        match drain(&bus, &pool, &config).await {
            Ok(published) => {
                if failures > 0 {
                    tracing::info!(published, "outbox relay recovered");
                }
                failures = 0;
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = backoff(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "outbox relay could not publish; rows wait");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                }
            }
        }
        if last_prune.elapsed() > Duration::from_secs(600) {
            last_prune = Instant::now();
            if let Err(error) = prune(&pool, config.retention).await {
                tracing::warn!(%error, "pruning sent outbox rows failed");
            }
        }
        // Sleep until a commit notifies us, the poll interval passes, or shutdown.
        let woken = async {
            match listener.as_mut() {
                Some(active) => {
                    match tokio::time::timeout(config.poll_interval, active.recv()).await {
                        Ok(Ok(_)) | Err(_) => true,
                        Ok(Err(error)) => {
                            tracing::warn!(%error, "outbox listener lost; reconnecting");
                            false
                        }
                    }
                }
                None => {
                    tokio::time::sleep(config.poll_interval).await;
                    true
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            healthy = woken => if !healthy { listener = None; },
        }
    }
    tracing::info!(schema = %config.schema, "outbox relay stopped");
}

async fn connect_listener(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}

fn backoff(failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(6);
    Duration::from_millis(100u64 << exponent).min(Duration::from_secs(5))
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

/// Claim, publish and mark one batch. Returns (published, claimed).
async fn publish_batch(
    bus: &Bus,
    pool: &PgPool,
    config: &RelayConfig,
) -> Result<(u64, u64), crate::BusError> {
    let mut tx = pool.begin().await?;
    // Marking rows sent need not wait for its WAL flush: if a crash loses the mark, the rows
    // are published again with the same Nats-Msg-Id inside the duplicate window and dropped.
    // (The producer's transaction — state change plus outbox row — stays synchronous.)
    sqlx::query("SET LOCAL synchronous_commit = off").execute(&mut *tx).await?;
    let rows: Vec<OutboxRow> = sqlx::query_as(
        "SELECT o.outbox_id, o.subject, o.payload, o.headers, o.created_at
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
    let mut sent = Vec::with_capacity(pending.len());
    let mut ack_error = None;
    for (outbox_id, ack) in pending {
        match tokio::time::timeout(config.ack_timeout, ack).await {
            Ok(Ok(_)) if ack_error.is_none() => sent.push(outbox_id),
            Ok(Ok(_)) => {}
            Ok(Err(error)) => ack_error = ack_error.or(Some(error.to_string())),
            Err(_) => ack_error = ack_error.or(Some("publish ack timed out".to_owned())),
        }
    }
    if !sent.is_empty() {
        sqlx::query("UPDATE outbox SET sent_at = now(), publish_attempts = publish_attempts + 1 WHERE outbox_id = ANY($1)")
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

/// Delete sent rows older than `retention`, in chunks so no long lock is held.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(
            "DELETE FROM outbox WHERE outbox_id IN (
                SELECT outbox_id FROM outbox
                 WHERE sent_at IS NOT NULL AND sent_at < now() - make_interval(secs => $1)
                 LIMIT 5000)",
        )
        .bind(retention.as_secs_f64())
        .execute(pool)
        .await?
        .rows_affected();
        total += deleted;
        if deleted < 5000 {
            return Ok(total);
        }
    }
}
