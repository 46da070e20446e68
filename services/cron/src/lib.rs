//! The `cron` service: the scheduled jobs (tokio-cron-scheduler), never two runs of one job at
//! once across replicas (a lease in Postgres), run history in the `cron` schema, and a misfire
//! policy (a tick missed while down runs once). Cron emits tasks and events; the services
//! that own the data do the work. See docs/cron.md.

pub mod jobs;
pub mod runner;

use std::time::Duration;

use axum::Router;
use bus::service::ServiceBuilder;
use bus::{BusRouter, HandlerError, Msg, State};
use chrono::Utc;
use messages::journal::v1::RetentionPurgeDue;
use platform::config::{CommonConfig, EnvReader, FromEnvironment};
use tokio::net::TcpListener;
use tokio_cron_scheduler::{Job as ScheduledJob, JobScheduler};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::jobs::{JOBS, Job, JobSpec, Schedule};
use crate::runner::{Runner, StoredJob, Trigger};

bus::service_identity! {
    service: "cron",
    schema: "cron",
    default_port: 8083,
    migrations: "../../migrations/cron",
}

/// Ticks younger than this are left to the scheduler by the periodic misfire check.
pub const DEFAULT_MISFIRE_GRACE: Duration = Duration::from_secs(30);

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
    /// The jobs with their schedules (`CRON_SCHEDULE_<JOB>`) and whether each is enabled
    /// (`CRON_DISABLED_JOBS`).
    pub jobs: Vec<Job>,
    /// `CRON_LEASE_SECONDS` (default 60): how long a run's lease lasts without renewal, i.e.
    /// how soon a job runs again after its replica died mid-run.
    pub lease: Duration,
    /// `CRON_MISFIRE_CHECK_SECONDS` (default 30): how often missed ticks are looked for.
    pub misfire_check: Duration,
    /// `CRON_MISFIRE_GRACE_SECONDS` (default 30): a tick is taken for missed by the periodic
    /// check once it is this old and unaccounted for; younger ones are the scheduler's.
    pub misfire_grace: Duration,
    /// `CRON_HISTORY_RETENTION_DAYS` (default 90): run history kept.
    pub history_retention: Duration,
    /// `CRON_REPLICA_ID` (default `<hostname>-<pid>-<random>`): names this replica in the
    /// run history and the lease.
    pub replica_id: String,
}

/// Disabled unless said otherwise: jobs marked not enabled by default (none at present; a job
/// whose handler has not landed yet starts here).
fn default_disabled() -> Vec<&'static str> {
    JOBS.iter()
        .filter(|spec| !spec.enabled_by_default)
        .map(|spec| spec.name)
        .collect()
}

impl FromEnvironment for Config {
    const DEFAULT_PORT: u16 = DEFAULT_PORT;

    fn read_own(common: CommonConfig, port: u16, env: &mut EnvReader) -> Self {
        let disabled: Vec<String> = match env.optional::<String>("CRON_DISABLED_JOBS") {
            None => default_disabled().into_iter().map(str::to_owned).collect(),
            // `none`: every job runs (an empty variable counts as unset).
            Some(list) if list.trim().eq_ignore_ascii_case("none") => Vec::new(),
            Some(list) => {
                let names: Vec<String> = list
                    .split(',')
                    .map(str::trim)
                    .filter(|name| !name.is_empty())
                    .map(str::to_owned)
                    .collect();
                for name in &names {
                    if JobSpec::by_name(name).is_none() {
                        let known: Vec<&str> = JOBS.iter().map(|spec| spec.name).collect();
                        env.reject(
                            "CRON_DISABLED_JOBS",
                            format!("`{name}` is not a job (jobs: {})", known.join(", ")),
                        );
                    }
                }
                names
            }
        };
        let mut jobs = Vec::new();
        for spec in JOBS {
            let schedule = env
                .optional::<Schedule>(&spec.schedule_variable())
                .or_else(|| spec.default_schedule.parse().ok());
            if let Some(schedule) = schedule {
                jobs.push(Job {
                    spec,
                    schedule,
                    enabled: !disabled.iter().any(|name| name == spec.name),
                });
            }
        }
        let lease = env.seconds_with_default("CRON_LEASE_SECONDS", Duration::from_secs(60));
        if lease < Duration::from_secs(3) {
            env.reject("CRON_LEASE_SECONDS", "must be at least 3");
        }
        let misfire_check =
            env.seconds_with_default("CRON_MISFIRE_CHECK_SECONDS", Duration::from_secs(30));
        if misfire_check.is_zero() {
            env.reject("CRON_MISFIRE_CHECK_SECONDS", "must be at least 1");
        }
        let misfire_grace =
            env.seconds_with_default("CRON_MISFIRE_GRACE_SECONDS", DEFAULT_MISFIRE_GRACE);
        if misfire_grace.is_zero() {
            env.reject("CRON_MISFIRE_GRACE_SECONDS", "must be at least 1");
        }
        let history_days: u64 = env.with_default("CRON_HISTORY_RETENTION_DAYS", 90);
        let replica_id = env
            .optional::<String>("CRON_REPLICA_ID")
            .filter(|id| !id.trim().is_empty())
            .unwrap_or_else(runner::default_replica_id);
        Self {
            common,
            port,
            jobs,
            lease,
            misfire_check,
            misfire_grace,
            history_retention: Duration::from_secs(history_days.saturating_mul(86_400)),
            replica_id,
        }
    }
}

impl Config {
    /// Defaults for tests: the given database and NATS server.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        let disabled = default_disabled();
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
            jobs: JOBS
                .iter()
                .filter_map(|spec| {
                    Some(Job {
                        spec: *spec,
                        schedule: spec.default_schedule.parse().ok()?,
                        enabled: !disabled.contains(&spec.name),
                    })
                })
                .collect(),
            lease: Duration::from_secs(60),
            misfire_check: Duration::from_secs(30),
            misfire_grace: DEFAULT_MISFIRE_GRACE,
            history_retention: Duration::from_secs(90 * 86_400),
            replica_id: runner::default_replica_id(),
        }
    }
}

platform::impl_service_config!(Config);

bus::service_error! {
    /// Everything that can stop the service, each with a stable code for logs and alerts.
    pub enum Error {
        #[error("postgres: {0}")]
        Postgres(#[from] sqlx::Error) => "POSTGRES",
        #[error("scheduler: {0}")]
        Scheduler(String) => "SCHEDULER",
        #[error("job run: {0}")]
        Run(#[from] runner::RunError) => "JOB_RUN",
    }
}

impl From<tokio_cron_scheduler::JobSchedulerError> for Error {
    fn from(error: tokio_cron_scheduler::JobSchedulerError) -> Self {
        Self::Scheduler(error.to_string())
    }
}

/// What the cron service's own handlers reach.
#[derive(Clone)]
struct CronState {
    db: sqlx::PgPool,
    runner: Runner,
    history_retention: Duration,
}

/// Run the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut service =
        ServiceBuilder::new(SERVICE, SCHEMA, &config.common, &MIGRATOR, shutdown.clone())
            .start::<Error>()
            .await?;
    let runner = Runner::new(
        service.db().clone(),
        config.replica_id.clone(),
        config.lease,
    );
    let replaced = runner.register(&config.jobs).await?;
    tracing::info!(
        replica_id = runner.replica_id(),
        replaced = replaced.len(),
        "jobs registered"
    );
    // Ticks missed while no replica was running: each job's latest one runs once, now.
    let caught_up = runner.catch_up(&config.jobs, Duration::ZERO).await?;
    if caught_up > 0 {
        tracing::info!(caught_up, "missed ticks caught up");
    }

    let in_flight = TaskTracker::new();
    let scheduler = JobScheduler::new().await?;
    let mut scheduled = ScheduledJobs::default();
    for job in &config.jobs {
        scheduled
            .follow(&scheduler, &runner, &in_flight, job.clone())
            .await?;
    }
    scheduler.start().await?;
    let misfires = tokio::spawn(follow_schedules_and_catch_up(
        FollowContext {
            scheduler: scheduler.clone(),
            runner: runner.clone(),
            in_flight: in_flight.clone(),
            configured: config.jobs.clone(),
        },
        scheduled,
        config.misfire_check,
        config.misfire_grace,
        shutdown.clone(),
    ));

    // Scheduled runs write to the outbox: no new ticks, and a run in progress (it takes
    // milliseconds) finishes within the grace, before the relay's final publish.
    let grace = service.grace();
    service.drain_on_shutdown(async move {
        let mut scheduler = scheduler;
        if let Err(error) = scheduler.shutdown().await {
            tracing::warn!(%error, "scheduler shutdown");
        }
        in_flight.close();
        let _ = tokio::time::timeout(grace, in_flight.wait()).await;
        let _ = misfires.await;
    });

    let state = CronState {
        db: service.db().clone(),
        runner: runner.clone(),
        history_retention: config.history_retention,
    };
    let consumers = service.consume(
        BusRouter::new(service.bus().clone(), service.db().clone(), state)
            .on::<RetentionPurgeDue, _, _>(purge_retention),
    );
    let readiness = service.infra().readiness().with_check(consumers);
    service.serve(listener, Router::new(), readiness).await
}

/// The jobs this replica's scheduler fires, with their scheduler ids: the stored
/// configuration, which may differ from this replica's own.
#[derive(Default)]
struct ScheduledJobs {
    jobs: Vec<(Job, Option<uuid::Uuid>)>,
}

impl ScheduledJobs {
    /// Fire `job` on its schedule from now on (replacing the job of the same name, if any;
    /// a disabled job is only removed).
    async fn follow(
        &mut self,
        scheduler: &JobScheduler,
        runner: &Runner,
        in_flight: &TaskTracker,
        job: Job,
    ) -> Result<(), Error> {
        // The old entry stays listed until the new one is scheduled: if the scheduler fails,
        // the next check still sees the difference and tries again.
        let position = self
            .jobs
            .iter()
            .position(|(current, _)| current.name() == job.name());
        if let Some(position) = position
            && let Some(scheduler_id) = self.jobs[position].1
        {
            scheduler.remove(&scheduler_id).await?;
            self.jobs[position].1 = None;
        }
        let scheduler_id = if job.enabled {
            let runner = runner.clone();
            let fired = job.clone();
            let in_flight = in_flight.clone();
            let schedule = job.schedule.as_str().to_owned();
            Some(
                scheduler
                    .add(ScheduledJob::new_async(schedule, move |_, _| {
                        let runner = runner.clone();
                        let job = fired.clone();
                        Box::pin(in_flight.track_future(async move {
                            // The scheduler fires at (or just after) a tick: the tick is the
                            // latest one at or before now.
                            let Some(tick) = job.schedule.latest_tick(Utc::now()) else {
                                return;
                            };
                            if let Err(error) =
                                runner.run_tick(&job, tick, Trigger::Schedule, 0).await
                            {
                                tracing::warn!(job = job.name(), %error, "tick not run; the misfire check retries it");
                            }
                        }))
                    })?)
                    .await?,
            )
        } else {
            None
        };
        match position {
            Some(position) => self.jobs[position] = (job, scheduler_id),
            None => self.jobs.push((job, scheduler_id)),
        }
        Ok(())
    }

    fn jobs(&self) -> Vec<Job> {
        self.jobs.iter().map(|(job, _)| job.clone()).collect()
    }
}

/// What following the stored schedules needs.
struct FollowContext {
    scheduler: JobScheduler,
    runner: Runner,
    in_flight: TaskTracker,
    /// This replica's own configuration, to report disagreement with the stored one.
    configured: Vec<Job>,
}

/// Now and then: switch to the stored schedules where a newer replica replaced them (one
/// source of truth: `cron.jobs`), then run once any job's latest tick that no replica
/// accounted for (Postgres was unreachable at the tick, say). Young ticks are left to the
/// scheduler.
async fn follow_schedules_and_catch_up(
    context: FollowContext,
    mut scheduled: ScheduledJobs,
    every: Duration,
    grace: Duration,
    shutdown: CancellationToken,
) {
    let mut ticker = tokio::time::interval(every);
    ticker.tick().await;
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = ticker.tick() => {}
        }
        if let Err(error) = follow_stored_schedules(&context, &mut scheduled).await {
            tracing::warn!(%error, "reading the stored schedules failed");
        }
        if let Err(error) = context.runner.catch_up(&scheduled.jobs(), grace).await {
            tracing::warn!(%error, "misfire check failed");
        }
    }
}

async fn follow_stored_schedules(
    context: &FollowContext,
    scheduled: &mut ScheduledJobs,
) -> Result<(), Error> {
    let stored = context.runner.stored_jobs(&scheduled.jobs()).await?;
    for StoredJob { job, configured_by } in stored {
        let Some(current) = scheduled
            .jobs
            .iter()
            .map(|(current, _)| current)
            .find(|current| current.name() == job.name())
        else {
            continue;
        };
        let differs_from_own = context.configured.iter().any(|own| {
            own.name() == job.name()
                && (own.schedule.as_str() != job.schedule.as_str() || own.enabled != job.enabled)
        });
        metrics::gauge!("cron_schedule_overridden", "job" => job.name()).set(if differs_from_own {
            1.0
        } else {
            0.0
        });
        if current.schedule.as_str() == job.schedule.as_str() && current.enabled == job.enabled {
            continue;
        }
        tracing::warn!(
            job = job.name(),
            variable = %job.spec.schedule_variable(),
            schedule = job.schedule.as_str(),
            enabled = job.enabled,
            previous_schedule = current.schedule.as_str(),
            previous_enabled = current.enabled,
            configured_by = configured_by.as_deref().unwrap_or("unknown"),
            "another replica's configuration replaced this job's schedule; following the stored one"
        );
        scheduled
            .follow(&context.scheduler, &context.runner, &context.in_flight, job)
            .await?;
    }
    Ok(())
}

/// `retention.purge_due`: the bus's tables and the run history of the `cron` schema.
async fn purge_retention(
    State(state): State<CronState>,
    Msg(due): Msg<RetentionPurgeDue>,
) -> Result<(), HandlerError> {
    let bus_purged =
        bus::maintenance::purge(&state.db, bus::maintenance::BusRetention::default()).await?;
    let runs = state.runner.purge_history(state.history_retention).await?;
    tracing::info!(
        cron_run_id = %due.cron_run_id,
        outbox_rows = bus_purged.outbox_rows,
        processed_messages = bus_purged.processed_messages,
        job_runs = runs,
        "retention purge done"
    );
    Ok(())
}
