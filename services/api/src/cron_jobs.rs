//! The api's side of the scheduled jobs: the bodies of the jobs that touch its tables, run
//! by the cron service's tasks (and the daily `retention.purge_due` event), and the cron hooks
//! of the original (`/cron/<job>`, `cron_job_auth`) so an external scheduler can trigger one.
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
//! - `roll-over-usage`: [`crate::metering::roll_over_periods`].
//! - `purge-retention`: first the deleted accounts past `ACCOUNT_PURGE_RETENTION_DAYS`
//!   ([`crate::account_purge`]); then soft-deleted attachments (their objects first), journal entries,
//!   prompts and memberships older than `SOFT_DELETE_RETENTION_DAYS`, deleted accounts' kept
//!   addresses, old dispatch records and the bus's own tables; open API request logs older
//!   than `REQUEST_LOG_RETENTION_DAYS`.
//! - `clean-up-abandoned-uploads`: [`crate::attachments::clean_up_abandoned_uploads`].

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::{HandlerError, Msg};
use chrono::{DateTime, Datelike, Days, NaiveDate, NaiveTime, TimeZone, Utc};
use chrono_tz::Tz;
use messages::journal::v1::{
    CleanUpAbandonedUploads, DispatchDuePrompts, PromptDue, PurgeExpiredSessions,
    RetentionPurgeDue, RollOverUsage,
};
use secrecy::ExposeSecret;
use serde::Serialize;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;
use uuid::Uuid;

use platform::s3::ObjectStore;

use crate::AppState;
use crate::error::ApiError;
use crate::prompts::local_instant;

/// How far back from its tick a dispatch looks for occurrences it has not sent.
pub const DISPATCH_LOOKBACK: Duration = Duration::from_secs(3600);
/// Dispatch records are kept this long (far beyond any redelivery of a dispatch task).
const DISPATCH_RECORD_DAYS: i32 = 30;

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
        /// What the account purge did ([`crate::account_purge`]).
        deleted_accounts: crate::account_purge::AccountPurge,
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
            subscriptions: crate::metering::roll_over_periods(&state.db).await?,
        }),
        ApiJob::PurgeRetention => {
            // Accounts first: what their purge soft-deletes is then hard-deleted by the
            // ordinary retention purge `SOFT_DELETE_RETENTION_DAYS` later.
            let deleted_accounts = crate::account_purge::purge_due_accounts(
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
            attachments: crate::attachments::clean_up_abandoned_uploads(
                &state.db,
                &state.storage,
                state.config.cdn.abandoned_after,
            )
            .await?,
        }),
    }
}

// ---- dispatch-due-prompts -------------------------------------------------------------------

#[derive(Debug, sqlx::FromRow)]
struct ScheduledPrompt {
    prompt_id: Uuid,
    owner_user_id: Option<Uuid>,
    team_id: Option<Uuid>,
    text: String,
    schedule_time: NaiveTime,
    schedule_timezone: String,
    schedule_weekdays: Vec<i16>,
    created_at: DateTime<Utc>,
}

/// The occurrence of a schedule in `(tick - lookback, tick]`, not before `not_before`: its
/// local date and instant.
pub fn due_occurrence(
    time: NaiveTime,
    zone: Tz,
    weekdays: &[i16],
    tick: DateTime<Utc>,
    lookback: Duration,
    not_before: DateTime<Utc>,
) -> Option<(NaiveDate, DateTime<Utc>)> {
    let window_start = tick - chrono::Duration::from_std(lookback).ok()?;
    let today = zone.from_utc_datetime(&tick.naive_utc()).date_naive();
    // The look-back is at most a day, so the occurrence is on the tick's local date or the
    // one before; the later one wins.
    [Some(today), today.checked_sub_days(Days::new(1))]
        .into_iter()
        .flatten()
        .filter(|date| {
            let weekday = i16::try_from(date.weekday().number_from_monday()).unwrap_or(0);
            weekdays.contains(&weekday)
        })
        .filter_map(|date| local_instant(zone, date, time).map(|at| (date, at)))
        .find(|(_, at)| *at > window_start && *at <= tick && *at >= not_before)
}

/// See the module docs. `tick` is the run's scheduled time.
pub async fn dispatch_due_prompts(db: &PgPool, tick: DateTime<Utc>) -> Result<JobReport, ApiError> {
    let scheduled: Vec<ScheduledPrompt> = sqlx::query_as(
        "SELECT prompt_id, owner_user_id, team_id, text, schedule_time, schedule_timezone,
                schedule_weekdays, created_at
           FROM prompts
          WHERE deleted_at IS NULL AND schedule_time IS NOT NULL",
    )
    .fetch_all(db)
    .await?;
    let mut prompts = 0;
    let mut notifications = 0;
    for prompt in scheduled {
        let Ok(zone) = prompt.schedule_timezone.parse::<Tz>() else {
            tracing::warn!(prompt_id = %prompt.prompt_id, zone = %prompt.schedule_timezone, "unknown time zone; prompt skipped");
            continue;
        };
        let Some((local_date, scheduled_at)) = due_occurrence(
            prompt.schedule_time,
            zone,
            &prompt.schedule_weekdays,
            tick,
            DISPATCH_LOOKBACK,
            prompt.created_at,
        ) else {
            continue;
        };
        if let Some(sent) = dispatch_one(db, &prompt, local_date, scheduled_at).await? {
            prompts += 1;
            notifications += sent;
        }
    }
    Ok(JobReport::DispatchDuePrompts {
        prompts,
        notifications,
    })
}

/// One occurrence, in one transaction: the dispatch record and a `prompt.due` per recipient.
/// `None` when it was dispatched before.
async fn dispatch_one(
    db: &PgPool,
    prompt: &ScheduledPrompt,
    local_date: NaiveDate,
    scheduled_at: DateTime<Utc>,
) -> Result<Option<u64>, ApiError> {
    let mut tx = db.begin().await?;
    let first = sqlx::query(
        "INSERT INTO prompt_dispatches (prompt_id, local_date, scheduled_at, recipients)
         VALUES ($1, $2, $3, 0) ON CONFLICT DO NOTHING",
    )
    .bind(prompt.prompt_id)
    .bind(local_date)
    .bind(scheduled_at)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        == 1;
    if !first {
        return Ok(None);
    }
    // Recipients as of now: the live owner, or the team's active members (live accounts).
    let recipients: Vec<(Uuid, String, String, Option<String>)> =
        match (prompt.owner_user_id, prompt.team_id) {
            (_, Some(team_id)) => {
                sqlx::query_as(
                    "SELECT u.user_id, u.email, u.name, t.name
                   FROM team_members m
                   JOIN teams t ON t.team_id = m.team_id
                   JOIN users u ON u.user_id = m.user_id
                  WHERE m.team_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL
                    AND u.deleted_at IS NULL
                  ORDER BY u.user_id",
                )
                .bind(team_id)
                .fetch_all(&mut *tx)
                .await?
            }
            (Some(owner), None) => {
                sqlx::query_as(
                    "SELECT user_id, email, name, NULL::text FROM users
                  WHERE user_id = $1 AND deleted_at IS NULL",
                )
                .bind(owner)
                .fetch_all(&mut *tx)
                .await?
            }
            (None, None) => Vec::new(),
        };
    for (user_id, email, name, team_name) in &recipients {
        bus::outbox::emit(
            &mut tx,
            &PromptDue {
                prompt_id: prompt.prompt_id.to_string(),
                user_id: user_id.to_string(),
                email: email.clone(),
                name: name.clone(),
                prompt_text: prompt.text.clone(),
                team_id: prompt.team_id.map(|id| id.to_string()).unwrap_or_default(),
                team_name: team_name.clone().unwrap_or_default(),
                local_date: local_date.format("%Y-%m-%d").to_string(),
                scheduled_at_ms: scheduled_at.timestamp_millis(),
                timezone: prompt.schedule_timezone.clone(),
            },
        )
        .await?;
    }
    let count = recipients.len() as u64;
    sqlx::query(
        "UPDATE prompt_dispatches SET recipients = $3 WHERE prompt_id = $1 AND local_date = $2",
    )
    .bind(prompt.prompt_id)
    .bind(local_date)
    .bind(i32::try_from(count).unwrap_or(i32::MAX))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some(count))
}

// ---- purges ---------------------------------------------------------------------------------

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
    deleted_accounts: crate::account_purge::AccountPurge,
    db: &PgPool,
    storage: &ObjectStore,
    retention: Duration,
    request_log_retention: Duration,
) -> Result<JobReport, ApiError> {
    // Attachments first (their objects, then their rows): an entry goes only without any.
    let attachments = crate::attachments::purge_deleted(db, storage, retention).await?;
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

fn tick_of(scheduled_for_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(scheduled_for_ms).unwrap_or_else(Utc::now)
}

async fn handle(
    state: &AppState,
    job: ApiJob,
    cron_run_id: &str,
    scheduled_for_ms: i64,
) -> Result<(), HandlerError> {
    match run_exclusive(state, job, tick_of(scheduled_for_ms)).await? {
        Some(report) => {
            tracing::info!(job = job.name(), cron_run_id, ?report, "job done");
        }
        None => {
            tracing::info!(
                job = job.name(),
                cron_run_id,
                "a run of this job is in progress; this one steps aside"
            );
        }
    }
    Ok(())
}

/// A cron message that runs one of the api's jobs: which job, and the run it belongs to.
pub trait JobMessage {
    const JOB: ApiJob;
    fn cron_run_id(&self) -> &str;
    fn scheduled_for_ms(&self) -> i64;
}

macro_rules! job_message {
    ($($message:ty => $job:ident),* $(,)?) => {$(
        impl JobMessage for $message {
            const JOB: ApiJob = ApiJob::$job;
            fn cron_run_id(&self) -> &str {
                &self.cron_run_id
            }
            fn scheduled_for_ms(&self) -> i64 {
                self.scheduled_for_ms
            }
        }
    )*};
}

job_message! {
    DispatchDuePrompts => DispatchDuePrompts,
    PurgeExpiredSessions => PurgeExpiredSessions,
    RollOverUsage => RollOverUsage,
    CleanUpAbandonedUploads => CleanUpAbandonedUploads,
    RetentionPurgeDue => PurgeRetention,
}

/// The bus handler of every job message (the four tasks and the `retention.purge_due` event).
pub async fn on_job<M: JobMessage>(
    bus::State(state): bus::State<AppState>,
    Msg(message): Msg<M>,
) -> Result<(), HandlerError> {
    handle(
        &state,
        M::JOB,
        message.cron_run_id(),
        message.scheduled_for_ms(),
    )
    .await
}

// ---- the cron hooks (`cron_job_auth`) -------------------------------------------------------

pub fn routes() -> Router<AppState> {
    Router::new().route("/cron/{job}", get(hook).post(hook))
}

/// `cron_job_auth`: `Authorization: Bearer <CRON_SECRET>`, compared in constant time
/// (both sides hashed first, so not even the length leaks).
fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(secret) = &state.config.cron_job_secret else {
        return Err(ApiError::defined(
            "CRON_HOOKS_DISABLED",
            StatusCode::NOT_FOUND,
            "Cron hooks are disabled: CRON_SECRET is not set",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized(
            "Missing `Authorization: Bearer <cron job secret>`",
        ))?;
    let presented = Sha256::digest(presented.trim().as_bytes());
    let expected = Sha256::digest(secret.expose_secret().as_bytes());
    if bool::from(presented.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("Invalid cron job secret"))
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
struct HookResult {
    outcome: &'static str,
    duration_ms: u64,
    report: JobReport,
}

/// `GET|POST /cron/<job>` → `200 {outcome, durationMs, report}`; `409 JOB_RUNNING` while a
/// run of the job is in progress; `404 JOB_NOT_FOUND` for a job the api does not run.
async fn hook(
    State(state): State<AppState>,
    Path(job): Path<String>,
    headers: HeaderMap,
) -> Response {
    if let Err(error) = authorize(&state, &headers) {
        return error.into_plain_response();
    }
    let Some(api_job) = ApiJob::from_name(&job) else {
        return ApiError::defined(
            "JOB_NOT_FOUND",
            StatusCode::NOT_FOUND,
            format!(
                "No job `{job}` here (jobs: dispatch-due-prompts, purge-expired-sessions, roll-over-usage, purge-retention, clean-up-abandoned-uploads)"
            ),
        )
        .into_plain_response();
    };
    let started = Instant::now();
    match run_exclusive(&state, api_job, Utc::now()).await {
        Ok(Some(report)) => axum::Json(HookResult {
            outcome: "succeeded",
            duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
            report,
        })
        .into_response(),
        Ok(None) => ApiError::defined(
            "JOB_RUNNING",
            StatusCode::CONFLICT,
            format!("A run of `{job}` is in progress; try again when it has finished"),
        )
        .into_plain_response(),
        Err(error) => error.into_plain_response(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn at(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text).unwrap().to_utc()
    }

    #[test]
    fn occurrences_are_found_in_the_schedules_zone_within_the_look_back() {
        let nine = NaiveTime::from_hms_opt(9, 0, 0).unwrap();
        let berlin: Tz = "Europe/Berlin".parse().unwrap();
        // 2026-03-02 is a Monday; 09:00 in Berlin (CET) is 08:00 UTC.
        let monday = [1];
        let created = at("2026-01-01T00:00:00Z");
        let hour = Duration::from_secs(3600);
        assert_eq!(
            due_occurrence(
                nine,
                berlin,
                &monday,
                at("2026-03-02T08:00:00Z"),
                hour,
                created
            ),
            Some((
                NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                at("2026-03-02T08:00:00Z")
            ))
        );
        // Still due 59 minutes late (a caught-up run), not an hour and more.
        assert!(
            due_occurrence(
                nine,
                berlin,
                &monday,
                at("2026-03-02T08:59:00Z"),
                hour,
                created
            )
            .is_some()
        );
        assert!(
            due_occurrence(
                nine,
                berlin,
                &monday,
                at("2026-03-02T09:00:00Z"),
                hour,
                created
            )
            .is_none()
        );
        // Not before its time, not on another weekday, not before the prompt existed.
        assert!(
            due_occurrence(
                nine,
                berlin,
                &monday,
                at("2026-03-02T07:59:00Z"),
                hour,
                created
            )
            .is_none()
        );
        assert!(
            due_occurrence(
                nine,
                berlin,
                &[2],
                at("2026-03-02T08:00:00Z"),
                hour,
                created
            )
            .is_none()
        );
        assert!(
            due_occurrence(
                nine,
                berlin,
                &monday,
                at("2026-03-02T08:30:00Z"),
                hour,
                at("2026-03-02T08:10:00Z")
            )
            .is_none()
        );
    }

    #[test]
    fn a_late_evening_occurrence_counts_for_its_local_date() {
        // 23:30 in Los Angeles on Monday 2026-03-02 is 07:30 UTC on Tuesday.
        let time = NaiveTime::from_hms_opt(23, 30, 0).unwrap();
        let zone: Tz = "America/Los_Angeles".parse().unwrap();
        let found = due_occurrence(
            time,
            zone,
            &[1],
            at("2026-03-03T07:31:00Z"),
            Duration::from_secs(3600),
            at("2026-01-01T00:00:00Z"),
        );
        assert_eq!(
            found,
            Some((
                NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                at("2026-03-03T07:30:00Z")
            ))
        );
    }

    #[test]
    fn job_names_round_trip() {
        for job in [
            ApiJob::DispatchDuePrompts,
            ApiJob::PurgeExpiredSessions,
            ApiJob::RollOverUsage,
            ApiJob::PurgeRetention,
            ApiJob::CleanUpAbandonedUploads,
        ] {
            assert_eq!(ApiJob::from_name(job.name()), Some(job));
        }
        assert_eq!(ApiJob::from_name("nonsense"), None);
    }
}
