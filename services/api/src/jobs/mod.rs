//! The api's side of the scheduled jobs: the bodies of the jobs that touch its tables, run
//! by the cron service's tasks (and the daily `retention.purge_due` event) and by the cron
//! hooks of the original (`/cron/<job>`); both doors are wired in `routers::cron_jobs`.
//!
//! Every body is idempotent, and two runs of one job never overlap in the api: a run holds a
//! Postgres advisory lock for its job, and a run that finds it taken steps aside (the one in
//! progress does the work; the hook answers `409 JOB_RUNNING`).
//!
//! - `dispatch-due-prompts`: every scheduled prompt whose occurrence (its time in its zone, on
//!   a scheduled weekday) fell in the hour up to the tick, and not before the prompt existed,
//!   gets one `prompt.due` per recipient (the owner, or every active team member), at most
//!   once per prompt and local date: `prompt_dispatches` is written with the events in one
//!   transaction. The hour of look-back lets a late or caught-up run still send today's prompt.
//! - `purge-expired-sessions`: sessions past expiry or revoked, expired OAuth states.
//! - `roll-over-usage`: [`crate::modules::subscriptions::metering::roll_over_periods`].
//! - `purge-retention`: first the deleted accounts past `ACCOUNT_PURGE_RETENTION_DAYS`
//!   ([`crate::modules::users::account_purge`]); then soft-deleted attachments (their objects
//!   first), journal entries, prompts and memberships older than `SOFT_DELETE_RETENTION_DAYS`,
//!   deleted accounts' kept addresses, old dispatch records and the bus's own tables; open API
//!   request logs older than `REQUEST_LOG_RETENTION_DAYS`.
//! - `clean-up-abandoned-uploads`: [`crate::modules::cdn::store::clean_up_abandoned_uploads`].

pub mod dispatch_prompts;
pub mod retention;
#[cfg(test)]
mod tests;

use chrono::{DateTime, Utc};
use serde::Serialize;

use self::dispatch_prompts::dispatch_due_prompts;
use self::retention::purge_expired_sessions;
use self::retention::purge_retention;
use crate::http::error::ApiError;
use crate::state::AppState;

/// The jobs an external scheduler may trigger here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ApiJob {
    DispatchDuePrompts,
    PurgeExpiredSessions,
    RollOverUsage,
    PurgeRetention,
    CleanUpAbandonedUploads,
}

impl ApiJob {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "dispatch-due-prompts" => Some(Self::DispatchDuePrompts),
            "purge-expired-sessions" => Some(Self::PurgeExpiredSessions),
            "roll-over-usage" => Some(Self::RollOverUsage),
            "purge-retention" => Some(Self::PurgeRetention),
            "clean-up-abandoned-uploads" => Some(Self::CleanUpAbandonedUploads),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Self::DispatchDuePrompts => "dispatch-due-prompts",
            Self::PurgeExpiredSessions => "purge-expired-sessions",
            Self::RollOverUsage => "roll-over-usage",
            Self::PurgeRetention => "purge-retention",
            Self::CleanUpAbandonedUploads => "clean-up-abandoned-uploads",
        }
    }
}

/// What a job run did.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", tag = "job")]
pub enum JobReport {
    #[serde(rename = "dispatch-due-prompts", rename_all = "camelCase")]
    DispatchDuePrompts {
        /// Prompt occurrences dispatched by this run (not already dispatched before).
        prompts: u64,
        /// `prompt.due` events emitted.
        notifications: u64,
    },
    #[serde(rename = "purge-expired-sessions", rename_all = "camelCase")]
    PurgeExpiredSessions { sessions: u64, oauth_states: u64 },
    #[serde(rename = "roll-over-usage", rename_all = "camelCase")]
    RollOverUsage { subscriptions: u64 },
    #[serde(rename = "purge-retention", rename_all = "camelCase")]
    PurgeRetention {
        /// What the account purge did ([`crate::modules::users::account_purge`]).
        deleted_accounts: crate::modules::users::account_purge::AccountPurge,
        attachments: u64,
        journal_entries: u64,
        prompts: u64,
        team_members: u64,
        deleted_addresses: u64,
        prompt_dispatches: u64,
        outbox_rows: u64,
        processed_messages: u64,
        /// Open API request log rows older than `REQUEST_LOG_RETENTION_DAYS`.
        request_logs: u64,
    },
    #[serde(rename = "clean-up-abandoned-uploads", rename_all = "camelCase")]
    CleanUpAbandonedUploads {
        /// Attachments expired (objects deleted).
        attachments: u64,
    },
}

/// Run `job` unless a run of it is in progress (then `Ok(None)`), holding its advisory lock
/// meanwhile. The lock lives on one pooled connection; if the process dies, Postgres frees it.
pub async fn run_exclusive(
    state: &AppState,
    job: ApiJob,
    tick: DateTime<Utc>,
) -> Result<Option<JobReport>, ApiError> {
    let mut lock_conn = state.db.acquire().await?;
    let locked: bool =
        sqlx::query_scalar("SELECT pg_try_advisory_lock(hashtext('api-cron-job'), hashtext($1))")
            .bind(job.name())
            .fetch_one(&mut *lock_conn)
            .await?;
    if !locked {
        return Ok(None);
    }
    let result = run_job(state, job, tick).await;
    let unlocked = sqlx::query("SELECT pg_advisory_unlock(hashtext('api-cron-job'), hashtext($1))")
        .bind(job.name())
        .execute(&mut *lock_conn)
        .await;
    if unlocked.is_err() {
        // The lock must not outlive the run: drop the connection instead of pooling it.
        drop(lock_conn.detach());
    }
    result.map(Some)
}

async fn run_job(
    state: &AppState,
    job: ApiJob,
    tick: DateTime<Utc>,
) -> Result<JobReport, ApiError> {
    match job {
        ApiJob::DispatchDuePrompts => dispatch_due_prompts(&state.db, tick).await,
        ApiJob::PurgeExpiredSessions => purge_expired_sessions(&state.db).await,
        ApiJob::RollOverUsage => Ok(JobReport::RollOverUsage {
            subscriptions: crate::modules::subscriptions::metering::roll_over_periods(&state.db)
                .await?,
        }),
        ApiJob::PurgeRetention => {
            // Accounts first: what their purge soft-deletes is then hard-deleted by the
            // ordinary retention purge `SOFT_DELETE_RETENTION_DAYS` later.
            let deleted_accounts = crate::modules::users::account_purge::purge_due_accounts(
                state,
                state.config.account_purge_retention,
            )
            .await?;
            purge_retention(
                deleted_accounts,
                &state.db,
                &state.storage,
                state.config.soft_delete_retention,
                state.config.request_log_retention,
            )
            .await
        }
        ApiJob::CleanUpAbandonedUploads => Ok(JobReport::CleanUpAbandonedUploads {
            attachments: crate::modules::cdn::store::clean_up_abandoned_uploads(
                &state.db,
                &state.storage,
                state.config.cdn.abandoned_after,
            )
            .await?,
        }),
    }
}

// ---- dispatch-due-prompts -------------------------------------------------------------------
