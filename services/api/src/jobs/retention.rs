//! `purge-expired-sessions` and `purge-retention`: what is past its time, deleted in chunks.

use std::time::Duration;

use platform::s3::ObjectStore;
use sqlx::PgPool;

use super::JobReport;
use super::dispatch_prompts::DISPATCH_RECORD_DAYS;
use crate::http::error::ApiError;

pub async fn purge_expired_sessions(db: &PgPool) -> Result<JobReport, ApiError> {
    let sessions =
        sqlx::query("DELETE FROM sessions WHERE expires_at < now() OR revoked_at IS NOT NULL")
            .execute(db)
            .await?
            .rows_affected();
    let oauth_states = sqlx::query("DELETE FROM oauth_states WHERE expires_at < now()")
        .execute(db)
        .await?
        .rows_affected();
    Ok(JobReport::PurgeExpiredSessions {
        sessions,
        oauth_states,
    })
}

/// Delete in chunks of 1,000 until `statement` (which must `LIMIT` itself) deletes fewer.
async fn delete_in_chunks(
    db: &PgPool,
    statement: &str,
    retention: Duration,
) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let deleted = sqlx::query(statement)
            .bind(retention.as_secs_f64())
            .execute(db)
            .await?
            .rows_affected();
        total += deleted;
        if deleted < 1000 {
            return Ok(total);
        }
    }
}

pub async fn purge_retention(
    deleted_accounts: crate::modules::users::account_purge::AccountPurge,
    db: &PgPool,
    storage: &ObjectStore,
    retention: Duration,
    request_log_retention: Duration,
) -> Result<JobReport, ApiError> {
    // Attachments first (their objects, then their rows): an entry goes only without any.
    let attachments = crate::modules::cdn::store::purge_deleted(db, storage, retention).await?;
    let journal_entries = delete_in_chunks(
        db,
        "DELETE FROM journal_entries WHERE journal_entry_id IN (
            SELECT e.journal_entry_id FROM journal_entries e
             WHERE e.deleted_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM attachments a
                                WHERE a.journal_entry_id = e.journal_entry_id)
             LIMIT 1000)",
        retention,
    )
    .await?;
    // A deleted prompt still referenced by an entry stays until the entry goes.
    let prompts = delete_in_chunks(
        db,
        "WITH doomed AS (
            SELECT p.prompt_id FROM prompts p
             WHERE p.deleted_at < now() - make_interval(secs => $1)
               AND NOT EXISTS (SELECT 1 FROM journal_entries e WHERE e.prompt_id = p.prompt_id)
             LIMIT 1000),
         dispatches AS (DELETE FROM prompt_dispatches WHERE prompt_id IN (SELECT prompt_id FROM doomed))
         DELETE FROM prompts WHERE prompt_id IN (SELECT prompt_id FROM doomed)",
        retention,
    )
    .await?;
    let team_members = delete_in_chunks(
        db,
        "DELETE FROM team_members WHERE (team_id, user_id) IN (
            SELECT team_id, user_id FROM team_members
             WHERE deleted_at < now() - make_interval(secs => $1) LIMIT 1000)",
        retention,
    )
    .await?;
    // A deleted account's row stays (entries and teams reference it); the address it kept
    // goes.
    let deleted_addresses = sqlx::query(
        "UPDATE users SET deleted_email = NULL
          WHERE deleted_email IS NOT NULL AND deleted_at < now() - make_interval(secs => $1)",
    )
    .bind(retention.as_secs_f64())
    .execute(db)
    .await?
    .rows_affected();
    let prompt_dispatches =
        sqlx::query("DELETE FROM prompt_dispatches WHERE local_date < current_date - $1::integer")
            .bind(DISPATCH_RECORD_DAYS)
            .execute(db)
            .await?
            .rows_affected();
    let bus = bus::maintenance::purge(db, bus::maintenance::BusRetention::default()).await?;
    // Oldest first by `request_logs_created_at_idx`, 1,000 rows a statement: a large backlog
    // never holds one long transaction.
    let request_logs = delete_in_chunks(
        db,
        "DELETE FROM request_logs WHERE request_log_id IN (
            SELECT request_log_id FROM request_logs
             WHERE created_at < now() - make_interval(secs => $1)
             ORDER BY created_at LIMIT 1000)",
        request_log_retention,
    )
    .await?;
    Ok(JobReport::PurgeRetention {
        deleted_accounts,
        attachments,
        journal_entries,
        prompts,
        team_members,
        deleted_addresses,
        prompt_dispatches,
        outbox_rows: bus.outbox_rows,
        processed_messages: bus.processed_messages,
        request_logs,
    })
}

// ---- bus handlers (the cron service's tasks) ------------------------------------------------
