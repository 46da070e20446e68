//! The outbox relay: publishes committed outbox rows to JetStream, then deletes them.
//!
//! - Wakes when this process writes outbox rows ([`wake`]: an in-process signal, not
//!   LISTEN/NOTIFY, which costs every listening backend of the database a commit), looks again
//!   shortly while rows it was told of have not committed yet, and polls slowly
//!   ([`RelayConfig::poll_interval`]) as the safety net for rows written elsewhere.
//! - Claims rows with `FOR UPDATE SKIP LOCKED` inside a transaction held while it publishes:
//!   no cursor over ids (they commit out of order), and concurrent relays never take the
//!   same row. A row whose ordering key has an earlier unsent row is not eligible, so one
//!   key's messages go out in order even with several relays.
//! - Publishes the whole batch, waits for every JetStream ack, and deletes the acked rows in
//!   the claiming transaction (one `DELETE … WHERE outbox_id = ANY($1)` per batch): the
//!   outbox is insert-then-delete, so a row costs its insert and one delete, never an UPDATE
//!   that rewrites the row and all its index entries. A crash between publish and commit
//!   re-publishes with the same `Nats-Msg-Id`, which the stream's duplicate window drops.
//! - Rolling deploys: an older relay marks rows `sent_at` instead of deleting them. Both
//!   claim only `sent_at IS NULL` rows under row locks, so either relay publishes a row and
//!   the other never sees it again; rows an older relay marked sent are pruned after the
//!   retention period.
//! - While NATS is down, rows wait and the relay retries with backoff; nothing is lost.
//! - Reports the outbox's depth and the age of its oldest unsent row as gauges, at most once
//!   a second.

mod publish;
mod upkeep;
mod wake;

pub use publish::drain;
pub use upkeep::{outbox_depth, prune};

use std::time::{Duration, Instant};

use sqlx::PgPool;

use tokio_util::sync::CancellationToken;

use crate::reattach::{self, Reconnects};
use crate::streams::Bus;
use publish::publish_batch;
use upkeep::OutboxGauges;
use wake::Wakeups;
pub(crate) use wake::rows_written;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The schema whose outbox this relay drains.
    pub schema: String,
    pub batch_size: i64,
    /// Rows marked sent (by a relay of an earlier release, which kept them) are pruned once
    /// older than this.
    pub retention: Duration,
    /// How often the relay looks when no write of this process wakes it: the safety net for
    /// rows written by another process (or announced before this relay started).
    pub poll_interval: Duration,
    /// After a wake-up, how long to wait before looking: the writer's transaction has not
    /// committed yet when it announces its rows, and rows written meanwhile go in the same
    /// batch.
    pub wake_delay: Duration,
    /// Whether writes of this process wake the relay. Off only for diagnostics (the bench's
    /// `poll=` set-up), which then rely on `poll_interval` alone.
    pub wake_on_writes: bool,
    /// How long to wait for JetStream acks of one batch.
    pub ack_timeout: Duration,
    /// On stop, how long the relay may spend publishing what is still in the outbox (rows
    /// written by handlers and requests that finished during shutdown). Zero: stop at once.
    pub final_publish: Duration,
}

impl RelayConfig {
    pub fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            batch_size: 500,
            retention: Duration::from_secs(24 * 3600),
            poll_interval: Duration::from_secs(1),
            wake_delay: Duration::from_millis(2),
            wake_on_writes: true,
            ack_timeout: Duration::from_secs(5),
            final_publish: Duration::from_secs(5),
        }
    }
}

/// Start the relay on its own task; it stops when `shutdown` is cancelled, after a final
/// publish of what is in the outbox then (bounded by [`RelayConfig::final_publish`]).
pub fn spawn(
    bus: Bus,
    pool: PgPool,
    config: RelayConfig,
    shutdown: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(run(bus, pool, config, shutdown))
}

pub async fn run(bus: Bus, pool: PgPool, config: RelayConfig, shutdown: CancellationToken) {
    let mut wakeups = Wakeups::new();
    let mut failures: u32 = 0;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    let mut gauges = OutboxGauges::new(&config.schema);
    let reconnects = Reconnects::new(&bus);
    tracing::info!(schema = %config.schema, "outbox relay started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        // A drain begun on a connection that died waits out its acks (`ack_timeout`): when the
        // client connects again meanwhile, it is abandoned and started over at once (its claim
        // rolls back; rows it did publish go out again with the same Nats-Msg-Id, which the
        // stream's duplicate window drops), so events flow within the bound after NATS returns.
        let seen = reconnects.current();
        let drained = tokio::select! {
            drained = drain_reporting(&bus, &pool, &config, &mut gauges) => drained,
            () = reconnects.after(seen) => continue,
        };
        // Also after a failure: a backlog growing while NATS is down is what the gauges are for.
        gauges.refresh_if_due(&pool).await;
        match drained {
            Ok(claimed) => {
                if failures > 0 {
                    tracing::info!(claimed, "outbox relay recovered");
                }
                failures = 0;
                wakeups.claimed(claimed);
            }
            Err(error) => {
                failures = failures.saturating_add(1);
                let delay = reattach::attach_retry_delay(failures);
                tracing::warn!(%error, retry_in_ms = delay.as_millis() as u64, "outbox relay could not publish; rows wait");
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => continue,
                    // NATS is back: publish now rather than after the pause.
                    () = reconnects.after(seen) => continue,
                }
            }
        }
        if last_prune.elapsed() > Duration::from_secs(600) {
            last_prune = Instant::now();
            if let Err(error) = prune(&pool, config.retention).await {
                tracing::warn!(%error, "pruning outbox rows marked sent failed");
            }
        }
        // Rows this process wrote that the drain did not find have not committed yet: look
        // again soon. Otherwise sleep until the next write, the slow poll, or shutdown.
        let recheck = if config.wake_on_writes {
            wakeups.recheck_delay()
        } else {
            None
        };
        let next_write = async {
            if config.wake_on_writes {
                wakeups.next_write().await;
            } else {
                std::future::pending::<()>().await;
            }
        };
        let pause = recheck.unwrap_or(config.poll_interval);
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(pause) => {}
            () = next_write => {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    () = tokio::time::sleep(config.wake_delay) => {}
                }
            }
        }
    }
    publish_remaining(&bus, &pool, &config).await;
    tracing::info!(schema = %config.schema, "outbox relay stopped");
}

/// The relay's last pass on stop: publish what the outbox holds, within
/// [`RelayConfig::final_publish`]. Whatever it cannot publish in time waits for the next relay.
async fn publish_remaining(bus: &Bus, pool: &PgPool, config: &RelayConfig) {
    if config.final_publish.is_zero() {
        return;
    }
    match tokio::time::timeout(config.final_publish, drain(bus, pool, config)).await {
        Ok(Ok(0)) => {}
        Ok(Ok(published)) => tracing::info!(published, "outbox relay published on stop"),
        Ok(Err(error)) => {
            tracing::warn!(%error, "outbox relay could not publish on stop; the next relay sends the rows");
        }
        Err(_) => tracing::warn!(
            limit_ms = config.final_publish.as_millis() as u64,
            "outbox relay ran out of time publishing on stop; the next relay sends the rest"
        ),
    }
}

/// Like [`drain`], keeping the gauges current meanwhile (a backlog can take minutes to
/// drain). Returns how many rows it claimed.
async fn drain_reporting(
    bus: &Bus,
    pool: &PgPool,
    config: &RelayConfig,
    gauges: &mut OutboxGauges,
) -> Result<u64, crate::BusError> {
    let mut total = 0;
    loop {
        let (_published, claimed) = publish_batch(bus, pool, config).await?;
        total += claimed;
        gauges.refresh_if_due(pool).await;
        if claimed < config.batch_size as u64 {
            return Ok(total);
        }
    }
}
