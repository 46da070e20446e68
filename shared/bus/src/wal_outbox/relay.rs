//! Publishing WAL outbox transactions, and the one-shot pass over a slot through SQL
//! (`pg_logical_slot_peek_binary_changes`, then `pg_replication_slot_advance`). The running
//! relay streams instead ([`super::stream`]): each SQL call decodes the WAL from the slot's
//! `restart_lsn`, too costly to repeat with every write. A pass serves tools and tests, and
//! drains a slot nobody streams (a retired service's).

use prost::Message;
use sqlx::PgPool;
use uuid::Uuid;

use super::WalOutboxConfig;
use super::WalOutboxMessage;
use super::decode::WalTransaction;
use super::slot::{self, PeekError};
use crate::BusError;
use crate::headers;
use crate::streams::Bus;

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Messages published (acked by JetStream).
    pub published: u64,
    /// Transactions the slot moved past.
    pub transactions: u64,
    /// Another pass held the slot: nothing was read.
    pub busy: bool,
    /// It stopped before a transaction that committed after an unsent row of the table
    /// outbox (written by an earlier release): that row goes first.
    pub held_back: bool,
}

/// One pass over the slot. Holds the slot's advisory lock for the whole pass (in a
/// transaction), so passes take turns and never publish the same message concurrently. (A
/// slot that a relay streams is refused to a pass by Postgres itself: "active for PID".)
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
    let publishable = publishable_before_table_rows(pool, &peeked.transactions).await?;
    let held_back = publishable < peeked.transactions.len();
    let outcome = publish_transactions(bus, config, &peeked.transactions[..publishable]).await;
    if outcome.acked_transactions > 0 {
        let consumed = &peeked.transactions[outcome.acked_transactions - 1];
        slot::advance(&mut tx, config, consumed.end_lsn).await?;
    }
    tx.commit().await?;
    metrics::counter!("bus_outbox_published_total").increment(outcome.published);
    match outcome.failure {
        Some(message) => Err(BusError::JetStream {
            operation: "relaying the WAL outbox",
            message,
        }),
        None => Ok(Pass {
            published: outcome.published,
            transactions: outcome.acked_transactions as u64,
            busy: false,
            held_back,
        }),
    }
}

/// Publish until a pass finds nothing more (or waits for the table outbox). Returns how many
/// messages were published.
pub async fn drain(bus: &Bus, pool: &PgPool, config: &WalOutboxConfig) -> Result<u64, BusError> {
    let mut total = 0;
    loop {
        let pass = publish_pass(bus, pool, config).await?;
        total += pass.published;
        if pass.transactions == 0 || pass.busy || pass.held_back {
            return Ok(total);
        }
    }
}

/// How many of `transactions` (in commit order) may go before the table outbox's unsent rows.
///
/// A rolling deploy: rows an earlier release wrote to the table outbox go out before the WAL
/// messages of transactions that committed after them (one key's messages may be in both);
/// the table relay publishes them within milliseconds. Usually the table is empty.
pub(super) async fn publishable_before_table_rows(
    pool: &PgPool,
    transactions: &[WalTransaction],
) -> Result<usize, sqlx::Error> {
    let oldest_unsent: Option<chrono::DateTime<chrono::Utc>> =
        sqlx::query_scalar("SELECT min(created_at) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(pool)
            .await?;
    Ok(match oldest_unsent {
        None => transactions.len(),
        Some(oldest) => transactions
            .iter()
            .take_while(|transaction| transaction.committed_at_micros < oldest.timestamp_micros())
            .count(),
    })
}

/// What publishing a run of transactions came to.
#[derive(Debug, Default)]
pub(super) struct Published {
    /// The leading transactions whose every message JetStream acked.
    pub(super) acked_transactions: usize,
    pub(super) published: u64,
    /// The first failure; nothing after it counts as acked.
    pub(super) failure: Option<String>,
}

/// Send every message of `transactions` in order with `Nats-Msg-Id` = its outbox id, then
/// wait for the acks under one deadline (as the table relay does), stopping at the first
/// failure.
pub(super) async fn publish_transactions(
    bus: &Bus,
    config: &WalOutboxConfig,
    transactions: &[WalTransaction],
) -> Published {
    let mut pending = Vec::new();
    // The transaction a send failed in: nothing from it on is acked.
    let mut first_unacked = transactions.len();
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
                    first_unacked = index;
                    failure = Some(error.to_string());
                    break 'send;
                }
            }
        }
    }
    let deadline = tokio::time::Instant::now() + config.ack_timeout;
    let mut published = 0;
    for (index, ack) in pending {
        match tokio::time::timeout_at(deadline, ack).await {
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
    Published {
        acked_transactions: first_unacked,
        published,
        failure,
    }
}

/// The message and its outbox id, or `None` when `content` is not a WAL outbox message.
fn decode_message(content: &[u8]) -> Option<(Uuid, WalOutboxMessage)> {
    let message = WalOutboxMessage::decode(content).ok()?;
    let outbox_id = Uuid::from_slice(&message.outbox_id).ok()?;
    Some((outbox_id, message))
}

/// Report the slot's lag (`bus_wal_outbox_lag_bytes`): WAL the slot holds back.
pub(super) async fn report_lag(pool: &PgPool, config: &WalOutboxConfig) {
    if let Ok(Some(lag)) = slot::lag_bytes(pool, config).await {
        metrics::gauge!("bus_wal_outbox_lag_bytes", "slot" => config.slot.clone()).set(lag as f64);
    }
}
