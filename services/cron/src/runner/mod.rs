//! Running a job's tick exactly once across replicas, with its history.
//!
//! - **Claim** (one transaction, the job's row locked `FOR UPDATE`): a tick at or before
//!   `last_scheduled_for` is already accounted for — nothing to do. A tick while another
//!   run's lease is unexpired is recorded `skipped` (the original's mutex flag, cluster-wide).
//!   Otherwise the run takes the lease and is recorded `running`; an expired lease's run is
//!   recorded `abandoned` first. `job_runs_one_per_tick` backs this up in the schema.
//! - **Run**: the job's messages go to the outbox in the transaction that marks the run
//!   `succeeded` and releases the lease — and only while the lease is still this run's, so a
//!   run whose lease lapsed (its replica stalled past the lease) emits nothing.
//! - **Lease**: renewed every third of its length while the run is in progress.
//! - **Misfire**: [`Runner::catch_up`] runs a job's latest missed tick once, recording how
//!   many ticks before it were skipped; it runs at start (ticks missed while every replica
//!   was down) and periodically (ticks missed because Postgres was unreachable).
//! - **One schedule**: `cron.jobs` holds the schedule every replica follows. A replica that
//!   starts with other `CRON_SCHEDULE_*` / `CRON_DISABLED_JOBS` values replaces it (the newest
//!   deployment wins, loudly: [`Runner::register`]); a claim refuses a tick that is not one of
//!   the stored schedule, and running replicas switch to it ([`Runner::stored_jobs`]).

mod runs;

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use crate::jobs::{Job, Schedule};

/// Why a run started.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    Schedule,
    CatchUp,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Self::Schedule => "schedule",
            Self::CatchUp => "catch_up",
        }
    }
}

/// The run this replica claimed and must finish.
#[derive(Debug, Clone)]
pub struct ClaimedRun {
    pub job_run_id: Uuid,
    pub job_name: &'static str,
    pub scheduled_for: DateTime<Utc>,
}

/// What claiming a tick found.
#[derive(Debug)]
pub enum Claim {
    /// This replica runs it.
    Run(ClaimedRun),
    /// The tick was already run, skipped or caught up (by any replica).
    AlreadyAccounted,
    /// Another run still holds the lease; the tick is recorded `skipped`.
    Skipped { holder: String },
    /// The tick is not one of the stored schedule (or the stored job is disabled): this
    /// replica's configuration disagrees with the newest one. Nothing is recorded.
    NotScheduled { stored_schedule: String },
}

/// A stored schedule this replica's configuration replaced at start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ScheduleReplaced {
    pub job_name: &'static str,
    pub previous_schedule: String,
    pub previous_enabled: bool,
    /// The replica that stored the previous configuration, when known.
    pub previous_configured_by: Option<String>,
}

/// How a claimed run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Finished {
    /// Its messages are in the outbox.
    Succeeded { message_ids: Vec<Uuid> },
    /// The lease lapsed before the run finished (and another replica may have run since):
    /// nothing was emitted.
    LeaseLost,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("emitting the job's messages: {0}")]
    Bus(#[from] bus::BusError),
    #[error("job `{0}` is not registered")]
    UnknownJob(String),
}

/// Claims, runs and records jobs for one replica.
#[derive(Clone)]
pub struct Runner {
    pool: PgPool,
    replica_id: String,
    lease: Duration,
}

/// A job's row as a claim sees it.
#[derive(sqlx::FromRow)]
struct JobState {
    schedule: String,
    enabled: bool,
    last_scheduled_for: Option<DateTime<Utc>>,
    lease_run_id: Option<Uuid>,
    lease_holder: Option<String>,
    /// The lease is held and unexpired.
    leased: bool,
}

/// A job as `cron.jobs` holds it.
#[derive(Debug, Clone)]
pub struct StoredJob {
    pub job: Job,
    /// The replica whose configuration stored it (`None` before this was recorded).
    pub configured_by: Option<String>,
}

/// Missed ticks counted for the history stop here (a per-second schedule down for a day).
const MISSED_TICKS_CAP: usize = 100_000;

impl Runner {
    pub fn new(pool: PgPool, replica_id: String, lease: Duration) -> Self {
        Self {
            pool,
            replica_id,
            lease,
        }
    }

    pub fn replica_id(&self) -> &str {
        &self.replica_id
    }

    /// Record the jobs (schedule, enabled) so the history and the lease have a row to hang on.
    /// The first replica to see a job sets `created_at`, which bounds its first catch-up.
    ///
    /// The stored schedule is the one every replica follows, and the newest start sets it: a
    /// rolling deploy that changes `CRON_SCHEDULE_*` takes effect with its first new replica.
    /// Replacing a different stored configuration is logged as a warning naming both values,
    /// and returned.
    pub async fn register(&self, jobs: &[Job]) -> Result<Vec<ScheduleReplaced>, sqlx::Error> {
        let mut replaced = Vec::new();
        for job in jobs {
            let mut tx = self.pool.begin().await?;
            let previous: Option<(String, bool, Option<String>)> = sqlx::query_as(
                "SELECT schedule, enabled, configured_by FROM jobs WHERE job_name = $1 FOR UPDATE",
            )
            .bind(job.name())
            .fetch_optional(&mut *tx)
            .await?;
            sqlx::query(
                "INSERT INTO jobs (job_name, schedule, enabled, configured_by) VALUES ($1, $2, $3, $4)
                 ON CONFLICT (job_name) DO UPDATE
                    SET schedule = EXCLUDED.schedule, enabled = EXCLUDED.enabled,
                        configured_by = EXCLUDED.configured_by, updated_at = now()
                  WHERE (jobs.schedule, jobs.enabled) IS DISTINCT FROM (EXCLUDED.schedule, EXCLUDED.enabled)",
            )
            .bind(job.name())
            .bind(job.schedule.as_str())
            .bind(job.enabled)
            .bind(&self.replica_id)
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            if let Some((previous_schedule, previous_enabled, previous_configured_by)) = previous
                && (previous_schedule != job.schedule.as_str() || previous_enabled != job.enabled)
            {
                tracing::warn!(
                    job = job.name(),
                    variable = %job.spec.schedule_variable(),
                    schedule = job.schedule.as_str(),
                    enabled = job.enabled,
                    previous_schedule = %previous_schedule,
                    previous_enabled,
                    previous_configured_by = previous_configured_by.as_deref().unwrap_or("unknown"),
                    "this replica's configuration replaces the stored schedule; every replica follows it from now on"
                );
                replaced.push(ScheduleReplaced {
                    job_name: job.name(),
                    previous_schedule,
                    previous_enabled,
                    previous_configured_by,
                });
            }
        }
        Ok(replaced)
    }

    /// `jobs` as stored: the schedule and enabled flag every replica follows, with the
    /// replica that set them. A stored schedule that does not parse (edited by hand) is
    /// ignored with a warning, and the job keeps this replica's configuration.
    pub async fn stored_jobs(&self, jobs: &[Job]) -> Result<Vec<StoredJob>, sqlx::Error> {
        let names: Vec<&str> = jobs.iter().map(Job::name).collect();
        let rows: Vec<(String, String, bool, Option<String>)> = sqlx::query_as(
            "SELECT job_name, schedule, enabled, configured_by FROM jobs WHERE job_name = ANY($1)",
        )
        .bind(&names)
        .fetch_all(&self.pool)
        .await?;
        let mut stored = Vec::with_capacity(jobs.len());
        for job in jobs {
            let Some((_, schedule, enabled, configured_by)) =
                rows.iter().find(|(name, ..)| name == job.name())
            else {
                continue;
            };
            match schedule.parse::<Schedule>() {
                Ok(schedule) => stored.push(StoredJob {
                    job: Job {
                        spec: job.spec,
                        schedule,
                        enabled: *enabled,
                    },
                    configured_by: configured_by.clone(),
                }),
                Err(error) => {
                    tracing::warn!(job = job.name(), %error, "the stored schedule does not parse; keeping this replica's");
                }
            }
        }
        Ok(stored)
    }

    /// Delete run history older than `retention` (the daily retention purge).
    pub async fn purge_history(&self, retention: Duration) -> Result<u64, sqlx::Error> {
        let deleted = sqlx::query(
            "DELETE FROM job_runs WHERE started_at < now() - make_interval(secs => $1)
                AND outcome <> 'running'",
        )
        .bind(retention.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(deleted)
    }
}

/// `cron_job_runs_total{job, trigger, outcome}`: the runs this replica made or skipped.
fn count_run(job: &Job, trigger: Trigger, outcome: &'static str) {
    metrics::counter!(
        "cron_job_runs_total",
        "job" => job.name(),
        "trigger" => trigger.as_str(),
        "outcome" => outcome
    )
    .increment(1);
}

/// `<hostname>-<pid>-<8 random hex>`: which replica ran a job, readable in the history.
pub fn default_replica_id() -> String {
    let hostname = std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "unknown".to_owned());
    let suffix = Uuid::new_v4().simple().to_string();
    format!("{hostname}-{}-{}", std::process::id(), &suffix[..8])
}
