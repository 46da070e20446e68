//! The account purge: `ACCOUNT_PURGE_RETENTION_DAYS` after `users.delete`, the daily
//! `purge-retention` job removes or anonymises what the deleted account owned (docs/api.md,
//! "Account deletion"). One transaction per account, accounts in batches of
//! [`ACCOUNTS_PER_ROUND`]; idempotent (`users.purged_at` marks a purged account, and every
//! step only touches rows it has not done yet).
//!
//! Per account:
//! 1. Object storage first, outside the transaction (deleting a missing object succeeds, so a
//!    failed run that is run again deletes nothing twice): every object of the attachments the
//!    user uploaded or that hang on the user's entries, and the archives of the user's exports
//!    (already deleted by `users.delete`; again, in case storage lost a race with a late export).
//! 2. One transaction, on the locked user row:
//!    - every journal entry the user wrote, personal and team ones, is soft-deleted (so sync
//!      clients get a tombstone) with its title, content, tags, mood, date and prompt cleared;
//!    - their attachments and the user's own: soft-deleted (tombstones), file name cleared;
//!    - personal prompts: soft-deleted, text and schedule cleared. Prompts the user wrote for a
//!      team stay (the team's), as do teams the user created: their `author`/`created_by`
//!      now points at the anonymised account row;
//!    - sessions deleted; API keys the user created revoked (a key acts as its creator);
//!    - export records deleted;
//!    - the user row anonymised (`name` `Deleted user`, no avatar, the kept address dropped)
//!      and marked `purged_at`; its tombstone goes to the user's scope again;
//!    - the tombstones as changesets (chunks of [`CHANGESET_ROWS`] rows, so no message
//!      outgrows NATS's limit) and `user.purged`, on which the worker drops the user's
//!      insights, entry activity and export records in its own schema.
//!
//! The soft-deleted rows are then hard-deleted by the same job's ordinary retention purge
//! `SOFT_DELETE_RETENTION_DAYS` later, like every other soft-deleted row.

use domain::ids::{ApiKeyId, ApiTeamId, ExportId, TeamId, UserId};
use std::time::Duration;

use messages::journal::v1::{ApiKeyRevoked, UserPurged};
use serde::Serialize;

use crate::http::error::ApiError;
use crate::modules::cdn::types::Attachment;
use crate::modules::journal_entries::types::JournalEntry;
use crate::modules::users::types::User;
use crate::state::AppState;
use sync_protocol::changes::{Op, Scope, SyncedRow};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// Accounts fetched per round (each then purged in its own transaction).
pub const ACCOUNTS_PER_ROUND: i64 = 100;
/// Rows per changeset: a tombstone of a cleared row is a few hundred bytes.
pub const CHANGESET_ROWS: usize = 500;

/// What one purge run did.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct AccountPurge {
    /// Accounts purged by this run.
    pub accounts: u64,
    pub journal_entries: u64,
    pub attachments: u64,
    pub prompts: u64,
    pub sessions: u64,
    pub api_keys: u64,
    pub exports: u64,
}

/// Purge every deleted account whose deletion is older than `retention`.
pub async fn purge_due_accounts(
    state: &AppState,
    retention: Duration,
) -> Result<AccountPurge, ApiError> {
    let mut report = AccountPurge::default();
    loop {
        let due: Vec<UserId> = sqlx::query_scalar(
            "SELECT user_id FROM users
              WHERE deleted_at IS NOT NULL AND purged_at IS NULL
                AND deleted_at <= now() - make_interval(secs => $1)
              ORDER BY deleted_at, user_id LIMIT $2",
        )
        .bind(retention.as_secs_f64())
        .bind(ACCOUNTS_PER_ROUND)
        .fetch_all(&state.db)
        .await?;
        for user_id in &due {
            purge_account(state, *user_id, &mut report).await?;
        }
        if due.len() < usize::try_from(ACCOUNTS_PER_ROUND).unwrap_or(usize::MAX) {
            return Ok(report);
        }
    }
}

#[derive(sqlx::FromRow)]
struct Objects {
    object_key: String,
    verified_key: Option<String>,
    thumbnail_key: Option<String>,
}

/// The attachments the purge of `$1` touches: the user's uploads and those on the user's
/// entries.
const USERS_ATTACHMENTS: &str = "(owner_user_id = $1 OR journal_entry_id IN (
        SELECT journal_entry_id FROM journal_entries WHERE author_user_id = $1))";

/// Purge one deleted account (see the module docs). Does nothing for an account that is not
/// deleted or already purged.
pub async fn purge_account(
    state: &AppState,
    user_id: UserId,
    report: &mut AccountPurge,
) -> Result<(), ApiError> {
    // 1. Objects, before the rows that point at them go.
    let objects: Vec<Objects> = sqlx::query_as(&format!(
        "SELECT object_key, verified_key, thumbnail_key FROM attachments
          WHERE {USERS_ATTACHMENTS}"
    ))
    .bind(user_id)
    .fetch_all(&state.db)
    .await?;
    for object in &objects {
        crate::modules::cdn::store::delete_objects(
            &state.storage,
            &object.object_key,
            object.verified_key.as_deref(),
            object.thumbnail_key.as_deref(),
        )
        .await
        .map_err(crate::http::error::storage_unavailable)?;
    }
    let export_ids: Vec<ExportId> =
        sqlx::query_scalar("SELECT export_id FROM exports WHERE user_id = $1")
            .bind(user_id)
            .fetch_all(&state.db)
            .await?;
    crate::modules::exports::store::delete_archives(&state.storage, user_id, &export_ids).await?;

    // 2. The rows, in one transaction.
    let mut tx = SyncedTx::begin(&state.db).await?;
    let due: Option<bool> = sqlx::query_scalar(
        "SELECT purged_at IS NULL FROM users
          WHERE user_id = $1 AND deleted_at IS NOT NULL FOR UPDATE",
    )
    .bind(user_id)
    .fetch_optional(&mut *tx)
    .await?;
    if due != Some(true) {
        return Ok(());
    }
    let mut chunks = Chunks::default();

    let entries: Vec<JournalEntry> = sqlx::query_as(&format!(
        "UPDATE journal_entries
            SET title = '', content = '', tags = '{{}}', mood = NULL, entry_date = NULL,
                prompt_id = NULL, deleted_at = coalesce(deleted_at, now()), updated_at = now(),
                version = version + 1
          WHERE author_user_id = $1
            AND NOT (deleted_at IS NOT NULL AND title = '' AND content = '' AND tags = '{{}}'
                     AND mood IS NULL AND entry_date IS NULL AND prompt_id IS NULL)
          RETURNING {}",
        crate::modules::journal_entries::store::COLUMNS
    ))
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    for entry in &entries {
        chunks.record(&mut tx, entry.scope(), entry)?;
    }

    let attachments: Vec<Attachment> = sqlx::query_as(&format!(
        "UPDATE attachments
            SET file_name = '', deleted_at = coalesce(deleted_at, now()), updated_at = now(),
                version = version + 1
          WHERE {USERS_ATTACHMENTS} AND (deleted_at IS NULL OR file_name <> '')
          RETURNING {}",
        crate::modules::cdn::types::COLUMNS
    ))
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    for attachment in &attachments {
        chunks.record_attachment(&mut tx, attachment)?;
    }

    let prompts = crate::modules::prompts::store::purge_personal(&mut tx, user_id).await?;
    for prompt in &prompts {
        chunks.record(&mut tx, prompt.scope(), prompt)?;
    }

    let sessions = sqlx::query("DELETE FROM sessions WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();

    let keys: Vec<(
        ApiKeyId,
        ApiTeamId,
        TeamId,
        String,
        chrono::DateTime<chrono::Utc>,
    )> = sqlx::query_as(
        "UPDATE api_keys k SET revoked_at = now(), revoked_by_user_id = $1
           FROM api_teams a
          WHERE a.api_team_id = k.api_team_id AND k.created_by_user_id = $1
            AND k.revoked_at IS NULL
          RETURNING k.api_key_id, k.api_team_id, a.team_id, k.prefix, k.revoked_at",
    )
    .bind(user_id)
    .fetch_all(&mut *tx)
    .await?;
    for (api_key_id, api_team_id, team_id, prefix, revoked_at) in &keys {
        tx.emit_ordered(
            &ApiKeyRevoked {
                api_key_id: api_key_id.to_string(),
                api_team_id: api_team_id.to_string(),
                team_id: team_id.to_string(),
                prefix: prefix.clone(),
                revoked_by_user_id: user_id.to_string(),
                revoked_at_ms: revoked_at.timestamp_millis(),
            },
            &api_key_id.to_string(),
        );
    }

    let exports = sqlx::query("DELETE FROM exports WHERE user_id = $1")
        .bind(user_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();

    let user: User = sqlx::query_as(&format!(
        "UPDATE users SET name = 'Deleted user', avatar_url = NULL, timezone = 'UTC',
                email_verified = false, deleted_email = NULL, purged_at = now(),
                updated_at = now(), version = version + 1
          WHERE user_id = $1
          RETURNING {}",
        crate::modules::users::store::USER_COLUMNS
    ))
    .bind(user_id)
    .fetch_one(&mut *tx)
    .await?;
    chunks.record(&mut tx, Scope::User(user_id), &user)?;
    tx.seal_changes();
    tx.emit(&UserPurged {
        user_id: user_id.to_string(),
        purged_at_ms: chrono::Utc::now().timestamp_millis(),
    });
    tx.commit().await?;

    for (api_key_id, ..) in &keys {
        state.api_keys.revoked(*api_key_id).await;
    }
    tracing::info!(
        %user_id,
        entries = entries.len(),
        attachments = attachments.len(),
        prompts = prompts.len(),
        sessions,
        api_keys = keys.len(),
        exports,
        "deleted account purged"
    );
    report.accounts += 1;
    report.journal_entries += entries.len() as u64;
    report.attachments += attachments.len() as u64;
    report.prompts += prompts.len() as u64;
    report.sessions += sessions;
    report.api_keys += keys.len() as u64;
    report.exports += exports;
    Ok(())
}

/// Tombstones recorded as changesets of at most [`CHANGESET_ROWS`] rows each, in order: the
/// sync transaction is sealed every [`CHANGESET_ROWS`] rows.
#[derive(Default)]
struct Chunks {
    rows: usize,
}

impl Chunks {
    fn record<R: SyncedRow>(
        &mut self,
        tx: &mut SyncedTx<'_>,
        scope: Scope,
        row: &R,
    ) -> Result<(), ApiError> {
        tx.record(&[scope], Op::Delete, row)?;
        self.counted(tx);
        Ok(())
    }

    fn record_attachment(
        &mut self,
        tx: &mut SyncedTx<'_>,
        attachment: &Attachment,
    ) -> Result<(), ApiError> {
        attachment.record(tx, Op::Delete)?;
        self.counted(tx);
        Ok(())
    }

    fn counted(&mut self, tx: &mut SyncedTx<'_>) {
        self.rows += 1;
        if self.rows >= CHANGESET_ROWS {
            tx.seal_changes();
            self.rows = 0;
        }
    }
}
