//! What the scenario reads from Postgres and JetStream around a run: WAL position, commits,
//! checkpoints, the backlog, and the worker's event lag.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use futures::TryStreamExt as _;
use hdrhistogram::Histogram;
use sqlx::postgres::PgPool;

use crate::db::quote_identifier;
use crate::report::Backlog;

/// Server-wide counters at one moment (read on the `postgres` database, so reading them is
/// not a transaction of the bench database).
#[derive(Debug, Clone, Copy, Default)]
pub struct PgCounters {
    /// `pg_current_wal_lsn()` as bytes (cluster-wide).
    pub wal_bytes: i64,
    /// `pg_stat_database.xact_commit` of the bench database.
    pub commits: i64,
    /// The same summed over every other database.
    pub other_commits: i64,
    /// `checkpoints_timed + checkpoints_req`.
    pub checkpoints: i64,
    /// Queries the bench itself ran on the bench database so far (each one a commit there).
    pub own_queries: u64,
}

/// Reads on the bench database, counting each one (they are commits of that database).
#[derive(Clone)]
pub struct Probe {
    pub admin: PgPool,
    pub pool: PgPool,
    pub database: String,
    own_queries: Arc<AtomicU64>,
    /// Schemas with an `outbox` table, and whether it has a `sent_at` column (without one,
    /// every row present is unsent).
    outboxes: Vec<(String, bool)>,
    /// `pg_xact_commit_timestamp` is available (`track_commit_timestamp = on`).
    commit_timestamps: bool,
    jetstream: async_nats::jetstream::Context,
    namespace_streams: Vec<String>,
    changes_stream: String,
}

impl Probe {
    pub async fn new(
        admin: PgPool,
        pool: PgPool,
        database: String,
        nats_url: &str,
        namespace: &str,
    ) -> anyhow::Result<Self> {
        let client = platform::nats::connect(nats_url, "bench-system")
            .await
            .context("connecting to NATS")?;
        let jetstream = async_nats::jetstream::new(client);
        let bus = bus::Bus::start(jetstream.clone(), namespace, "bench")
            .await
            .context("opening the run's streams")?;
        let namespace_streams = ["EVENTS", "TASKS", "CHANGES"]
            .iter()
            .map(|base| bus.stream_name(base))
            .collect();
        let changes_stream = bus.stream_name("CHANGES");
        let mut probe = Self {
            admin,
            pool,
            database,
            own_queries: Arc::new(AtomicU64::new(0)),
            outboxes: Vec::new(),
            commit_timestamps: false,
            jetstream,
            namespace_streams,
            changes_stream,
        };
        probe.outboxes = sqlx::query_as(
            "SELECT t.table_schema::text,
                    EXISTS (SELECT 1 FROM information_schema.columns c
                             WHERE c.table_schema = t.table_schema AND c.table_name = 'outbox'
                               AND c.column_name = 'sent_at')
               FROM information_schema.tables t
              WHERE t.table_name = 'outbox' AND t.table_type = 'BASE TABLE'
              ORDER BY 1",
        )
        .fetch_all(&probe.counted())
        .await
        .context("finding the outbox tables")?;
        let setting: String =
            sqlx::query_scalar("SELECT current_setting('track_commit_timestamp')")
                .fetch_one(&probe.counted())
                .await?;
        probe.commit_timestamps = setting == "on";
        Ok(probe)
    }

    /// The bench database's pool, counting one more own query.
    fn counted(&self) -> PgPool {
        self.own_queries.fetch_add(1, Ordering::Relaxed);
        self.pool.clone()
    }

    pub async fn counters(&self) -> anyhow::Result<PgCounters> {
        let own_queries = self.own_queries.load(Ordering::Relaxed);
        let (wal_bytes, commits, other_commits, checkpoints): (i64, i64, i64, i64) =
            sqlx::query_as(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), '0/0')::bigint,
                        (SELECT coalesce(sum(xact_commit), 0)::bigint FROM pg_stat_database
                          WHERE datname = $1),
                        (SELECT coalesce(sum(xact_commit), 0)::bigint FROM pg_stat_database
                          WHERE datname IS DISTINCT FROM $1),
                        (SELECT checkpoints_timed + checkpoints_req FROM pg_stat_bgwriter)",
            )
            .bind(&self.database)
            .fetch_one(&self.admin)
            .await
            .context("reading WAL position and commit counters")?;
        Ok(PgCounters {
            wal_bytes,
            commits,
            other_commits,
            checkpoints,
            own_queries,
        })
    }

    /// Every table's row write counters (`pg_stat_user_tables`): `schema.table` → inserted,
    /// updated, HOT-updated, deleted.
    pub async fn table_writes(&self) -> anyhow::Result<BTreeMap<String, [i64; 4]>> {
        let rows: Vec<(String, i64, i64, i64, i64)> = sqlx::query_as(
            "SELECT schemaname || '.' || relname, n_tup_ins, n_tup_upd, n_tup_hot_upd, n_tup_del
               FROM pg_stat_user_tables",
        )
        .fetch_all(&self.counted())
        .await
        .context("reading the tables' write counters")?;
        Ok(rows
            .into_iter()
            .map(|(table, inserted, updated, hot, deleted)| {
                (table, [inserted, updated, hot, deleted])
            })
            .collect())
    }

    /// CHECKPOINT, so every run starts from the same WAL state (full-page images).
    pub async fn checkpoint(&self) {
        if let Err(error) = sqlx::query("CHECKPOINT").execute(&self.admin).await {
            eprintln!("system-create: CHECKPOINT failed, continuing without it: {error}");
        }
    }

    /// What is still to be done: unsent outbox rows, undelivered or unacknowledged messages,
    /// entries the worker has not recorded, changesets the materializer has not applied.
    pub async fn backlog(&self) -> anyhow::Result<Backlog> {
        let mut backlog = Backlog::default();
        for (schema, has_sent_at) in &self.outboxes {
            let filter = if *has_sent_at {
                " WHERE sent_at IS NULL"
            } else {
                ""
            };
            let unsent: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {}.outbox{filter}",
                quote_identifier(schema)
            ))
            .fetch_one(&self.counted())
            .await
            .with_context(|| format!("counting {schema}.outbox"))?;
            backlog.outbox_unsent.insert(schema.clone(), unsent);
        }
        backlog.worker_behind = sqlx::query_scalar(
            "SELECT count(*) FROM api.journal_entries e
              WHERE NOT EXISTS (SELECT 1 FROM worker.journal_entry_activity a
                                 WHERE a.journal_entry_id = e.journal_entry_id)",
        )
        .fetch_one(&self.counted())
        .await
        .context("counting entries the worker has not recorded")?;
        for (base, stream_name) in ["EVENTS", "TASKS", "CHANGES"]
            .iter()
            .zip(&self.namespace_streams)
        {
            let mut stream = self
                .jetstream
                .get_stream(stream_name)
                .await
                .with_context(|| format!("opening stream {stream_name}"))?;
            if *stream_name == self.changes_stream {
                // The watermark first: read the other way round, a materializer moving on in
                // between would show as a negative backlog.
                let watermark: i64 = sqlx::query_scalar(
                    "SELECT coalesce(max(watermark), 0) FROM sync.materializer_state",
                )
                .fetch_one(&self.counted())
                .await
                .context("reading the materializer's watermark")?;
                let last = stream.info().await?.state.last_sequence;
                backlog.materializer_behind = i64::try_from(last)
                    .unwrap_or(i64::MAX)
                    .saturating_sub(watermark);
            }
            let consumers: Vec<_> = stream
                .consumers()
                .try_collect()
                .await
                .with_context(|| format!("listing the consumers of {stream_name}"))?;
            for consumer in consumers {
                let pending = consumer.num_pending + consumer.num_ack_pending as u64;
                // Only what is owed: the run's streams carry some twenty idle consumers.
                if pending > 0 {
                    backlog
                        .consumer_pending
                        .insert(format!("{base}/{}", consumer.name), pending);
                }
            }
        }
        Ok(backlog)
    }

    /// Entries created in `[from, to)`, and in all.
    pub async fn creates(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<(i64, i64)> {
        sqlx::query_as(
            "SELECT count(*) FILTER (WHERE created_at >= $1 AND created_at < $2), count(*)
               FROM api.journal_entries",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.counted())
        .await
        .context("counting entries")
    }

    /// Entries of `user` created in `[from, to)`.
    pub async fn creates_of(
        &self,
        user: uuid::Uuid,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<i64> {
        sqlx::query_scalar(
            "SELECT count(*) FROM api.journal_entries
              WHERE author_user_id = $1 AND created_at >= $2 AND created_at < $3",
        )
        .bind(user)
        .bind(from)
        .bind(to)
        .fetch_one(&self.counted())
        .await
        .context("counting the measured user's entries")
    }

    /// Create → worker effect for the entries created in `[from, to)`: from the entry's
    /// `created_at` to the commit of the worker's transaction when Postgres tracks commit
    /// timestamps, else to that transaction's `recorded_at` (its `now()`, i.e. its start).
    /// Entries not yet recorded count with their age now (a lower bound). Returns the
    /// histogram (µs), how many were not yet recorded, and the source's description.
    pub async fn event_lags(
        &self,
        from: DateTime<Utc>,
        to: DateTime<Utc>,
    ) -> anyhow::Result<(Histogram<u64>, i64, &'static str)> {
        let (applied_at, source) = if self.commit_timestamps {
            (
                "pg_xact_commit_timestamp(a.xmin)",
                "commit timestamp of the worker's transaction (track_commit_timestamp)",
            )
        } else {
            (
                "a.recorded_at",
                "journal_entry_activity.recorded_at (now() of the worker's transaction: its start, not its commit)",
            )
        };
        let rows: Vec<(f64, bool)> = sqlx::query_as(&format!(
            "SELECT (extract(epoch FROM coalesce({applied_at}, clock_timestamp()) - e.created_at)
                     * 1000000)::float8,
                    a.journal_entry_id IS NULL
               FROM api.journal_entries e
               LEFT JOIN worker.journal_entry_activity a USING (journal_entry_id)
              WHERE e.created_at >= $1 AND e.created_at < $2"
        ))
        .bind(from)
        .bind(to)
        .fetch_all(&self.counted())
        .await
        .context("reading the worker's event lags")?;
        let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
        let mut unapplied = 0;
        for (lag_us, missing) in rows {
            if missing {
                unapplied += 1;
            }
            histogram.saturating_record((lag_us.max(1.0)) as u64);
        }
        Ok((histogram, unapplied, source))
    }
}

/// `value_at_quantile` in ms, 0 for an empty histogram.
pub fn quantile_ms(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    if histogram.is_empty() {
        0.0
    } else {
        histogram.value_at_quantile(quantile) as f64 / 1000.0
    }
}
