//! One source of truth for schedules: a running cron service whose `CRON_SCHEDULE_*` differs
//! from a newer replica's follows the stored (newer) schedule within one misfire check.
//! Before, each replica kept firing its own schedule and nothing said they disagreed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use cron::jobs::{JOBS, Job, JobKind};
use cron::runner::Runner;
use test_support::{TestDb, eventually, get, nats_url};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

fn dispatch_job(schedule: &str) -> Job {
    let spec = *JOBS
        .iter()
        .find(|spec| spec.kind == JobKind::DispatchDuePrompts)
        .unwrap();
    Job {
        spec,
        schedule: schedule.parse().unwrap(),
        enabled: true,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_running_replica_follows_the_schedule_a_newer_replica_stored() {
    let db = TestDb::new().await;
    let mut config = cron::Config::for_tests(db.url(), &nats_url());
    config.common.bus_namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    // Its own schedule would not fire during the test: once a year.
    config.jobs = vec![dispatch_job("0 0 0 1 1 *")];
    config.misfire_check = Duration::from_secs(1);
    config.replica_id = "old-configuration".into();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let service = tokio::spawn(cron::run(config, listener, shutdown.clone()));
    assert!(
        eventually(Duration::from_secs(30), || async {
            get(&format!("{base_url}/readyz")).await.0 == 200
        })
        .await,
        "cron never became ready"
    );

    // A newer replica starts with an every-second schedule (and then goes away).
    let pool = platform::db::connect(
        &secrecy::SecretString::from(db.url().to_owned()),
        cron::SCHEMA,
        2,
    )
    .await
    .unwrap();
    let newer = Runner::new(
        pool.clone(),
        "new-configuration".into(),
        Duration::from_secs(30),
    );
    let replaced = newer
        .register(&[dispatch_job("* * * * * *")])
        .await
        .unwrap();
    assert_eq!(replaced.len(), 1, "{replaced:?}");

    // The running service now fires the stored schedule itself.
    let followed = eventually(Duration::from_secs(30), || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM job_runs
              WHERE replica_id = 'old-configuration' AND trigger = 'schedule'
                AND outcome = 'succeeded'",
        )
        .fetch_one(&pool)
        .await
        .unwrap_or(0)
            >= 2
    })
    .await;
    assert!(
        followed,
        "the running replica never ran the stored every-second schedule"
    );

    shutdown.cancel();
    test_support::assert_stops_ok("cron", Duration::from_secs(30), service).await;
}
