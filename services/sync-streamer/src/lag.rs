//! How far this replica is behind CHANGES (docs/operations.md "sync-streamer"): the tail and
//! the materializer, in changesets and in seconds, for readiness, metrics and a watchdog that
//! replaces a tail consumer which stopped delivering while the stream moved on.

use std::time::{Duration, Instant};

use async_nats::jetstream;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use crate::hub::Hub;

/// How often the monitor looks (metrics and the stall watchdog).
pub const MONITOR_INTERVAL: Duration = Duration::from_millis(500);
/// The longest one look at the stream may take.
pub const MEASURE_TIMEOUT: Duration = Duration::from_millis(1500);

/// A position's distance to the head of the stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lag {
    /// The stream's last sequence.
    pub head: u64,
    /// Changesets after the position.
    pub messages: u64,
    /// How long the oldest of them has been in the stream (zero when none).
    pub age: Duration,
}

/// How far `position` is behind the head of `stream_name`.
pub async fn measure(
    jetstream: &jetstream::Context,
    stream_name: &str,
    position: u64,
) -> Result<Lag, String> {
    let measured = async {
        let stream = jetstream
            .get_stream(stream_name)
            .await
            .map_err(|error| error.to_string())?;
        let state = &stream.cached_info().state;
        let head = state.last_sequence;
        if position >= head {
            return Ok(Lag {
                head,
                messages: 0,
                age: Duration::ZERO,
            });
        }
        // The oldest changeset not taken yet (the first one kept, if retention dropped it).
        let oldest = (position + 1).max(state.first_sequence);
        let stored_at = match stream.get_raw_message(oldest).await {
            Ok(message) => message.time,
            // Deleted meanwhile: the newest one's age is a lower bound.
            Err(_) => state.last_timestamp,
        };
        let age = (time::OffsetDateTime::now_utc() - stored_at)
            .try_into()
            .unwrap_or(Duration::ZERO);
        Ok(Lag {
            head,
            messages: head - position,
            age,
        })
    };
    tokio::time::timeout(MEASURE_TIMEOUT, measured)
        .await
        .map_err(|_| format!("no answer within {} ms", MEASURE_TIMEOUT.as_millis()))?
}

/// Update the lag gauges every [`MONITOR_INTERVAL`] until `shutdown`, and restart the tail's
/// consumer when the tail made no progress for `stall_after` while the stream has changesets
/// after its position (an ordered consumer the server lost is otherwise noticed only after
/// async-nats' 15 s idle heartbeat).
pub async fn run_monitor(
    hub: Hub,
    jetstream: jetstream::Context,
    stream_name: String,
    db: PgPool,
    stall_after: Duration,
    shutdown: CancellationToken,
) {
    let mut last_progress = (hub.position(), Instant::now());
    loop {
        tokio::select! {
            () = tokio::time::sleep(MONITOR_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        metrics::gauge!("sync_oldest_unsent_change_seconds")
            .set(hub.oldest_unsent_age().as_secs_f64());
        let position = hub.position();
        metrics::gauge!("sync_tail_last_sequence").set(position as f64);
        if position != last_progress.0 {
            last_progress = (position, Instant::now());
        }
        if jetstream.client().connection_state() != async_nats::connection::State::Connected {
            // The consumers restart on their own once the connection is back.
            continue;
        }
        match measure(&jetstream, &stream_name, position).await {
            Ok(lag) => {
                metrics::gauge!("sync_stream_head_sequence").set(lag.head as f64);
                metrics::gauge!("sync_tail_lag_messages").set(lag.messages as f64);
                metrics::gauge!("sync_tail_lag_seconds").set(lag.age.as_secs_f64());
                let stalled = lag.messages > 0
                    && lag.age > stall_after
                    && last_progress.1.elapsed() > stall_after;
                if stalled && hub.is_tailing() {
                    tracing::warn!(
                        position,
                        head = lag.head,
                        behind_seconds = lag.age.as_secs_f64(),
                        "the CHANGES tail made no progress while the stream moved on; restarting its consumer"
                    );
                    metrics::counter!("sync_tail_stall_restarts_total").increment(1);
                    hub.restart_tail();
                    // Give the new consumer as long again before judging it.
                    last_progress = (position, Instant::now());
                }
            }
            Err(error) => tracing::debug!(%error, "measuring the tail's lag failed"),
        }
        match materializer_lag(&db, &jetstream, &stream_name).await {
            Ok(lag) => {
                metrics::gauge!("sync_materializer_lag_messages").set(lag.messages as f64);
                metrics::gauge!("sync_materializer_lag_seconds").set(lag.age.as_secs_f64());
            }
            Err(error) => tracing::debug!(%error, "measuring the materializer's lag failed"),
        }
    }
}

/// The read model's watermark (whichever replica leads) against the stream head.
async fn materializer_lag(
    db: &PgPool,
    jetstream: &jetstream::Context,
    stream_name: &str,
) -> Result<Lag, String> {
    let watermark: Option<i64> = tokio::time::timeout(
        MEASURE_TIMEOUT,
        sqlx::query_scalar("SELECT watermark FROM materializer_state").fetch_optional(db),
    )
    .await
    .map_err(|_| "the watermark query timed out".to_owned())?
    .map_err(|error| error.to_string())?;
    let watermark = u64::try_from(watermark.unwrap_or(0)).unwrap_or(0);
    measure(jetstream, stream_name, watermark).await
}
