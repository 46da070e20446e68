//! The outbox relay: publishes committed outbox rows to JetStream, then deletes them.
//!
//! - Wakes on LISTEN/NOTIFY (the insert trigger notifies at commit), with a slow poll as a
//!   safety net for notifications lost while reconnecting.
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
//! - Under load the relay drains continuously and marks itself busy in
//!   `outbox_relay_state`; while any relay is busy the insert trigger skips its NOTIFY.
//!   Postgres serializes the commits of notifying transactions on one lock (measured here:
//!   1.8k instead of 6.1k commits/s), so a NOTIFY per insert would cap every producer. When the
//!   outbox is empty the relay clears the mark and polls a few more times over ~80 ms for rows
//!   whose transaction began while it was busy and committed just after.
//! - Reports the outbox's depth and the age of its oldest unsent row as gauges, at most once
//!   a second.

mod publish;
mod upkeep;

pub use publish::drain;
pub use upkeep::{outbox_depth, prune};

use std::time::{Duration, Instant};

use sqlx::PgPool;
use sqlx::postgres::PgListener;

use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::reattach::{self, Reconnects};
use crate::streams::Bus;
use publish::publish_batch;
use upkeep::OutboxGauges;

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The schema whose outbox this relay drains (the NOTIFY channel is `<schema>_outbox`).
    pub schema: String,
    pub batch_size: i64,
    /// Rows marked sent (by a relay of an earlier release, which kept them) are pruned once
    /// older than this.
    pub retention: Duration,
    /// Poll interval when no notification arrives.
    pub poll_interval: Duration,
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
    let channel = format!("{}_outbox", config.schema);
    let mut listener = None;
    let mut failures: u32 = 0;
    let mut last_prune = Instant::now() - Duration::from_secs(3600);
    let relay_id = Uuid::new_v4();
    let mut gauges = OutboxGauges::new(&config.schema);
    let reconnects = Reconnects::new(&bus);
    tracing::info!(schema = %config.schema, %relay_id, "outbox relay started");
    loop {
        if shutdown.is_cancelled() {
            break;
        }
        if listener.is_none() {
            listener = connect_listener(&pool, &channel).await;
        }
        // A drain begun on a connection that died waits out its acks (`ack_timeout`): when the
        // client connects again meanwhile, it is abandoned and started over at once (its claim
        // rolls back; rows it did publish go out again with the same Nats-Msg-Id, which the
        // stream's duplicate window drops), so events flow within the bound after NATS returns.
        let seen = reconnects.current();
        let drained = tokio::select! {
            drained = drain_adaptive(&bus, &pool, &config, relay_id, &mut gauges) => drained,
            () = reconnects.after(seen) => continue,
        };
        // Also after a failure: a backlog growing while NATS is down is what the gauges are for.
        gauges.refresh_if_due(&pool).await;
        match drained {
            Ok(published) => {
                if failures > 0 {
                    tracing::info!(published, "outbox relay recovered");
                }
                failures = 0;
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
                    // No listener (Postgres was restarting when it reconnected): look again
                    // soon rather than after a whole poll interval, or a write committed now
                    // would wait that long to be published.
                    tokio::time::sleep(config.poll_interval.min(LISTENER_RETRY)).await;
                    true
                }
            }
        };
        tokio::select! {
            () = shutdown.cancelled() => break,
            healthy = woken => if !healthy { listener = None; },
        }
    }
    publish_remaining(&bus, &pool, &config).await;
    let _ = sqlx::query("DELETE FROM outbox_relay_state WHERE relay_id = $1")
        .bind(relay_id)
        .execute(&pool)
        .await;
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

/// A batch at least this large means producers are outpacing wake-ups: go busy.
const BUSY_THRESHOLD: u64 = 20;
/// How long a busy mark lasts unless refreshed (a crashed relay's mark expires by itself).
const BUSY_LEASE: Duration = Duration::from_secs(2);
/// How soon a relay without its LISTEN connection polls and tries to listen again.
const LISTENER_RETRY: Duration = Duration::from_millis(100);
/// Polls after leaving busy mode, for rows whose producers skipped NOTIFY while we were busy.
const GRACE_POLLS: [Duration; 3] = [
    Duration::from_millis(5),
    Duration::from_millis(20),
    Duration::from_millis(50),
];

async fn set_busy(pool: &PgPool, relay_id: Uuid, busy: bool) -> Result<(), sqlx::Error> {
    let busy_until = if busy {
        Some(chrono::Utc::now() + BUSY_LEASE)
    } else {
        None
    };
    sqlx::query(
        "INSERT INTO outbox_relay_state (relay_id, busy_until) VALUES ($1, $2)
         ON CONFLICT (relay_id) DO UPDATE SET busy_until = EXCLUDED.busy_until",
    )
    .bind(relay_id)
    .bind(busy_until)
    .execute(pool)
    .await?;
    Ok(())
}

/// Like [`drain`], switching to busy mode (no wake-ups needed) while batches stay large.
async fn drain_adaptive(
    bus: &Bus,
    pool: &PgPool,
    config: &RelayConfig,
    relay_id: Uuid,
    gauges: &mut OutboxGauges,
) -> Result<u64, crate::BusError> {
    let mut total = 0;
    let mut busy_since: Option<Instant> = None;
    let result = async {
        loop {
            let (published, claimed) = publish_batch(bus, pool, config).await?;
            total += published;
            // A busy relay can drain for minutes; keep the gauges current meanwhile.
            gauges.refresh_if_due(pool).await;
            match busy_since {
                None if claimed >= BUSY_THRESHOLD => {
                    set_busy(pool, relay_id, true).await?;
                    busy_since = Some(Instant::now());
                }
                Some(since) if since.elapsed() > BUSY_LEASE / 2 => {
                    set_busy(pool, relay_id, true).await?;
                    busy_since = Some(Instant::now());
                }
                _ => {}
            }
            // Not busy: a short batch means we are caught up and NOTIFY will wake us.
            // Busy: keep draining until the outbox is empty.
            let caught_up = if busy_since.is_some() {
                claimed == 0
            } else {
                claimed < config.batch_size as u64
            };
            if caught_up {
                return Ok::<(), crate::BusError>(());
            }
        }
    }
    .await;
    if busy_since.is_some() {
        set_busy(pool, relay_id, false).await?;
        for delay in GRACE_POLLS {
            tokio::time::sleep(delay).await;
            total += drain(bus, pool, config).await?;
        }
    }
    result.map(|()| total)
}

async fn connect_listener(pool: &PgPool, channel: &str) -> Option<PgListener> {
    let mut listener = PgListener::connect_with(pool).await.ok()?;
    listener.listen(channel).await.ok()?;
    Some(listener)
}
