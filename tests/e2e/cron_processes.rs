//! The real `cron` binary as processes on real Postgres and NATS: two replicas run every tick
//! exactly once (history and the tasks on the bus agree), and ticks missed while the service
//! was down (SIGKILL) are caught up by one run, not one per tick.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use chrono::{DateTime, Utc};
use e2e_tests::ServiceProcess;
use futures::StreamExt;
use messages::journal::v1::DispatchDuePrompts;
use nix::sys::signal::Signal;
use prost::Message;
use secrecy::SecretString;
use sqlx::PgPool;
use test_support::{TestDb, eventually, nats_url};
use uuid::Uuid;

const OTHER_JOBS: &str =
    "purge-expired-sessions,purge-retention,roll-over-usage,clean-up-abandoned-uploads";

/// A `cron` process ticking `dispatch-due-prompts` every 2 s, the other jobs off, with a
/// 5 s leader lease.
async fn start_cron(db: &TestDb, namespace: &str, replica: &str) -> ServiceProcess {
    let env = [
        (
            "CRON_SCHEDULE_DISPATCH_DUE_PROMPTS",
            "*/2 * * * * *".to_owned(),
        ),
        ("CRON_DISABLED_JOBS", OTHER_JOBS.to_owned()),
        ("CRON_REPLICA_ID", replica.to_owned()),
        ("CRON_LEASE_SECONDS", "5".to_owned()),
    ];
    ServiceProcess::start("cron", db.url(), namespace, &env).await
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct Run {
    job_run_id: Uuid,
    scheduled_for: DateTime<Utc>,
    trigger: String,
    outcome: String,
    replica_id: String,
    missed_ticks: i32,
    started_at: DateTime<Utc>,
    finished_at: Option<DateTime<Utc>>,
}

async fn runs(pool: &PgPool) -> Vec<Run> {
    sqlx::query_as(
        "SELECT job_run_id, scheduled_for, trigger, outcome, replica_id, missed_ticks, started_at,
                finished_at
           FROM job_runs WHERE job_name = 'dispatch-due-prompts' ORDER BY scheduled_for",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn cron_pool(db: &TestDb) -> PgPool {
    platform::db::connect(&SecretString::from(db.url().to_owned()), "cron", 2)
        .await
        .unwrap()
}

/// Every `dispatch_due_prompts` task on the namespace's TASKS stream.
async fn published_tasks(namespace: &str) -> Vec<DispatchDuePrompts> {
    let client = async_nats::connect(nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(format!("{}_TASKS", namespace.to_ascii_uppercase()))
        .await
        .unwrap();
    let consumer = stream
        .create_consumer(pull::Config {
            filter_subject: format!("{namespace}.tasks.api.dispatch_due_prompts"),
            // A work-queue stream only admits explicitly acknowledged consumers; these are only read.
            ack_policy: consumer::AckPolicy::Explicit,
            ..Default::default()
        })
        .await
        .unwrap();
    let pending = consumer.cached_info().num_pending as usize;
    let mut messages = consumer
        .fetch()
        .max_messages(pending.max(1))
        .expires(Duration::from_secs(2))
        .messages()
        .await
        .unwrap();
    let mut tasks = Vec::new();
    while let Some(Ok(message)) = messages.next().await {
        tasks.push(DispatchDuePrompts::decode(message.payload.as_ref()).unwrap());
    }
    tasks
}

#[tokio::test]
async fn two_cron_processes_run_each_tick_exactly_once() {
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let a = start_cron(&db, &namespace, "replica-a").await;
    let b = start_cron(&db, &namespace, "replica-b").await;
    let pool = cron_pool(&db).await;
    // Both replicas fire every tick for ~12 s.
    let enough = eventually(Duration::from_secs(30), || async {
        runs(&pool).await.len() >= 6
    })
    .await;
    assert!(enough, "{:?}", runs(&pool).await);
    a.stop().await;
    b.stop().await;

    let history = runs(&pool).await;
    assert!(
        history.iter().all(|run| run.outcome == "succeeded"),
        "{history:?}"
    );
    // One run per tick, and no tick between the first and the last without one.
    let ticks: Vec<DateTime<Utc>> = history.iter().map(|run| run.scheduled_for).collect();
    for pair in ticks.windows(2) {
        assert_eq!(pair[1] - pair[0], chrono::Duration::seconds(2), "{ticks:?}");
    }
    // Never two at once: each run ended before the next began.
    for pair in history.windows(2) {
        assert!(pair[0].finished_at.unwrap() <= pair[1].started_at);
    }
    assert!(
        history
            .iter()
            .all(|run| run.replica_id == "replica-a" || run.replica_id == "replica-b")
    );
    // The bus got exactly one task per run, naming the run and its tick.
    let tasks = published_tasks(&namespace).await;
    assert_eq!(tasks.len(), history.len(), "{tasks:?}");
    // The relays publish before their process exits: nothing is left in the outbox.
    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0, "a replica exited with unpublished tasks");
    let from_tasks: BTreeSet<(String, i64)> = tasks
        .iter()
        .map(|task| (task.cron_run_id.clone(), task.scheduled_for_ms))
        .collect();
    let from_history: BTreeSet<(String, i64)> = history
        .iter()
        .map(|run| {
            (
                run.job_run_id.to_string(),
                run.scheduled_for.timestamp_millis(),
            )
        })
        .collect();
    assert_eq!(from_tasks, from_history);
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}

#[tokio::test]
async fn ticks_missed_while_down_are_caught_up_by_one_run() {
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let mut cron = start_cron(&db, &namespace, "replica-a").await;
    let pool = cron_pool(&db).await;
    let ran = eventually(Duration::from_secs(20), || async {
        runs(&pool).await.len() >= 2
    })
    .await;
    assert!(ran);
    // Killed: no graceful anything.
    cron.signal(Signal::SIGKILL);
    cron.wait_exit(Duration::from_secs(15)).await;
    let before = runs(&pool).await;
    let last_before = before.last().unwrap().scheduled_for;
    // Down for a little over three ticks.
    tokio::time::sleep(Duration::from_millis(7_000)).await;
    // Cron picks the catch-up tick from its own clock once it has started, some time after
    // the spawn: the bounds below hold wherever a tick boundary falls in its start-up.
    let spawned_at = Utc::now();
    let cron = start_cron(&db, &namespace, "replica-b").await;
    let caught_up = eventually(Duration::from_secs(10), || async {
        runs(&pool)
            .await
            .iter()
            .any(|run| run.trigger == "catch_up")
    })
    .await;
    assert!(caught_up, "{:?}", runs(&pool).await);
    // Let it run on schedule again.
    let on_schedule = eventually(Duration::from_secs(20), || async {
        let history = runs(&pool).await;
        let catch_up = history.iter().find(|run| run.trigger == "catch_up");
        catch_up.is_some_and(|catch_up| {
            history.iter().any(|run| {
                run.scheduled_for > catch_up.scheduled_for
                    && run.trigger == "schedule"
                    && run.finished_at.is_some()
            })
        })
    })
    .await;
    assert!(on_schedule, "{:?}", runs(&pool).await);
    cron.stop().await;

    let history = runs(&pool).await;
    let catch_ups: Vec<&Run> = history
        .iter()
        .filter(|run| run.trigger == "catch_up")
        .collect();
    assert_eq!(catch_ups.len(), 1, "{history:?}");
    let catch_up = catch_ups[0];
    assert_eq!(catch_up.outcome, "succeeded");
    assert_eq!(catch_up.replica_id, "replica-b");
    // It stands for the latest tick before the restart: one cron saw as past when it decided,
    // which was after the spawn and before the run started.
    assert!(
        catch_up.scheduled_for <= catch_up.started_at,
        "{catch_up:?}"
    );
    assert!(
        catch_up.scheduled_for > spawned_at - chrono::Duration::seconds(2),
        "the catch-up ran a tick older than the last one before the restart ({spawned_at}): \
         {catch_up:?}"
    );
    // ...and records the ticks it did not run, none of which has a run of its own.
    let skipped = (catch_up.scheduled_for - last_before).num_seconds() / 2 - 1;
    assert!(skipped >= 2, "down {skipped} ticks");
    assert_eq!(i64::from(catch_up.missed_ticks), skipped);
    assert!(
        !history.iter().any(
            |run| run.scheduled_for > last_before && run.scheduled_for < catch_up.scheduled_for
        ),
        "{history:?}"
    );
    // Then on schedule again.
    assert!(
        history
            .iter()
            .any(|run| run.scheduled_for > catch_up.scheduled_for && run.trigger == "schedule")
    );
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}
