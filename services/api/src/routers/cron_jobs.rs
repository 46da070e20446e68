//! The scheduled jobs' two doors: the cron hooks of the original (`GET /cron/<job>`, the
//! `cron_job_auth` tier: `Authorization: Bearer <CRON_SECRET>`) so an external scheduler can
//! trigger a job, and the bus handlers of the cron service's tasks (and the daily
//! `retention.purge_due` event). Both run the same bodies ([`crate::jobs`]), one run of a job
//! at a time.

use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bus::{HandlerError, Msg};
use chrono::{DateTime, Utc};
use messages::journal::v1::{
    CleanUpAbandonedUploads, DispatchDuePrompts, PurgeExpiredSessions, RetentionPurgeDue,
    RollOverUsage,
};
use serde::Serialize;

use crate::http::error::ApiError;
use crate::jobs::{ApiJob, JobReport, run_exclusive};
use crate::procedures::cron_secret::authorize;
use crate::state::AppState;

fn tick_of(scheduled_for_ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(scheduled_for_ms).unwrap_or_else(Utc::now)
}

pub(crate) async fn handle(
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

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub(crate) struct HookResult {
    pub(crate) outcome: &'static str,
    pub(crate) duration_ms: u64,
    pub(crate) report: JobReport,
}

/// `GET|POST /cron/<job>` → `200 {outcome, durationMs, report}`; `409 JOB_RUNNING` while a
/// run of the job is in progress; `404 JOB_NOT_FOUND` for a job the api does not run.
pub(crate) async fn hook(
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
