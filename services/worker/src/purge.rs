//! `user.purged` (the api's account purge, docs/api.md "Account deletion"): the worker removes
//! what it holds about the user in its own schema.
//!
//! 1. The user's export archives are deleted from object storage (the api deleted them when
//!    the account was deleted; again here, since the worker wrote them; deleting a missing
//!    object succeeds).
//! 2. One transaction, holding the user's insights lock (the one the entry handlers take):
//!    the user is recorded in `purged_users` (so entry events that arrive late recreate
//!    nothing), the user's clients get tombstones for every `entry_insight_days` row and the
//!    `entry_insights` row (zeroed), and then those rows, the user's `journal_entry_activity`
//!    and `data_exports` rows are deleted.
//!
//! Idempotent: run again, it finds nothing left to delete and publishes nothing.

use bus::{HandlerError, Msg, State};
use messages::journal::v1::UserPurged;

use crate::WorkerState;
use crate::insights::{DAY_COLUMNS, EntryInsightDay, EntryInsights, INSIGHTS_COLUMNS};
use sync_protocol::changes::{Op, Scope};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

pub async fn on_user_purged(
    State(state): State<WorkerState>,
    Msg(event): Msg<UserPurged>,
) -> Result<(), HandlerError> {
    let user_id = event.parse_user_id().map_err(HandlerError::permanent)?;
    let archives: Vec<String> =
        sqlx::query_scalar("SELECT object_key FROM data_exports WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&state.db)
            .await?;
    for key in &archives {
        state.storage.delete(key).await?;
    }

    let mut tx = SyncedTx::begin(&state.db).await?;
    let locked = crate::insights::lock_insights(&mut tx, &[user_id]).await?;
    let first_time = sqlx::query(
        "INSERT INTO purged_users (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    let scope = [Scope::User(user_id)];
    let days: Vec<EntryInsightDay> = sqlx::query_as(&format!(
        "UPDATE entry_insight_days
            SET entry_count = 0, word_count = 0, deleted_at = now(), updated_at = now(),
                version = version + 1
          WHERE user_id = $1 AND deleted_at IS NULL
          RETURNING {DAY_COLUMNS}"
    ))
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    for day in &days {
        tx.record(&scope, Op::Delete, day)
            .map_err(HandlerError::retry)?;
    }
    // The totals row: published once (version > 0) and not yet tombstoned by an earlier run.
    if first_time
        && let Some(totals) = locked.get(&user_id)
        && totals.version > 0
    {
        let zeroed: EntryInsights = sqlx::query_as(&format!(
            "UPDATE entry_insights
                SET entry_count = 0, word_count = 0, active_days = 0, first_entry_day = NULL,
                    last_entry_day = NULL, current_streak_days = 0, longest_streak_days = 0,
                    hour_histogram = '{{}}', updated_at = now(), version = version + 1
              WHERE user_id = $1
              RETURNING {INSIGHTS_COLUMNS}"
        ))
        .bind(user_id)
        .fetch_one(&mut *tx)
        .await?;
        tx.record(&scope, Op::Delete, &zeroed)
            .map_err(HandlerError::retry)?;
    }
    for table in [
        "insight_sync_due",
        "entry_insight_days",
        "entry_insights",
        "data_exports",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE user_id = $1"))
            .bind(user_id)
            .execute(&mut *tx)
            .await?;
    }
    let activity = sqlx::query("DELETE FROM journal_entry_activity WHERE author_user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    tx.commit().await?;
    tracing::info!(
        %user_id,
        days = days.len(),
        activity,
        archives = archives.len(),
        "purged user's worker data removed"
    );
    Ok(())
}
