//! The materializer (ARCHITECTURE §5 step 3): exactly one replica at a time — the holder of
//! the `materializer` lease — applies CHANGES in stream order into `sync.rows` and advances
//! the watermark, in batches. Each batch transaction renews the lease first (a replica that
//! lost it cannot commit) and checks the watermark it started from, so two leaders can never
//! interleave. Rows are version-guarded: replaying a changeset changes nothing.
//!
//! The watermark never lies inside a transaction: while some parts of a transaction that
//! wrote several changesets are in and others are not, the changesets from its first part on
//! wait in memory, so a stream's handoff at the watermark sees each transaction either whole
//! in the read model or whole after it (docs/sync.md, "Transactions"). A transaction whose
//! parts are not all in after `transaction_wait` stops holding the watermark back.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use futures::StreamExt;
use sqlx::{Connection, PgPool};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::changesets::LiveChangeset;
use crate::hub::ordered_from;
use bus::connection::{Backoff, ConnectionWatch, pause_until_connected};

const LEASE_NAME: &str = "materializer";
/// The longest one lease attempt may take while recovering from a failure.
const RECOVERY_ATTEMPT: Duration = Duration::from_millis(400);

/// (scope, table, row id).
type RowKey<'a> = (&'a str, &'a str, &'a str);
/// (version, seq, deleted, row JSON).
type RowState<'a> = (i64, i64, bool, &'a str);

/// The transactions whose parts the leader has read some, not all, of.
#[derive(Default)]
struct OpenTransactions {
    /// Transaction id → (its first part's sequence, part indexes read, part count, when the
    /// first part was read).
    by_id: HashMap<String, (u64, Vec<usize>, usize, Instant)>,
    /// Recently given up: their late parts do not open them again.
    given_up: std::collections::VecDeque<String>,
}

/// How many given-up transaction ids the leader remembers.
const GIVEN_UP_MEMORY: usize = 1024;

impl OpenTransactions {
    fn add(&mut self, changeset: &LiveChangeset) {
        let Some(part) = &changeset.transaction else {
            return;
        };
        if self.given_up.contains(&part.id) {
            return;
        }
        let entry = self
            .by_id
            .entry(part.id.clone())
            .or_insert_with(|| (changeset.seq, Vec::new(), part.scopes.len(), Instant::now()));
        if !entry.1.contains(&part.index) {
            entry.1.push(part.index);
        }
        if entry.1.len() >= entry.2 {
            self.by_id.remove(&part.id);
        }
    }

    /// The first sequence of the oldest incomplete transaction.
    fn first_seq(&self) -> Option<u64> {
        self.by_id.values().map(|(first, ..)| *first).min()
    }

    fn first_deadline(&self, wait: Duration) -> Option<Instant> {
        self.by_id.values().map(|(.., since)| *since + wait).min()
    }

    /// Stop waiting for transactions incomplete for longer than `wait`; returns how many.
    fn expire(&mut self, wait: Duration) -> usize {
        let expired: Vec<String> = self
            .by_id
            .iter()
            .filter(|(_, (.., since))| since.elapsed() >= wait)
            .map(|(id, _)| id.clone())
            .collect();
        for id in &expired {
            self.by_id.remove(id);
            if self.given_up.len() >= GIVEN_UP_MEMORY {
                self.given_up.pop_front();
            }
            self.given_up.push_back(id.clone());
        }
        expired.len()
    }
}

/// Whether this replica leads (shared with readiness, metrics and tests).
#[derive(Clone, Default)]
pub struct Leadership {
    leading: Arc<AtomicBool>,
}

impl Leadership {
    pub fn is_leader(&self) -> bool {
        self.leading.load(Ordering::Relaxed)
    }
    fn set(&self, leading: bool) {
        self.leading.store(leading, Ordering::Relaxed);
        metrics::gauge!("sync_materializer_leader").set(if leading { 1.0 } else { 0.0 });
    }
}

pub struct Materializer {
    pub db: PgPool,
    pub jetstream: jetstream::Context,
    pub stream_name: String,
    pub lease: Duration,
    pub batch: usize,
    /// How long an incomplete transaction may hold the watermark back.
    pub transaction_wait: Duration,
    pub tombstone_retention: Duration,
    pub purge_interval: Duration,
    pub leadership: Leadership,
    pub replica_id: Uuid,
}

#[derive(Debug, thiserror::Error)]
enum LeadError {
    #[error("lost the lease")]
    LostLease,
    #[error("the watermark moved under us (another leader)")]
    WatermarkMoved,
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("nats: {0}")]
    Nats(String),
}

impl Materializer {
    /// Compete for the lease and materialize while holding it, until `shutdown`.
    ///
    /// After a failure (Postgres or NATS away) it retries with a short bounded back-off, each
    /// lease attempt cut short at [`RECOVERY_ATTEMPT`]: a pool acquire left to itself retries
    /// its connection at up to 1 s intervals, so the read model would resume up to a second
    /// after Postgres did.
    pub async fn run(self, shutdown: CancellationToken) {
        let poll = self.lease / 3;
        let mut backoff = Backoff::default();
        let mut failures: u32 = 0;
        while !shutdown.is_cancelled() {
            let attempt = if failures == 0 {
                self.try_acquire().await.map_err(|error| error.to_string())
            } else {
                tokio::time::timeout(RECOVERY_ATTEMPT, self.try_acquire())
                    .await
                    .map_err(|_| "Postgres did not answer".to_owned())
                    .and_then(|acquired| acquired.map_err(|error| error.to_string()))
            };
            let failure = match attempt {
                Ok(true) => {
                    if failures == 0 {
                        tracing::info!(replica = %self.replica_id, "materializer lease acquired");
                    }
                    self.leadership.set(true);
                    let result = self.lead(&shutdown).await;
                    self.leadership.set(false);
                    result
                        .err()
                        .map(|error| format!("materializer stopped leading: {error}"))
                }
                Ok(false) => None,
                Err(error) => Some(format!("materializer lease check failed: {error}")),
            };
            let delay = match failure {
                None => {
                    if failures > 0 {
                        tracing::info!(failures, "materializer recovered");
                    }
                    failures = 0;
                    backoff.reset();
                    poll
                }
                Some(error) => {
                    // One warning per outage, not four a second.
                    if failures == 0 {
                        tracing::warn!(%error, "materializer failed; retrying");
                    } else {
                        tracing::debug!(%error, failures, "materializer still failing");
                    }
                    failures = failures.saturating_add(1);
                    backoff.next_delay()
                }
            };
            if !pause_until_connected(&self.jetstream.client(), delay, &shutdown).await {
                break;
            }
        }
        // Hand over at once instead of making the next leader wait out the lease.
        let _ = sqlx::query("DELETE FROM leases WHERE name = $1 AND holder = $2")
            .bind(LEASE_NAME)
            .bind(self.replica_id)
            .execute(&self.db)
            .await;
    }

    fn lease_ms(&self) -> i64 {
        i64::try_from(self.lease.as_millis()).unwrap_or(i64::MAX)
    }

    async fn try_acquire(&self) -> Result<bool, sqlx::Error> {
        let holder: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO leases (name, holder, expires_at)
             VALUES ($1, $2, clock_timestamp() + make_interval(secs => $3::float8 / 1000))
             ON CONFLICT (name) DO UPDATE
                SET holder = EXCLUDED.holder, expires_at = EXCLUDED.expires_at,
                    acquired_at = clock_timestamp()
                WHERE leases.expires_at < clock_timestamp() OR leases.holder = EXCLUDED.holder
             RETURNING holder",
        )
        .bind(LEASE_NAME)
        .bind(self.replica_id)
        .bind(self.lease_ms() as f64)
        .fetch_optional(&self.db)
        .await?;
        Ok(holder == Some(self.replica_id))
    }

    async fn renew(&self, conn: &mut sqlx::PgConnection) -> Result<(), LeadError> {
        let renewed = sqlx::query(
            "UPDATE leases SET expires_at = clock_timestamp() + make_interval(secs => $3::float8 / 1000)
             WHERE name = $1 AND holder = $2",
        )
        .bind(LEASE_NAME)
        .bind(self.replica_id)
        .bind(self.lease_ms() as f64)
        .execute(conn)
        .await?;
        if renewed.rows_affected() == 1 {
            Ok(())
        } else {
            Err(LeadError::LostLease)
        }
    }

    async fn lead(&self, shutdown: &CancellationToken) -> Result<(), LeadError> {
        // One connection for the whole term: no wait for a pooled one between batches, and
        // when Postgres goes away the next statement fails at once (a pool acquire would keep
        // retrying its connection, backing off to 1 s) and `run` recovers on its short back-off.
        let mut conn = self.db.acquire().await?;
        sqlx::query(
            "INSERT INTO materializer_state (singleton) VALUES (true) ON CONFLICT DO NOTHING",
        )
        .execute(&mut *conn)
        .await?;
        let mut watermark: i64 = sqlx::query_scalar("SELECT watermark FROM materializer_state")
            .fetch_one(&mut *conn)
            .await?;
        let connection = ConnectionWatch::new(self.jetstream.client());
        let setup = async {
            let stream = self
                .jetstream
                .get_stream(&self.stream_name)
                .await
                .map_err(|error| LeadError::Nats(error.to_string()))?;
            ordered_from(&stream, watermark as u64 + 1)
                .await
                .map_err(LeadError::Nats)
        };
        // A request sent as the connection drops would wait out its whole timeout.
        let mut messages = tokio::select! {
            messages = setup => messages?,
            () = connection.lost() => {
                return Err(LeadError::Nats("the NATS connection was lost while creating the consumer".to_owned()));
            }
            () = shutdown.cancelled() => return Ok(()),
        };
        let renew_every = self.lease / 3;
        let mut last_renewal = Instant::now();
        let mut last_purge: Option<Instant> = None;
        // Read but not applied yet: everything from the first part of an incomplete
        // transaction on (the watermark must not cut a transaction).
        let mut carry: Vec<LiveChangeset> = Vec::new();
        let mut open = OpenTransactions::default();
        let mut consumed = watermark as u64;
        loop {
            if last_purge.is_none_or(|at| at.elapsed() >= self.purge_interval) {
                self.purge(&mut conn).await?;
                last_purge = Some(Instant::now());
            }
            // Wait for the first message at most until the next renewal is due (or an
            // incomplete transaction's wait ends).
            let mut wait = renew_every.saturating_sub(last_renewal.elapsed());
            if let Some(deadline) = open.first_deadline(self.transaction_wait) {
                wait = wait.min(deadline.saturating_duration_since(Instant::now()));
            }
            let first = tokio::select! {
                message = tokio::time::timeout(wait, messages.next()) => message.ok(),
                () = shutdown.cancelled() => return Ok(()),
                // Its consumer may be gone with the connection (see `ConnectionWatch`): lead
                // again from the watermark with a new one.
                () = connection.lost() => {
                    return Err(LeadError::Nats("the NATS connection was lost".to_owned()));
                }
            };
            let mut taken = 0;
            let mut pending = first;
            while let Some(message) = pending {
                let message = message
                    .ok_or_else(|| LeadError::Nats("the CHANGES consumer ended".to_owned()))?
                    .map_err(|error| LeadError::Nats(error.to_string()))?;
                let seq = message
                    .info()
                    .map_err(|error| LeadError::Nats(error.to_string()))?
                    .stream_sequence;
                consumed = consumed.max(seq);
                match LiveChangeset::decode(seq, &message.payload) {
                    Ok(changeset) => {
                        open.add(&changeset);
                        carry.push(changeset);
                    }
                    Err(error) => tracing::warn!(seq, %error, "skipping an undecodable changeset"),
                }
                taken += 1;
                if taken >= self.batch {
                    break;
                }
                // Take what is already here without waiting for more.
                pending = futures::FutureExt::now_or_never(messages.next());
            }
            let given_up = open.expire(self.transaction_wait);
            if given_up > 0 {
                tracing::warn!(
                    given_up,
                    "transactions still missing parts after the wait; the watermark goes past them"
                );
                metrics::counter!("sync_materializer_split_transactions_total")
                    .increment(given_up as u64);
            }
            // Up to just before the first part of the oldest incomplete transaction.
            let to = open
                .first_seq()
                .map_or(consumed, |first| first.saturating_sub(1))
                .min(consumed);
            if to <= watermark as u64 {
                if last_renewal.elapsed() >= renew_every || taken == 0 {
                    self.renew(&mut conn).await?;
                    last_renewal = Instant::now();
                }
                continue;
            }
            let split = carry.partition_point(|changeset| changeset.seq <= to);
            let batch: Vec<LiveChangeset> = carry.drain(..split).collect();
            self.apply(&mut conn, &batch, watermark, to as i64).await?;
            metrics::counter!("sync_materialized_changesets_total").increment(batch.len() as u64);
            metrics::gauge!("sync_materializer_watermark").set(to as f64);
            watermark = to as i64;
            last_renewal = Instant::now();
        }
    }

    /// One batch in one transaction: renew the lease, check the watermark, upsert, advance.
    async fn apply(
        &self,
        conn: &mut sqlx::PgConnection,
        batch: &[LiveChangeset],
        from_watermark: i64,
        to_watermark: i64,
    ) -> Result<(), LeadError> {
        // The newest version of each (scope, table, row) in the batch; on equal versions the
        // first (lowest sequence) wins, as the version guard would decide.
        let mut latest: HashMap<RowKey<'_>, RowState<'_>> = HashMap::new();
        for changeset in batch {
            for change in &changeset.changes {
                let key = (
                    changeset.scope.as_str(),
                    change.table.as_str(),
                    change.row_id.as_str(),
                );
                let candidate = (
                    change.version,
                    changeset.seq as i64,
                    change.deleted(),
                    change.data.get(),
                );
                latest
                    .entry(key)
                    .and_modify(|current| {
                        if candidate.0 > current.0 {
                            *current = candidate;
                        }
                    })
                    .or_insert(candidate);
            }
        }
        let mut scopes = Vec::with_capacity(latest.len());
        let mut tables = Vec::with_capacity(latest.len());
        let mut row_ids = Vec::with_capacity(latest.len());
        let mut versions = Vec::with_capacity(latest.len());
        let mut seqs = Vec::with_capacity(latest.len());
        let mut deleted = Vec::with_capacity(latest.len());
        let mut data = Vec::with_capacity(latest.len());
        for ((scope, table, row_id), (version, seq, is_deleted, json)) in latest {
            scopes.push(scope);
            tables.push(table);
            row_ids.push(row_id);
            versions.push(version);
            seqs.push(seq);
            deleted.push(is_deleted);
            data.push(json);
        }
        let mut tx = conn.begin().await?;
        self.renew(&mut tx).await?;
        let current: i64 =
            sqlx::query_scalar("SELECT watermark FROM materializer_state FOR UPDATE")
                .fetch_one(&mut *tx)
                .await?;
        if current != from_watermark {
            return Err(LeadError::WatermarkMoved);
        }
        sqlx::query(
            "INSERT INTO rows (scope, table_name, row_id, version, seq, deleted, data)
             SELECT scope, table_name, row_id, version, seq, deleted, data::json
             FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[], $5::int8[], $6::bool[], $7::text[])
                  AS batch (scope, table_name, row_id, version, seq, deleted, data)
             ON CONFLICT (scope, table_name, row_id) DO UPDATE
                SET version = EXCLUDED.version, seq = EXCLUDED.seq, deleted = EXCLUDED.deleted,
                    data = EXCLUDED.data, changed_at = now()
                WHERE rows.version < EXCLUDED.version",
        )
        .bind(&scopes)
        .bind(&tables)
        .bind(&row_ids)
        .bind(&versions)
        .bind(&seqs)
        .bind(&deleted)
        .bind(&data)
        .execute(&mut *tx)
        .await?;
        sqlx::query("UPDATE materializer_state SET watermark = $1, updated_at = now()")
            .bind(to_watermark)
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Delete tombstones older than the retention and raise the horizon past them: a cursor
    /// below the horizon may have missed a deletion and gets a `reset`.
    async fn purge(&self, conn: &mut sqlx::PgConnection) -> Result<(), LeadError> {
        let retention_ms = i64::try_from(self.tombstone_retention.as_millis()).unwrap_or(i64::MAX);
        let mut tx = conn.begin().await?;
        self.renew(&mut tx).await?;
        let purged: Option<i64> = sqlx::query_scalar(
            "WITH purged AS (
                DELETE FROM rows
                WHERE deleted AND changed_at < now() - make_interval(secs => $1::float8 / 1000)
                RETURNING seq)
             SELECT max(seq) FROM purged",
        )
        .bind(retention_ms as f64)
        .fetch_one(&mut *tx)
        .await?;
        if let Some(horizon) = purged {
            sqlx::query("UPDATE materializer_state SET horizon = greatest(horizon, $1)")
                .bind(horizon)
                .execute(&mut *tx)
                .await?;
            tracing::info!(horizon, "purged tombstones past the retention");
        }
        tx.commit().await?;
        Ok(())
    }
}
