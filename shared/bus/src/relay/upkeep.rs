//! Upkeep around the relay: pruning rows an older relay marked sent, and the outbox gauges.

use std::time::{Duration, Instant};

use sqlx::PgPool;

/// Delete rows marked sent longer than `retention` ago, in chunks so no long lock is held (and
/// the state rows of relays that stopped long ago). This relay deletes what it publishes;
/// marked rows come only from a relay of an earlier release (during a rolling deploy). With
/// no index on `sent_at` this scans the outbox, which holds only the unsent backlog and those
/// rows, once every ten minutes.
pub async fn prune(pool: &PgPool, retention: Duration) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM outbox_relay_state WHERE busy_until IS NULL OR busy_until < now() - interval '1 day'")
        .execute(pool)
        .await?;
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

/// The outbox gauges of one schema: `bus_outbox_unsent_rows` (depth) and
/// `bus_outbox_oldest_unsent_seconds` (age of the oldest unsent row, 0 when empty), labelled
/// `schema`. Refreshed by one query (a count over the small table, the first entry of
/// `outbox_unsent_idx`), at most once a second.
pub(super) struct OutboxGauges {
    schema: String,
    refreshed_at: Option<Instant>,
}

const GAUGE_INTERVAL: Duration = Duration::from_secs(1);

impl OutboxGauges {
    pub(super) fn new(schema: &str) -> Self {
        Self {
            schema: schema.to_owned(),
            refreshed_at: None,
        }
    }

    pub(super) async fn refresh_if_due(&mut self, pool: &PgPool) {
        if self
            .refreshed_at
            .is_some_and(|at| at.elapsed() < GAUGE_INTERVAL)
        {
            return;
        }
        self.refreshed_at = Some(Instant::now());
        match outbox_depth(pool).await {
            Ok((unsent, oldest_seconds)) => {
                let schema = self.schema.clone();
                metrics::gauge!("bus_outbox_unsent_rows", "schema" => schema.clone())
                    .set(unsent as f64);
                metrics::gauge!("bus_outbox_oldest_unsent_seconds", "schema" => schema)
                    .set(oldest_seconds);
            }
            // A metric is not worth failing the relay for; the next refresh tries again.
            Err(error) => tracing::debug!(%error, "reading the outbox depth failed"),
        }
    }
}

/// The number of unsent outbox rows and the age in seconds of the oldest (by position, the
/// index's order; 0 when there is none).
pub async fn outbox_depth(pool: &PgPool) -> Result<(i64, f64), sqlx::Error> {
    sqlx::query_as(
        "SELECT (SELECT count(*) FROM outbox WHERE sent_at IS NULL),
                coalesce((SELECT extract(epoch FROM clock_timestamp() - created_at)::float8
                            FROM outbox WHERE sent_at IS NULL
                           ORDER BY position LIMIT 1), 0)",
    )
    .fetch_one(pool)
    .await
}
