//! The service skeleton's shutdown order against real Postgres and NATS JetStream: what a
//! handler writes to the outbox while shutdown begins is published before `serve` returns.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use bus::service::ServiceBuilder;
use bus::{BusRouter, HandlerError, Msg, State};
use common::{MIGRATOR, probe};
use messages::journal::v1::{BusProbe, SessionRevoked};
use platform::PlatformError;
use platform::config::CommonConfig;
use test_support::{TestDb, nats_url};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

/// What the skeleton's start and serve can fail with, as a service's own error type.
#[derive(Debug)]
#[allow(dead_code)]
enum TestServiceError {
    Platform(PlatformError),
    Bus(bus::BusError),
}

impl From<PlatformError> for TestServiceError {
    fn from(error: PlatformError) -> Self {
        Self::Platform(error)
    }
}

impl From<bus::BusError> for TestServiceError {
    fn from(error: bus::BusError) -> Self {
        Self::Bus(error)
    }
}

#[derive(Clone)]
struct SlowHandler {
    pool: sqlx::PgPool,
    started: Arc<Notify>,
    shutdown: CancellationToken,
}

/// Tells the test it runs, waits for shutdown to begin, then emits an event in its own
/// transaction: the last outbox row of the process.
async fn emit_once_shutdown_began(
    State(handler): State<SlowHandler>,
    Msg(_probe): Msg<BusProbe>,
) -> Result<(), HandlerError> {
    handler.started.notify_one();
    handler.shutdown.cancelled().await;
    // Well after the other tasks saw the token: the relay of a skeleton that stopped it with
    // them would be gone.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let mut tx = handler.pool.begin().await.map_err(HandlerError::retry)?;
    bus::outbox::emit(&mut tx, &SessionRevoked::default())
        .await
        .map_err(HandlerError::retry)?;
    tx.commit().await.map_err(HandlerError::retry)?;
    Ok(())
}

/// A handler in flight when the shutdown token is cancelled writes an outbox row; `serve`
/// returns only after the relay published it (the row is gone from the outbox, the event is
/// in the stream). Before the skeleton, the notifier, cron and the api stopped their relay
/// on the same token as everything else, so such a row waited for the next start.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outbox_row_a_handler_writes_during_shutdown_is_published_before_serve_returns() {
    let db = TestDb::new().await;
    let namespace = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
    let mut common = CommonConfig::for_tests(db.url(), &nats_url());
    common.bus_namespace = namespace.clone();
    let shutdown = CancellationToken::new();
    let mut service =
        ServiceBuilder::new("bustest", "worker", &common, &MIGRATOR, shutdown.clone())
            .start::<TestServiceError>()
            .await
            .unwrap();
    let started = Arc::new(Notify::new());
    let handler = SlowHandler {
        pool: service.db().clone(),
        started: started.clone(),
        shutdown: shutdown.clone(),
    };
    let consumers = service.consume(
        BusRouter::new(service.bus().clone(), service.db().clone(), handler)
            .task::<BusProbe, _, _>(emit_once_shutdown_began),
    );
    let readiness = service.infra().readiness().with_check(consumers);
    let pool = service.db().clone();
    let bus = service.bus().clone();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let served =
        tokio::spawn(service.serve::<TestServiceError>(listener, axum::Router::new(), readiness));

    // Through the outbox and the running relay, to the handler.
    let mut tx = pool.begin().await.unwrap();
    bus::outbox::emit(&mut tx, &probe(1, "")).await.unwrap();
    tx.commit().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), started.notified())
        .await
        .expect("the handler never ran");

    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(30), served)
        .await
        .expect("serve did not return")
        .unwrap()
        .unwrap();

    let unsent: i64 = sqlx::query_scalar("SELECT count(*) FROM outbox")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(unsent, 0, "the handler's row was left in the outbox");
    let emitted = test_support::emitted(
        &pool,
        "outbox",
        &nats_url(),
        &namespace,
        "EVENTS",
        "events.session.revoked",
    )
    .await
    .unwrap();
    assert_eq!(emitted.len(), 1, "published once: {emitted:?}");
    pool.close().await;
    bus.delete_streams().await.unwrap();
}
