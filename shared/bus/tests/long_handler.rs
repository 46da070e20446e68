//! A handler that runs longer than its ack wait (`expire_in`) keeps its delivery with
//! progress acks: it is not redelivered to anyone while it runs, and is acked once at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bus::{BusRouter, HandlerError, Meta, Msg, State};
use messages::definition::DeliveryConfig;
use tokio_util::sync::CancellationToken;

/// A task type of this test's own, with a 1 s ack wait.
#[derive(Clone, PartialEq, prost::Message)]
struct SlowTask {
    #[prost(int64, tag = "1")]
    sequence: i64,
}

messages::define_task!(
    SlowTask,
    queue = "bus_test",
    "slow",
    DeliveryConfig {
        retry_limit: 3,
        retry_delay: Duration::from_millis(100),
        retry_backoff: false,
        expire_in: Duration::from_secs(1),
    }
);

#[derive(Default)]
struct Calls {
    started: AtomicUsize,
    finished: AtomicUsize,
}

async fn slow(
    State(calls): State<Arc<Calls>>,
    Msg(_): Msg<SlowTask>,
    _meta: Meta,
) -> Result<(), HandlerError> {
    calls.started.fetch_add(1, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_millis(3500)).await;
    calls.finished.fetch_add(1, Ordering::SeqCst);
    Ok(())
}

#[tokio::test]
async fn progress_acks_keep_a_long_handler_from_being_redelivered() {
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    let calls = Arc::new(Calls::default());
    // Two replicas: a redelivery would reach the idle one at once.
    let replicas: Vec<_> = (0..2)
        .map(|_| {
            BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), calls.clone())
                .task::<SlowTask, _, _>(slow)
                .spawn(shutdown.clone())
        })
        .collect();
    fixture
        .bus
        .publish(&SlowTask { sequence: 1 }, "slow-1")
        .await
        .unwrap();

    assert!(
        test_support::eventually(Duration::from_secs(15), || async {
            calls.finished.load(Ordering::SeqCst) == 1
        })
        .await
    );
    // Acked and nothing awaiting a redelivery: nothing was, or will be, redelivered.
    fixture.wait_settled().await;
    assert_eq!(
        calls.started.load(Ordering::SeqCst),
        1,
        "redelivered while still running"
    );
    let dead = bus::dead_letter::DeadLetterStore::new(fixture.pool.clone())
        .list(true)
        .await
        .unwrap();
    assert!(dead.is_empty());

    shutdown.cancel();
    for replica in replicas {
        replica.join().await;
    }
    fixture.cleanup().await;
}
