//! Readiness after a Postgres restart (issue 17): the notifier, in-process against a private
//! Postgres cluster, is unready while Postgres is down and ready again within 1 s of Postgres
//! accepting connections, although every pooled connection died with the old server (the
//! readiness check retries a failed pooled connection on a fresh one).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use notifier::Config;
use test_support::{PrivatePostgres, TestDb, eventually, get, nats_url};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// The bound the issue sets, from Postgres accepting connections to `/readyz` answering 200.
const READY_AGAIN_WITHIN: Duration = Duration::from_secs(1);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ready_again_within_a_second_of_a_postgres_restart() {
    let mut postgres = PrivatePostgres::start();
    let db = TestDb::on_server(&postgres.admin_url()).await;
    let namespace = format!("t{}", &Uuid::new_v4().simple().to_string()[..12]);
    let mut config = Config::for_tests(db.url(), &nats_url());
    config.common.bus_namespace = namespace.clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let ready_url = format!("http://{}/readyz", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let handle = tokio::spawn(notifier::run(config, listener, shutdown.clone()));
    let ready = eventually(Duration::from_secs(30), || async {
        get(&ready_url).await.0 == 200
    })
    .await;
    assert!(ready, "never ready: {:?}", get(&ready_url).await);

    for round in 0..2 {
        // Use the pool, so the restart leaves dead connections in it.
        for _ in 0..4 {
            assert_eq!(get(&ready_url).await.0, 200);
        }
        postgres.stop();
        let unready = eventually(Duration::from_secs(30), || async {
            get(&ready_url).await.0 == 503
        })
        .await;
        let (status, body) = get(&ready_url).await;
        assert!(
            unready,
            "round {round}: still {status} with Postgres down: {body}"
        );
        assert!(body.contains("\"postgres\""), "{body}");

        postgres.resume();
        let back = Instant::now();
        let ready = eventually(Duration::from_secs(30), || async {
            get(&ready_url).await.0 == 200
        })
        .await;
        let took = back.elapsed();
        let (status, body) = get(&ready_url).await;
        assert!(ready, "round {round}: never ready again: {status} {body}");
        eprintln!("round {round}: ready {took:?} after Postgres returned");
        assert!(
            took <= READY_AGAIN_WITHIN,
            "round {round}: ready {took:?} after Postgres returned, more than {READY_AGAIN_WITHIN:?}"
        );
        assert!(body.contains("\"postgres\":\"ok\""), "{body}");
    }

    shutdown.cancel();
    test_support::assert_stops_ok("notifier", Duration::from_secs(15), handle).await;
    let client = async_nats::connect(nats_url()).await.unwrap();
    let bus = bus::Bus::start(async_nats::jetstream::new(client), &namespace, "cleanup")
        .await
        .unwrap();
    let _ = bus.delete_streams().await;
    drop(db);
}
