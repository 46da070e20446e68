//! The whole cron service in-process while its Postgres (a private cluster) goes away for two
//! ticks and comes back: the service keeps running, the ticks missed during the outage are
//! caught up by one run, and the schedule goes on.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use chrono::{DateTime, Utc};
use cron::jobs::{JOBS, Job, JobKind};
use secrecy::SecretString;
use sqlx::PgPool;
use test_support::{PrivatePostgres, TestDb, eventually, get, nats_url};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The job's period. Long enough that, after the outage, the misfire check (every second)
/// finds the miss well before the next tick.
const PERIOD_SECONDS: i64 = 20;

#[derive(Debug, Clone, sqlx::FromRow)]
struct Run {
    scheduled_for: DateTime<Utc>,
    trigger: String,
    outcome: String,
    missed_ticks: i32,
    message_ids: Vec<Uuid>,
}

async fn runs(pool: &PgPool) -> Vec<Run> {
    sqlx::query_as(
        "SELECT scheduled_for, trigger, outcome, missed_ticks, message_ids FROM job_runs
          WHERE job_name = 'dispatch-due-prompts' ORDER BY scheduled_for",
    )
    .fetch_all(pool)
    .await
    .unwrap_or_default()
}

async fn wait_readiness(base_url: &str, status: u16) -> bool {
    eventually(Duration::from_secs(30), || async {
        get(&format!("{base_url}/readyz")).await.0 == status
    })
    .await
}

/// Sleep until the wall clock reads `at`.
async fn sleep_until(at: DateTime<Utc>) {
    if let Ok(wait) = (at - Utc::now()).to_std() {
        tokio::time::sleep(wait).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_postgres_outage_is_caught_up_by_one_run_and_the_schedule_goes_on() {
    let postgres = PrivatePostgres::start();
    let db = TestDb::on_server(&postgres.admin_url()).await;
    let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);

    let mut config = cron::Config::for_tests(db.url(), &nats_url());
    config.common.bus_namespace = namespace.clone();
    config.jobs = JOBS
        .iter()
        .map(|spec| Job {
            spec: *spec,
            schedule: if spec.kind == JobKind::DispatchDuePrompts {
                format!("*/{PERIOD_SECONDS} * * * * *").parse().unwrap()
            } else {
                spec.default_schedule.parse().unwrap()
            },
            enabled: spec.kind == JobKind::DispatchDuePrompts,
        })
        .collect();
    config.misfire_check = Duration::from_secs(1);
    // As in production (30 s against a one-minute job): longer than the time from the last
    // missed tick to Postgres answering again, so that tick is younger than the grace when
    // the check finds the miss.
    config.misfire_grace = Duration::from_secs(14);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(cron::run(config, listener, shutdown.clone()));
    assert!(
        wait_readiness(&base_url, 200).await,
        "cron never became ready"
    );
    let pool = platform::db::connect(&SecretString::from(db.url().to_owned()), "cron", 2)
        .await
        .unwrap();

    // A first tick runs on schedule, with time to spare before the next one.
    let deadline = Utc::now() + chrono::Duration::seconds(3 * PERIOD_SECONDS);
    let t0 = loop {
        let history = runs(&pool).await;
        let spare = history
            .last()
            .filter(|run| run.outcome == "succeeded")
            .map(|run| run.scheduled_for)
            .filter(|tick| Utc::now() < *tick + chrono::Duration::seconds(PERIOD_SECONDS - 5));
        if let Some(tick) = spare {
            break tick;
        }
        assert!(Utc::now() < deadline, "no scheduled run: {history:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    let tick = |n: i64| t0 + chrono::Duration::seconds(n * PERIOD_SECONDS);

    // Postgres goes away for the next two ticks. It comes back 8 s after the second: by then
    // the scheduler's attempt at that tick has given up (the pool's 5 s acquire timeout), so
    // only the misfire check can run it.
    let mut postgres = tokio::task::spawn_blocking(move || {
        let mut postgres = postgres;
        postgres.stop();
        postgres
    })
    .await
    .unwrap();
    assert!(
        wait_readiness(&base_url, 503).await,
        "readiness never reported the outage"
    );
    sleep_until(tick(2) + chrono::Duration::seconds(8)).await;
    assert!(!service.is_finished(), "cron stopped during the outage");
    postgres = tokio::task::spawn_blocking(move || {
        postgres.resume();
        postgres
    })
    .await
    .unwrap();
    assert!(wait_readiness(&base_url, 200).await, "cron did not recover");

    // One catch-up, then the next tick on schedule.
    let caught_up = eventually(Duration::from_secs(2 * PERIOD_SECONDS as u64), || async {
        runs(&pool).await.iter().any(|run| {
            run.scheduled_for == tick(3) && run.trigger == "schedule" && run.outcome == "succeeded"
        })
    })
    .await;
    assert!(caught_up, "{:#?}", runs(&pool).await);
    assert!(!service.is_finished(), "cron stopped after the outage");
    shutdown.cancel();
    test_support::assert_stops_ok("cron", Duration::from_secs(20), service).await;

    let history: Vec<Run> = runs(&pool)
        .await
        .into_iter()
        .filter(|run| run.scheduled_for >= t0)
        .collect();
    let summary: Vec<(DateTime<Utc>, &str, &str, i32)> = history
        .iter()
        .map(|run| {
            (
                run.scheduled_for,
                run.trigger.as_str(),
                run.outcome.as_str(),
                run.missed_ticks,
            )
        })
        .collect();
    // The tick before the outage on schedule; the first missed tick not run; the second run
    // once as the catch-up, recording the first; then the schedule again.
    assert_eq!(
        summary.iter().take(3).cloned().collect::<Vec<_>>(),
        [
            (tick(0), "schedule", "succeeded", 0),
            (tick(2), "catch_up", "succeeded", 1),
            (tick(3), "schedule", "succeeded", 0),
        ],
        "{history:#?}"
    );
    assert!(
        history
            .iter()
            .skip(3)
            .all(|run| run.trigger == "schedule" && run.outcome == "succeeded"),
        "{history:#?}"
    );
    // One message per run, none twice.
    let all_runs = runs(&pool).await;
    let emitted: Vec<Uuid> = all_runs
        .iter()
        .flat_map(|run| run.message_ids.clone())
        .collect();
    assert_eq!(emitted.len(), all_runs.len());
    // In the outbox or already published (the relay deletes what it publishes; nothing
    // consumes this namespace's tasks, so their work queue keeps them).
    let mut outbox: Vec<Uuid> = Vec::new();
    for (stream, prefix) in [("EVENTS", "events."), ("TASKS", "tasks.")] {
        let messages =
            test_support::emitted(&pool, "outbox", &nats_url(), &namespace, stream, prefix)
                .await
                .unwrap();
        outbox.extend(
            messages
                .iter()
                .map(|message| message.message_id.parse::<Uuid>().unwrap()),
        );
    }
    assert_eq!(
        outbox.iter().collect::<BTreeSet<_>>(),
        emitted.iter().collect::<BTreeSet<_>>()
    );
    assert_eq!(outbox.len(), emitted.len());

    pool.close().await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for base in ["EVENTS", "TASKS", "CHANGES"] {
        let _ = jetstream
            .delete_stream(format!("{}_{base}", namespace.to_ascii_uppercase()))
            .await;
    }
    drop(db);
    drop(postgres);
}
