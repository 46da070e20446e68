//! A tick's run: claim it, renew the lease while it runs, complete or fail it; misfires.

use std::time::Duration;

use chrono::{DateTime, Utc};

use uuid::Uuid;

use super::{
    Claim, ClaimedRun, Finished, JobState, MISSED_TICKS_CAP, RunError, Runner, Trigger, count_run,
};
use crate::jobs::{Job, Schedule};

impl Runner {
    /// Claim `scheduled_for` of `job` for this replica (see the module docs).
    pub async fn claim(
        &self,
        job: &Job,
        scheduled_for: DateTime<Utc>,
        trigger: Trigger,
        missed_ticks: i32,
    ) -> Result<Claim, RunError> {
        let mut tx = self.pool.begin().await?;
        let state: Option<JobState> = sqlx::query_as(
            "SELECT schedule, enabled, last_scheduled_for, lease_run_id, lease_holder,
                    coalesce(lease_expires_at > clock_timestamp(), false) AS leased
               FROM jobs WHERE job_name = $1 FOR UPDATE",
        )
        .bind(job.name())
        .fetch_optional(&mut *tx)
        .await?;
        let Some(JobState {
            schedule: stored_schedule,
            enabled: stored_enabled,
            last_scheduled_for,
            lease_run_id,
            lease_holder,
            leased,
        }) = state
        else {
            return Err(RunError::UnknownJob(job.name().to_owned()));
        };
        // One source of truth: a replica on another configuration runs only ticks of the
        // stored schedule (a stored schedule that does not parse leaves this replica's).
        let stored_tick = stored_schedule == job.schedule.as_str()
            || stored_schedule
                .parse::<Schedule>()
                .map(|stored| stored.latest_tick(scheduled_for) == Some(scheduled_for))
                .unwrap_or(true);
        if !stored_enabled || !stored_tick {
            return Ok(Claim::NotScheduled { stored_schedule });
        }
        if last_scheduled_for.is_some_and(|last| last >= scheduled_for) {
            return Ok(Claim::AlreadyAccounted);
        }
        let job_run_id = Uuid::now_v7();
        if leased {
            let holder = lease_holder.unwrap_or_default();
            sqlx::query(
                "INSERT INTO job_runs (job_run_id, job_name, scheduled_for, trigger, missed_ticks,
                                       replica_id, finished_at, outcome, detail)
                 VALUES ($1, $2, $3, $4, $5, $6, clock_timestamp(), 'skipped', $7)",
            )
            .bind(job_run_id)
            .bind(job.name())
            .bind(scheduled_for)
            .bind(trigger.as_str())
            .bind(missed_ticks)
            .bind(&self.replica_id)
            .bind(format!(
                "run {} of {holder} still holds the lease",
                lease_run_id.map(|id| id.to_string()).unwrap_or_default()
            ))
            .execute(&mut *tx)
            .await?;
            sqlx::query("UPDATE jobs SET last_scheduled_for = $2 WHERE job_name = $1")
                .bind(job.name())
                .bind(scheduled_for)
                .execute(&mut *tx)
                .await?;
            tx.commit().await?;
            return Ok(Claim::Skipped { holder });
        }
        if let Some(expired_run) = lease_run_id {
            sqlx::query(
                "UPDATE job_runs SET outcome = 'abandoned', finished_at = clock_timestamp(),
                        detail = 'the lease lapsed before the run finished (its replica stopped)'
                  WHERE job_run_id = $1 AND outcome = 'running'",
            )
            .bind(expired_run)
            .execute(&mut *tx)
            .await?;
        }
        sqlx::query(
            "INSERT INTO job_runs (job_run_id, job_name, scheduled_for, trigger, missed_ticks,
                                   replica_id, outcome)
             VALUES ($1, $2, $3, $4, $5, $6, 'running')",
        )
        .bind(job_run_id)
        .bind(job.name())
        .bind(scheduled_for)
        .bind(trigger.as_str())
        .bind(missed_ticks)
        .bind(&self.replica_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE jobs SET last_scheduled_for = $2, lease_run_id = $3, lease_holder = $4,
                    lease_expires_at = clock_timestamp() + make_interval(secs => $5)
              WHERE job_name = $1",
        )
        .bind(job.name())
        .bind(scheduled_for)
        .bind(job_run_id)
        .bind(&self.replica_id)
        .bind(self.lease.as_secs_f64())
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Claim::Run(ClaimedRun {
            job_run_id,
            job_name: job.name(),
            scheduled_for,
        }))
    }

    /// Extend the run's lease; false when it is no longer this run's.
    pub async fn renew(&self, run: &ClaimedRun) -> Result<bool, sqlx::Error> {
        let renewed = sqlx::query(
            "UPDATE jobs SET lease_expires_at = clock_timestamp() + make_interval(secs => $3)
              WHERE job_name = $1 AND lease_run_id = $2 AND lease_expires_at > clock_timestamp()",
        )
        .bind(run.job_name)
        .bind(run.job_run_id)
        .bind(self.lease.as_secs_f64())
        .execute(&self.pool)
        .await?
        .rows_affected();
        Ok(renewed == 1)
    }

    /// Emit the job's messages and mark the run succeeded, in one transaction, while the
    /// lease is still the run's.
    pub async fn complete(&self, job: &Job, run: &ClaimedRun) -> Result<Finished, RunError> {
        let mut tx = self.pool.begin().await?;
        // The job's row first (as `claim` does), so the two never wait on each other in
        // opposite orders.
        let released = sqlx::query(
            "UPDATE jobs SET lease_run_id = NULL, lease_holder = NULL, lease_expires_at = NULL
              WHERE job_name = $1 AND lease_run_id = $2 AND lease_expires_at > clock_timestamp()",
        )
        .bind(run.job_name)
        .bind(run.job_run_id)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released != 1 {
            tx.rollback().await?;
            return Ok(Finished::LeaseLost);
        }
        let message_ids = job
            .spec
            .kind
            .emit(&mut tx, run.job_run_id, run.scheduled_for)
            .await?;
        sqlx::query(
            "UPDATE job_runs SET outcome = 'succeeded', finished_at = clock_timestamp(), message_ids = $2
              WHERE job_run_id = $1",
        )
        .bind(run.job_run_id)
        .bind(&message_ids)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(Finished::Succeeded { message_ids })
    }

    /// Record a run that failed (and release its lease if it still holds it).
    pub async fn fail(&self, run: &ClaimedRun, detail: &str) -> Result<(), sqlx::Error> {
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "UPDATE jobs SET lease_run_id = NULL, lease_holder = NULL, lease_expires_at = NULL
              WHERE job_name = $1 AND lease_run_id = $2",
        )
        .bind(run.job_name)
        .bind(run.job_run_id)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE job_runs SET outcome = 'failed', finished_at = clock_timestamp(), detail = $2
              WHERE job_run_id = $1 AND outcome = 'running'",
        )
        .bind(run.job_run_id)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        tx.commit().await
    }

    /// Claim and, when this replica got it, run one tick; the lease is renewed meanwhile.
    pub async fn run_tick(
        &self,
        job: &Job,
        scheduled_for: DateTime<Utc>,
        trigger: Trigger,
        missed_ticks: i32,
    ) -> Result<Option<Finished>, RunError> {
        let run = match self
            .claim(job, scheduled_for, trigger, missed_ticks)
            .await?
        {
            Claim::Run(run) => run,
            Claim::AlreadyAccounted => return Ok(None),
            Claim::NotScheduled { stored_schedule } => {
                tracing::warn!(
                    job = job.name(),
                    %scheduled_for,
                    schedule = job.schedule.as_str(),
                    %stored_schedule,
                    "tick not run: the stored schedule (or disabling) from a newer configuration differs from this replica's"
                );
                return Ok(None);
            }
            Claim::Skipped { holder } => {
                tracing::warn!(job = job.name(), %scheduled_for, %holder, "previous run still holds the lease; tick skipped");
                count_run(job, trigger, "skipped");
                return Ok(None);
            }
        };
        let heartbeat = {
            let runner = self.clone();
            let run = run.clone();
            tokio::spawn(async move {
                let mut every = tokio::time::interval(runner.lease / 3);
                every.tick().await;
                loop {
                    every.tick().await;
                    match runner.renew(&run).await {
                        Ok(true) => {}
                        Ok(false) => {
                            tracing::error!(job = run.job_name, job_run_id = %run.job_run_id, "lease lost while running");
                            return;
                        }
                        Err(error) => {
                            tracing::warn!(job = run.job_name, %error, "cannot renew the lease")
                        }
                    }
                }
            })
        };
        let result = self.complete(job, &run).await;
        heartbeat.abort();
        count_run(
            job,
            trigger,
            match &result {
                Ok(Finished::Succeeded { .. }) => "succeeded",
                Ok(Finished::LeaseLost) => "lease_lost",
                Err(_) => "failed",
            },
        );
        match result {
            Ok(finished) => {
                match &finished {
                    Finished::Succeeded { message_ids } => tracing::info!(
                        job = job.name(),
                        job_run_id = %run.job_run_id,
                        %scheduled_for,
                        trigger = trigger.as_str(),
                        messages = message_ids.len(),
                        "job run succeeded"
                    ),
                    Finished::LeaseLost => tracing::error!(
                        job = job.name(),
                        job_run_id = %run.job_run_id,
                        "the lease lapsed before the run finished; nothing emitted"
                    ),
                }
                Ok(Some(finished))
            }
            Err(error) => {
                tracing::error!(job = job.name(), job_run_id = %run.job_run_id, %error, "job run failed");
                if let Err(record_error) = self.fail(&run, &error.to_string()).await {
                    tracing::error!(%record_error, "cannot record the failed run");
                }
                Err(error)
            }
        }
    }

    /// The misfire policy: a job whose latest tick at or before `now - grace` is later than
    /// every tick accounted for (and than the job's registration) has missed ticks. It runs
    /// once, as `catch_up`, for its latest tick at or before `now` — which may be younger than
    /// `grace`: it was missed too (or the scheduler is claiming it right now, and the claim
    /// lets only one of the two run it) — recording the ticks missed before it. Earlier
    /// missed ticks are not run. Returns how many catch-up runs this replica made.
    ///
    /// Running the grace-old tick instead left a tick missed within the last `grace` to a
    /// second catch-up one check later: a Postgres outage that ended less than `grace` after
    /// a tick was caught up by two runs.
    pub async fn catch_up(&self, jobs: &[Job], grace: Duration) -> Result<usize, RunError> {
        let now = Utc::now();
        let horizon = now - chrono::Duration::from_std(grace).unwrap_or_default();
        let mut runs = 0;
        for job in jobs.iter().filter(|job| job.enabled) {
            let (Some(missed_by_now), Some(latest)) = (
                job.schedule.latest_tick(horizon),
                job.schedule.latest_tick(now),
            ) else {
                continue;
            };
            let state: Option<(Option<DateTime<Utc>>, DateTime<Utc>)> = sqlx::query_as(
                "SELECT last_scheduled_for, created_at FROM jobs WHERE job_name = $1",
            )
            .bind(job.name())
            .fetch_optional(&self.pool)
            .await?;
            let Some((last_scheduled_for, created_at)) = state else {
                return Err(RunError::UnknownJob(job.name().to_owned()));
            };
            let accounted_until = last_scheduled_for.unwrap_or(created_at);
            if missed_by_now <= accounted_until {
                continue;
            }
            let missed = job
                .schedule
                .ticks_between(accounted_until, latest, MISSED_TICKS_CAP);
            // A job never run before has missed nothing before `latest` that it owed.
            let missed = if last_scheduled_for.is_some() {
                missed
            } else {
                0
            };
            tracing::info!(job = job.name(), scheduled_for = %latest, missed, "catching up a missed tick");
            if let Some(Finished::Succeeded { .. }) = self
                .run_tick(
                    job,
                    latest,
                    Trigger::CatchUp,
                    i32::try_from(missed).unwrap_or(i32::MAX),
                )
                .await?
            {
                runs += 1;
            }
        }
        Ok(runs)
    }
}
