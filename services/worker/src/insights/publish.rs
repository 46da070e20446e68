//! Publishing insights: the entry handlers update a user's `entry_insights` and
//! `entry_insight_days` rows at once, but send them to the user's clients later, coalesced.
//!
//! Insights are derived data, and a user writing fast (an import, a busy day) would otherwise
//! cost one changeset per handler batch, each rewriting the user's two synced rows in the
//! streamer's read model. Instead a handler marks the (user, day) rows it changed in
//! `insight_sync_due`, in its own transaction, and wakes this process's publisher. The
//! publisher waits the sync delay (`INSIGHTS_SYNC_DELAY_MS`), so the changes of that window
//! gather, then, per user, deletes the marks and records the marked days and the totals as
//! they are now: one changeset per user per window, whatever the number of entries.
//!
//! Nothing is lost: a mark is written with the change it describes and removed with the
//! changeset that publishes it. The publisher holds the users' `entry_insights` locks (the
//! ones the handlers and the purge take first), so a handler's change and its mark are either
//! both before the publish or both after it. Users a handler holds right now are skipped
//! (`SKIP LOCKED`): that handler wakes the publisher again when it commits. Marks left by a
//! stopped process or another replica are published at start and by a slow poll.

use std::sync::Arc;
use std::time::Duration;

use bus::BusError;
use chrono::NaiveDate;
use domain::ids::UserId;
use sqlx::{PgConnection, PgPool};
use sync_protocol::changes::{Op, Scope};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use super::types::{DAY_COLUMNS, EntryInsightDay, EntryInsights, INSIGHTS_COLUMNS};

/// Users published per transaction; when more are due, the next transaction follows at once.
const USERS_PER_PUBLISH: i64 = 500;
/// How often marks nobody woke this process for (another replica's, a stopped process's) are
/// looked for.
const SLOW_POLL: Duration = Duration::from_secs(5);
/// The pause after a failed publish before the next try.
const RETRY_PAUSE: Duration = Duration::from_secs(1);

/// Mark the days a handler changed as due for publishing (their users' totals go with them).
/// In the handler's transaction, which holds the users' `entry_insights` locks.
pub(super) async fn mark_due(
    conn: &mut PgConnection,
    days: &[EntryInsightDay],
) -> Result<(), sqlx::Error> {
    if days.is_empty() {
        return Ok(());
    }
    // A mark already there stays: `DO NOTHING` writes nothing, so a busy user's later batches
    // in the same window cost no WAL here.
    sqlx::query(
        "INSERT INTO insight_sync_due (user_id, day)
         SELECT * FROM unnest($1::uuid[], $2::date[])
         ON CONFLICT (user_id, day) DO NOTHING",
    )
    .bind(days.iter().map(|day| day.user_id).collect::<Vec<_>>())
    .bind(days.iter().map(|day| day.day).collect::<Vec<_>>())
    .execute(conn)
    .await?;
    Ok(())
}

/// The process's publisher: handlers [`wake`](Self::wake) it after committing marks; it
/// publishes them after the sync delay.
#[derive(Debug, Clone)]
pub struct InsightPublisher {
    db: PgPool,
    delay: Duration,
    woken: Arc<Notify>,
}

impl InsightPublisher {
    pub fn new(db: PgPool, delay: Duration) -> Self {
        Self {
            db,
            delay,
            woken: Arc::new(Notify::new()),
        }
    }

    /// Marks were committed: publish them after the delay. A wake-up while the publisher is
    /// busy is kept, so nothing committed meanwhile waits for the slow poll.
    pub fn wake(&self) {
        self.woken.notify_one();
    }

    /// Publish due marks until `shutdown`, then once more (what the handlers that finished
    /// before it marked); what is marked after that is published at the next start.
    pub async fn run(self, shutdown: CancellationToken) {
        // Marks of an earlier run: publish them first.
        let mut pending = true;
        // The last publish was a full batch: the next one goes at once, so more users due
        // than one transaction takes wait no extra window each.
        let mut backlog = false;
        loop {
            if !pending {
                tokio::select! {
                    () = self.woken.notified() => {}
                    () = tokio::time::sleep(SLOW_POLL) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            if !backlog {
                // The window: the changes of the next `delay` share this publish.
                tokio::select! {
                    () = tokio::time::sleep(self.delay) => {}
                    () = shutdown.cancelled() => break,
                }
            }
            (pending, backlog) = match self.publish_due().await {
                Ok(more) => (more, more),
                Err(error) => {
                    tracing::warn!(%error, "publishing insights failed; retrying");
                    tokio::select! {
                        () = tokio::time::sleep(RETRY_PAUSE) => {}
                        () = shutdown.cancelled() => break,
                    }
                    (true, false)
                }
            };
        }
        loop {
            match self.publish_due().await {
                Ok(true) => continue,
                Ok(false) => break,
                Err(error) => {
                    tracing::warn!(%error, "publishing insights at shutdown failed; the next start publishes them");
                    break;
                }
            }
        }
    }

    /// Publish the marks of up to [`USERS_PER_PUBLISH`] users in one transaction. Returns
    /// whether more may be due at once (a full batch that published someone).
    pub async fn publish_due(&self) -> Result<bool, BusError> {
        let users: Vec<UserId> = sqlx::query_scalar(
            "SELECT DISTINCT user_id FROM insight_sync_due ORDER BY user_id LIMIT $1",
        )
        .bind(USERS_PER_PUBLISH)
        .fetch_all(&self.db)
        .await?;
        if users.is_empty() {
            return Ok(false);
        }
        let mut tx = SyncedTx::begin(&self.db).await?;
        // Same lock order as the handlers (user id); users a handler holds are skipped.
        let totals: Vec<EntryInsights> = sqlx::query_as(&format!(
            "SELECT {INSIGHTS_COLUMNS} FROM entry_insights WHERE user_id = ANY($1)
              ORDER BY user_id FOR UPDATE SKIP LOCKED"
        ))
        .bind(&users)
        .fetch_all(&mut *tx)
        .await?;
        // Marks of users whose rows are gone (the account purge removes both; a mark that
        // outlived its row would be looked at forever).
        sqlx::query(
            "DELETE FROM insight_sync_due d
              WHERE d.user_id = ANY($1)
                AND NOT EXISTS (SELECT 1 FROM entry_insights i WHERE i.user_id = d.user_id)",
        )
        .bind(&users)
        .execute(&mut *tx)
        .await?;
        let locked: Vec<UserId> = totals.iter().map(|row| row.user_id).collect();
        let marked: Vec<(UserId, NaiveDate)> = sqlx::query_as(
            "DELETE FROM insight_sync_due WHERE user_id = ANY($1) RETURNING user_id, day",
        )
        .bind(&locked)
        .fetch_all(&mut *tx)
        .await?;
        let days: Vec<EntryInsightDay> = sqlx::query_as(&format!(
            "SELECT {DAY_COLUMNS} FROM entry_insight_days
               JOIN unnest($1::uuid[], $2::date[]) AS marked (user_id, day) USING (user_id, day)
              ORDER BY user_id, day"
        ))
        .bind(marked.iter().map(|(user, _)| *user).collect::<Vec<_>>())
        .bind(marked.iter().map(|(_, day)| *day).collect::<Vec<_>>())
        .fetch_all(&mut *tx)
        .await?;
        for user_totals in &totals {
            let user_id = user_totals.user_id;
            if !marked.iter().any(|(user, _)| *user == user_id) {
                continue;
            }
            record_user(
                &mut tx,
                user_totals,
                days.iter().filter(|day| day.user_id == user_id),
            )?;
        }
        tx.commit().await?;
        metrics::counter!("worker_insight_publishes_total").increment(1);
        metrics::counter!("worker_insight_users_published_total").increment(locked.len() as u64);
        // More may be due at once only if this one made progress: when every user it looked at
        // was held by a handler, those handlers wake the publisher when they commit.
        Ok(users.len() as i64 == USERS_PER_PUBLISH && !locked.is_empty())
    }
}

/// One user's sync transaction: the given day rows and the totals, as they are now.
pub(super) fn record_user<'a>(
    tx: &mut SyncedTx<'_>,
    totals: &EntryInsights,
    days: impl Iterator<Item = &'a EntryInsightDay>,
) -> Result<(), BusError> {
    let scope = [Scope::User(totals.user_id)];
    for day in days {
        let op = match (&day.deleted_at, day.version) {
            (Some(_), _) => Op::Delete,
            (None, 1) => Op::Insert,
            (None, _) => Op::Update,
        };
        tx.record(&scope, op, day)
            .map_err(|error| BusError::Encode(error.to_string()))?;
    }
    // Version 0: nothing was ever computed for the user (cannot be marked, but never publish
    // the empty placeholder).
    if totals.version > 0 {
        let op = if totals.version == 1 {
            Op::Insert
        } else {
            Op::Update
        };
        tx.record(&scope, op, totals)
            .map_err(|error| BusError::Encode(error.to_string()))?;
    }
    tx.seal_changes();
    Ok(())
}
