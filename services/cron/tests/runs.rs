//! The run machinery on real Postgres: one run per tick whichever replica asks, the lease
//! that keeps two runs of a job from overlapping (skip while held, renewal, lapse when its
//! replica stalls, no emission by a run that lost it), and the misfire catch-up.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use chrono::{DateTime, Utc};
use cron::jobs::{JOBS, Job, JobKind};
use cron::runner::{Claim, Finished, Runner, Trigger};
use secrecy::SecretString;
use sqlx::PgPool;
use test_support::TestDb;
use uuid::Uuid;

async fn cron_pool(db: &TestDb) -> PgPool {
    platform::db::connect_and_migrate(
        &SecretString::from(db.url().to_owned()),
        cron::SCHEMA,
        4,
        &cron::MIGRATOR,
    )
    .await
    .unwrap()
}

fn every_two_seconds() -> Job {
    let spec = *JOBS
        .iter()
        .find(|spec| spec.kind == JobKind::DispatchDuePrompts)
        .unwrap();
    Job {
        spec,
        schedule: "*/2 * * * * *".parse().unwrap(),
        enabled: true,
    }
}

fn whole_seconds(at: DateTime<Utc>) -> DateTime<Utc> {
    DateTime::from_timestamp(at.timestamp(), 0).unwrap()
}

/// (scheduled_for, outcome, trigger, replica_id, missed_ticks) in tick order.
async fn history(pool: &PgPool) -> Vec<(DateTime<Utc>, String, String, String, i32)> {
    sqlx::query_as(
        "SELECT scheduled_for, outcome, trigger, replica_id, missed_ticks FROM job_runs
          ORDER BY scheduled_for",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

async fn outbox_ids(pool: &PgPool) -> Vec<Uuid> {
    sqlx::query_scalar("SELECT outbox_id FROM outbox ORDER BY position")
        .fetch_all(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn the_lease_keeps_runs_apart_across_replicas() {
    let db = TestDb::new().await;
    let pool = cron_pool(&db).await;
    let job = every_two_seconds();
    let lease = Duration::from_secs(3);
    let a = Runner::new(pool.clone(), "replica-a".into(), lease);
    let b = Runner::new(pool.clone(), "replica-b".into(), lease);
    a.register(std::slice::from_ref(&job)).await.unwrap();
    b.register(std::slice::from_ref(&job)).await.unwrap();
    let t1 = whole_seconds(Utc::now()) + chrono::Duration::seconds(10);
    let tick = |n: i64| t1 + chrono::Duration::seconds(2 * n);

    // A claims a tick and stalls inside the run.
    let Claim::Run(stalled) = a.claim(&job, tick(0), Trigger::Schedule, 0).await.unwrap() else {
        panic!("A should run the first tick");
    };
    // The same tick asked for by B: already taken.
    assert!(matches!(
        b.claim(&job, tick(0), Trigger::Schedule, 0).await.unwrap(),
        Claim::AlreadyAccounted
    ));
    // The next tick while A's run holds the lease: skipped, and recorded so.
    match b.claim(&job, tick(1), Trigger::Schedule, 0).await.unwrap() {
        Claim::Skipped { holder } => assert_eq!(holder, "replica-a"),
        other => panic!("expected a skip, got {other:?}"),
    }
    // A's replica stops renewing; once the lease lapses B runs the next tick, and A's run
    // is recorded abandoned.
    tokio::time::sleep(lease + Duration::from_millis(300)).await;
    let Claim::Run(fresh) = b.claim(&job, tick(2), Trigger::Schedule, 0).await.unwrap() else {
        panic!("B should run once the lease lapsed");
    };
    // A wakes up: its lease is gone, so it emits nothing.
    assert_eq!(
        a.complete(&job, &stalled).await.unwrap(),
        Finished::LeaseLost
    );
    let Finished::Succeeded { message_ids } = b.complete(&job, &fresh).await.unwrap() else {
        panic!("B's run should succeed");
    };
    assert_eq!(outbox_ids(&pool).await, message_ids);
    let runs = history(&pool).await;
    let summary: Vec<(DateTime<Utc>, &str, &str)> = runs
        .iter()
        .map(|(at, outcome, _, replica, _)| (*at, outcome.as_str(), replica.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (tick(0), "abandoned", "replica-a"),
            (tick(1), "skipped", "replica-b"),
            (tick(2), "succeeded", "replica-b"),
        ]
    );

    // A run that renews its lease keeps it past the lease's length.
    let Claim::Run(long) = a.claim(&job, tick(3), Trigger::Schedule, 0).await.unwrap() else {
        panic!("A should run tick 3");
    };
    for _ in 0..4 {
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(a.renew(&long).await.unwrap());
    }
    assert!(matches!(
        b.claim(&job, tick(4), Trigger::Schedule, 0).await.unwrap(),
        Claim::Skipped { .. }
    ));
    assert!(matches!(
        a.complete(&job, &long).await.unwrap(),
        Finished::Succeeded { .. }
    ));
    // Released: the next tick runs at once.
    assert!(matches!(
        b.claim(&job, tick(5), Trigger::Schedule, 0).await.unwrap(),
        Claim::Run(_)
    ));
}

#[tokio::test]
async fn racing_replicas_run_each_tick_once() {
    let db = TestDb::new().await;
    let pool = cron_pool(&db).await;
    let job = every_two_seconds();
    let runners: Vec<Runner> = (0..4)
        .map(|i| {
            Runner::new(
                pool.clone(),
                format!("replica-{i}"),
                Duration::from_secs(30),
            )
        })
        .collect();
    runners[0]
        .register(std::slice::from_ref(&job))
        .await
        .unwrap();
    let start = whole_seconds(Utc::now()) + chrono::Duration::seconds(10);
    for n in 0..10 {
        let tick = start + chrono::Duration::seconds(2 * n);
        let attempts = runners.iter().map(|runner| {
            let job = job.clone();
            let runner = runner.clone();
            async move { runner.run_tick(&job, tick, Trigger::Schedule, 0).await }
        });
        let results = futures::future::join_all(attempts).await;
        let ran = results
            .into_iter()
            .filter(|result| matches!(result, Ok(Some(Finished::Succeeded { .. }))))
            .count();
        assert_eq!(ran, 1, "tick {n}");
    }
    let runs = history(&pool).await;
    assert_eq!(runs.len(), 10);
    assert!(runs.iter().all(|run| run.1 == "succeeded"));
    assert_eq!(outbox_ids(&pool).await.len(), 10);
}

#[tokio::test]
async fn a_missed_stretch_of_ticks_is_caught_up_once() {
    let db = TestDb::new().await;
    let pool = cron_pool(&db).await;
    let job = every_two_seconds();
    let runner = Runner::new(pool.clone(), "replica-a".into(), Duration::from_secs(30));
    runner.register(std::slice::from_ref(&job)).await.unwrap();
    // Nothing is owed right after registration.
    assert_eq!(
        runner
            .catch_up(std::slice::from_ref(&job), Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    // The last tick accounted for was 20 s ago: the service was down since.
    let last = job.schedule.latest_tick(Utc::now()).unwrap() - chrono::Duration::seconds(20);
    sqlx::query("UPDATE jobs SET last_scheduled_for = $1")
        .bind(last)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(
        runner
            .catch_up(std::slice::from_ref(&job), Duration::ZERO)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        runner
            .catch_up(std::slice::from_ref(&job), Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    let runs = history(&pool).await;
    assert_eq!(runs.len(), 1, "{runs:?}");
    let (scheduled_for, outcome, trigger, _, missed) = &runs[0];
    assert_eq!(
        (outcome.as_str(), trigger.as_str()),
        ("succeeded", "catch_up")
    );
    assert!(Utc::now() - *scheduled_for < chrono::Duration::seconds(3));
    // 20 s at one tick per 2 s: nine ticks strictly between, ten with a boundary tick on
    // the way (the catch-up itself is the eleventh).
    assert!((9..=10).contains(missed), "missed {missed}");
    assert_eq!(outbox_ids(&pool).await.len(), 1);
}

/// Postgres came back shortly after a tick the scheduler could not run: the periodic check
/// (a grace of 10 s) finds the older missed tick and runs the latest tick, younger than the
/// grace, once. It used to run the grace-old tick and leave the young one to a second
/// catch-up once the grace had passed over it: two runs for one outage.
#[tokio::test]
async fn an_outage_that_ended_just_after_a_tick_is_caught_up_by_one_run() {
    let db = TestDb::new().await;
    let pool = cron_pool(&db).await;
    let now = whole_seconds(Utc::now());
    // Ticks once a minute at three seconds: 21 s ago (the last one run), 11 s ago (missed,
    // older than the grace) and 1 s ago (missed, younger than the grace).
    let at = |ago: i64| now - chrono::Duration::seconds(ago);
    let mut seconds: Vec<u32> = [21, 11, 1]
        .iter()
        .map(|ago| chrono::Timelike::second(&at(*ago)))
        .collect();
    seconds.sort_unstable();
    let seconds: Vec<String> = seconds.iter().map(u32::to_string).collect();
    let spec = *JOBS
        .iter()
        .find(|spec| spec.kind == JobKind::DispatchDuePrompts)
        .unwrap();
    let job = Job {
        spec,
        schedule: format!("{} * * * * *", seconds.join(",")).parse().unwrap(),
        enabled: true,
    };
    assert_eq!(job.schedule.latest_tick(now), Some(at(1)));
    let runner = Runner::new(pool.clone(), "replica-a".into(), Duration::from_secs(30));
    runner.register(std::slice::from_ref(&job)).await.unwrap();
    sqlx::query("UPDATE jobs SET last_scheduled_for = $1")
        .bind(at(21))
        .execute(&pool)
        .await
        .unwrap();
    let grace = Duration::from_secs(10);
    assert_eq!(
        runner
            .catch_up(std::slice::from_ref(&job), grace)
            .await
            .unwrap(),
        1
    );
    // Later checks, the grace long past both missed ticks: nothing more is owed.
    assert_eq!(
        runner
            .catch_up(std::slice::from_ref(&job), Duration::ZERO)
            .await
            .unwrap(),
        0
    );
    let runs = history(&pool).await;
    assert_eq!(runs.len(), 1, "one catch-up for the outage: {runs:?}");
    let (scheduled_for, outcome, trigger, _, missed) = &runs[0];
    assert_eq!(
        (outcome.as_str(), trigger.as_str()),
        ("succeeded", "catch_up")
    );
    assert_eq!(
        *scheduled_for,
        at(1),
        "the latest tick, not the grace-old one"
    );
    assert_eq!(*missed, 1, "the tick 11 s ago was not run");
    assert_eq!(outbox_ids(&pool).await.len(), 1);
}

/// Two replicas configured with different schedules for one job: the newer start replaces the
/// stored schedule (and says so), and from then on only ticks of the stored schedule run,
/// whichever replica fires them. Before, each replica ran its own schedule's ticks.
#[tokio::test]
async fn the_stored_schedule_is_the_one_every_replica_runs() {
    let db = TestDb::new().await;
    let pool = cron_pool(&db).await;
    let old = Runner::new(pool.clone(), "old-replica".into(), Duration::from_secs(30));
    let new = Runner::new(pool.clone(), "new-replica".into(), Duration::from_secs(30));
    let every_two = every_two_seconds();
    let every_three = Job {
        schedule: "*/3 * * * * *".parse().unwrap(),
        ..every_two.clone()
    };

    assert!(
        old.register(std::slice::from_ref(&every_two))
            .await
            .unwrap()
            .is_empty(),
        "the first registration replaces nothing"
    );
    let replaced = new
        .register(std::slice::from_ref(&every_three))
        .await
        .unwrap();
    assert_eq!(replaced.len(), 1, "{replaced:?}");
    assert_eq!(replaced[0].previous_schedule, "*/2 * * * * *");
    assert_eq!(
        replaced[0].previous_configured_by.as_deref(),
        Some("old-replica")
    );
    let stored = old
        .stored_jobs(std::slice::from_ref(&every_two))
        .await
        .unwrap();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].job.schedule.as_str(), "*/3 * * * * *");
    assert_eq!(stored[0].configured_by.as_deref(), Some("new-replica"));

    // A tick of the old replica's schedule that is not one of the stored schedule.
    let minute = whole_seconds(Utc::now()) + chrono::Duration::seconds(60);
    let minute = minute - chrono::Duration::seconds(minute.timestamp() % 60);
    let even_only = minute + chrono::Duration::seconds(2);
    let claim = old
        .claim(&every_two, even_only, Trigger::Schedule, 0)
        .await
        .unwrap();
    assert!(
        matches!(&claim, Claim::NotScheduled { stored_schedule } if stored_schedule == "*/3 * * * * *"),
        "{claim:?}"
    );
    assert_eq!(
        old.run_tick(&every_two, even_only, Trigger::Schedule, 0)
            .await
            .unwrap(),
        None
    );
    assert!(
        history(&pool).await.is_empty(),
        "nothing is recorded for a refused tick"
    );

    // A tick of both schedules runs, whichever replica fires it.
    let both = minute + chrono::Duration::seconds(6);
    let ran = old
        .run_tick(&every_two, both, Trigger::Schedule, 0)
        .await
        .unwrap();
    assert!(matches!(ran, Some(Finished::Succeeded { .. })), "{ran:?}");

    // Disabling is stored the same way: a newer replica that disables the job stops it.
    let disabled = Job {
        enabled: false,
        ..every_three.clone()
    };
    assert_eq!(
        old.register(std::slice::from_ref(&disabled))
            .await
            .unwrap()
            .len(),
        1
    );
    let later = minute + chrono::Duration::seconds(9);
    let claim = new
        .claim(&every_three, later, Trigger::Schedule, 0)
        .await
        .unwrap();
    assert!(matches!(claim, Claim::NotScheduled { .. }), "{claim:?}");
}
