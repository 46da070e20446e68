//! The WAL relay: peek the slot, publish in commit order, advance past what was acked.

use std::sync::LazyLock;
use std::time::Duration;

use prost::Message;
use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::WalOutboxConfig;
use super::WalOutboxMessage;
use super::slot::{self, PeekError};
use crate::BusError;
use crate::headers;
use crate::reattach;
use crate::relay::RECHECK_DELAYS;
use crate::streams::Bus;

/// Messages this process has emitted into the WAL, ever: wakes its WAL relays (see
/// `crate::relay::wake` for why not NOTIFY).
static EMITTED: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));

/// Announce `messages` emitted into the WAL by a transaction of this process.
pub(crate) fn emitted(messages: usize) {
    if messages > 0 {
        EMITTED.send_modify(|emitted| *emitted = emitted.saturating_add(messages as u64));
    }
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Messages published (acked by JetStream).
    pub published: u64,
    /// Transactions the slot moved past.
    pub transactions: u64,
    /// Another replica's relay held the slot: nothing was read.
    pub busy: bool,
    /// It stopped before a transaction that committed after an unsent row of the table
    /// outbox (written by an earlier release): that row goes first.
    pub held_back: bool,
}

/// One pass over the slot. Holds the slot's advisory lock for the whole pass (in a
/// transaction), so replicas take turns and never publish the same message concurrently.
pub async fn publish_pass(
    bus: &Bus,
    pool: &PgPool,
    config: &WalOutboxConfig,
) -> Result<Pass, BusError> {
    let mut tx = pool.begin().await?;
    let locked: bool = sqlx::query_scalar("SELECT pg_try_advisory_xact_lock(hashtext($1))")
        .bind(format!("bus.wal_outbox.{}", config.slot))
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(Pass {
            busy: true,
            ..Pass::default()
        });
    }
    let peeked = match slot::peek(&mut tx, config).await {
        Ok(peeked) => peeked,
        Err(PeekError::Postgres(error)) => return Err(error.into()),
        Err(PeekError::Decode(error)) => {
            return Err(BusError::Encode(format!("slot {}: {error}", config.slot)));
        }
    };
    if peeked.transactions.is_empty() {
        // Nothing committed with a message since the slot's position: move it up to the
        // flushed WAL so it does not hold back what other transactions wrote.
        slot::advance(&mut tx, config, peeked.flushed_before).await?;
        tx.commit().await?;
        return Ok(Pass::default());
    }

    // A rolling deploy: rows an earlier release wrote to the table outbox go out before the
    // WAL messages of transactions that committed after them (one key's messages may be in
    // both); the table relay publishes them within milliseconds. Usually the table is empty.
    let oldest_unsent: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT min(created_at) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&mut *tx)
            .await?;
    let publishable = match oldest_unsent {
        None => peeked.transactions.len(),
        Some(oldest) => peeked
            .transactions
            .iter()
            .take_while(|transaction| transaction.committed_at_micros < oldest.timestamp_micros())
            .count(),
    };
    let held_back = publishable < peeked.transactions.len();
    let transactions = &peeked.transactions[..publishable];

    // Send everything, then collect the acks under one deadline (as the table relay does).
    let mut pending = Vec::new();
    // The transaction a send failed in: the slot stays before it.
    let mut failed_at = None;
    let mut failure = None;
    'send: for (index, transaction) in transactions.iter().enumerate() {
        for content in &transaction.messages {
            let Some((outbox_id, message)) = decode_message(content) else {
                // Not one of ours though under our prefix: it cannot be published, and
                // stopping here would hold every later message back for good.
                tracing::error!(slot = %config.slot, "skipping an undecodable WAL outbox message");
                metrics::counter!("bus_wal_outbox_undecodable_total", "slot" => config.slot.clone())
                    .increment(1);
                continue;
            };
            let mut header_map = async_nats::HeaderMap::new();
            header_map.insert(headers::MESSAGE_ID, outbox_id.to_string().as_str());
            header_map.insert(
                headers::EMITTED_AT_MICROS,
                transaction.committed_at_micros.to_string().as_str(),
            );
            for (key, value) in &message.headers {
                header_map.insert(key.as_str(), value.as_str());
            }
            let subject = bus.subject(&message.subject);
            match bus
                .jetstream()
                .publish_with_headers(subject, header_map, message.payload.into())
                .await
            {
                Ok(ack) => pending.push((index, ack)),
                Err(error) => {
                    failed_at = Some(index);
                    failure = Some(error.to_string());
                    break 'send;
                }
            }
        }
    }
    // A transaction is consumed once every message of it and before it was acked: the first
    // failure ends the wait, and the slot stays before the transaction it happened in.
    let deadline = tokio::time::Instant::now() + config.ack_timeout;
    let mut first_unacked = failed_at.unwrap_or(transactions.len());
    let mut published = 0;
    for (index, ack) in pending {
        let result = tokio::time::timeout_at(deadline, ack).await;
        match result {
            Ok(Ok(_)) => published += 1,
            Ok(Err(error)) => {
                first_unacked = first_unacked.min(index);
                failure.get_or_insert(error.to_string());
                break;
            }
            Err(_) => {
                first_unacked = first_unacked.min(index);
                failure.get_or_insert_with(|| "publish ack timed out".to_owned());
                break;
            }
        }
    }
    if first_unacked > 0 {
        let consumed = &transactions[first_unacked - 1];
        slot::advance(&mut tx, config, consumed.end_lsn).await?;
    }
    tx.commit().await?;
    metrics::counter!("bus_outbox_published_total").increment(published);
    match failure {
        Some(message) => Err(BusError::JetStream {
            operation: "relaying the WAL outbox",
            message,
        }),
        None => Ok(Pass {
            published,
            transactions: first_unacked as u64,
            busy: false,
            held_back,
        }),
    }
}

/// Publish until a pass finds nothing more (or waits for the table outbox). Returns how many
/// messages were published.
pub async fn drain(bus: &Bus, pool: &PgPool, config: &WalOutboxConfig) -> Result<u64, BusError> {
    drain_passes(bus, pool, config)
        .await
        .map(|(published, _)| published)
}

/// Like [`drain`], also saying whether it stopped to let the table outbox go first.
async fn drain_passes(
    bus: &Bus,
    pool: &PgPool,
    config: &WalOutboxConfig,
) -> Result<(u64, bool), BusError> {
    let mut total = 0;
    loop {
        let pass = publish_pass(bus, pool, config).await?;
        total += pass.published;
        if pass.transactions == 0 || pass.busy || pass.held_back {
            return Ok((total, pass.held_back));
        }
    }
}

/// The message and its outbox id, or `None` when `content` is not a WAL outbox message.
fn decode_message(content: &[u8]) -> Option<(Uuid, WalOutboxMessage)> {
    let message = WalOutboxMessage::decode(content).ok()?;
    let outbox_id = Uuid::from_slice(&message.outbox_id).ok()?;
    Some((outbox_id, message))
}

/// How often the relay looks when no emit of this process wakes it (messages emitted by
/// another process, or while it was busy). After a wake-up it looks again after the table
/// relay's re-check delays (1 … 512 ms) while nothing has committed yet.
const POLL_INTERVAL: Duration = Duration::from_secs(1);
/// How long to wait for the table relay when its rows must go first.
const TABLE_OUTBOX_WAIT: Duration = Duration::from_millis(10);

/// Make the slot, then publish from it until `shutdown`, and once more after it.
pub async fn run(bus: Bus, pool: PgPool, config: WalOutboxConfig, shutdown: CancellationToken) {
    let mut emitted = EMITTED.subscribe();
    let mut failures: u32 = 0;
    let mut rechecks = RECHECK_DELAYS.len();
    let mut slot_ready = false;
    tracing::info!(slot = %config.slot, "WAL outbox relay started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        emitted.mark_unchanged();
        // Made once (again after a failure: a slot an operator dropped comes back).
        if !slot_ready {
            slot_ready = slot::ensure(&pool, &config).await.is_ok();
        }
        let result = drain_passes(&bus, &pool, &config).await;
        if result.is_err() {
            slot_ready = false;
        }
        report_lag(&pool, &config).await;
        let pause = match result {
            // The table relay is publishing rows that must go first.
            Ok((_, true)) => TABLE_OUTBOX_WAIT,
            Ok((published, false)) => {
                failures = 0;
                if published > 0 {
                    // Transactions that emitted meanwhile may be about to commit.
                    rechecks = 0;
                }
                if rechecks < RECHECK_DELAYS.len() {
                    // Woken by an emit whose transaction has not committed yet: look again soon.
                    rechecks += 1;
                    RECHECK_DELAYS[rechecks - 1]
                } else {
                    rechecks = RECHECK_DELAYS.len();
                    POLL_INTERVAL
                }
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = reattach::attach_retry_delay(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "WAL outbox relay could not publish; messages wait in the slot");
                delay
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
            changed = emitted.changed() => {
                if changed.is_ok() {
                    rechecks = 0;
                }
            }
        }
    }
    // Messages emitted by requests and handlers that finished during shutdown.
    match tokio::time::timeout(Duration::from_secs(5), drain(&bus, &pool, &config)).await {
        Ok(Ok(_)) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "WAL outbox relay could not publish on stop; the next relay sends the messages")
        }
        Err(_) => tracing::warn!(
            "WAL outbox relay ran out of time publishing on stop; the next relay sends the rest"
        ),
    }
    tracing::info!(slot = %config.slot, "WAL outbox relay stopped");
}

async fn report_lag(pool: &PgPool, config: &WalOutboxConfig) {
    if let Ok(Some(lag)) = slot::lag_bytes(pool, config).await {
        metrics::gauge!("bus_wal_outbox_lag_bytes", "slot" => config.slot.clone()).set(lag as f64);
    }
}
