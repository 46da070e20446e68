//! Batch handlers (`BusRouter::on_batch`): one call for every message a fetch found ready, in
//! delivery order, acked after the call succeeded; a failed batch is handled again one message
//! at a time, so a poison message is dead-lettered (or retried) alone and the rest apply.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::dead_letter::DeadLetterStore;
use bus::{Batch, BusRouter, HandlerError, State};
use messages::definition::DeliveryConfig;
use tokio_util::sync::CancellationToken;

/// An event type of this test's own.
#[derive(Clone, PartialEq, prost::Message)]
struct Numbered {
    #[prost(int64, tag = "1")]
    sequence: i64,
}

messages::define_event!(
    Numbered,
    "bus_test.numbered",
    DeliveryConfig {
        retry_limit: 3,
        retry_delay: Duration::from_millis(100),
        retry_backoff: false,
        expire_in: Duration::from_secs(5),
    }
);

/// Sequence 7 can never be applied (until `cured`); sequence 13 fails on its first attempt.
const POISON: i64 = 7;
const FLAKY: i64 = 13;

#[derive(Default)]
struct Recorder {
    /// Every call: the (sequence, attempt) of its messages.
    calls: Mutex<Vec<Vec<(i64, u32)>>>,
    /// Sequences of successful calls, in the order they were applied.
    applied: Mutex<Vec<i64>>,
    cured: AtomicBool,
}

async fn apply(
    State(recorder): State<Arc<Recorder>>,
    batch: Batch<Numbered>,
) -> Result<(), HandlerError> {
    let call: Vec<(i64, u32)> = batch
        .messages
        .iter()
        .map(|item| (item.message.sequence, item.meta.attempt))
        .collect();
    recorder.calls.lock().unwrap().push(call.clone());
    if !recorder.cured.load(Ordering::SeqCst) && call.iter().any(|(seq, _)| *seq == POISON) {
        return Err(HandlerError::permanent("sequence 7 is poison"));
    }
    if call
        .iter()
        .any(|(seq, attempt)| *seq == FLAKY && *attempt == 1)
    {
        return Err(HandlerError::retry("sequence 13 fails once"));
    }
    // "Commit": every message of the call at once.
    recorder
        .applied
        .lock()
        .unwrap()
        .extend(call.iter().map(|(seq, _)| *seq));
    Ok(())
}

/// Wait until the router's consumers exist: before that, "nothing pending" is vacuously true.
async fn wait_attached(router: &bus::router::RunningRouter) {
    assert!(
        test_support::eventually(Duration::from_secs(30), || async {
            router.detached().is_empty()
        })
        .await,
        "consumers not attached: {:?}",
        router.detached()
    );
}

async fn publish(fixture: &common::Fixture, sequences: std::ops::RangeInclusive<i64>) {
    for sequence in sequences {
        fixture
            .bus
            .publish(&Numbered { sequence }, &format!("n-{sequence}"))
            .await
            .unwrap();
    }
}

#[tokio::test]
async fn a_batch_handler_gets_what_is_ready_in_order_in_few_calls() {
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    let recorder = Arc::new(Recorder::default());
    recorder.cured.store(true, Ordering::SeqCst);
    // Published before the consumer exists: the first fetch finds them all ready.
    publish(&fixture, 20..=119).await;
    let router = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), recorder.clone())
        .batch_size(64)
        .on_batch::<Numbered, _, _>(apply)
        .spawn(shutdown.clone());
    wait_attached(&router).await;
    fixture.wait_settled().await;
    // One more, alone, once the consumer is idle: a batch of one.
    publish(&fixture, 200..=200).await;
    fixture.wait_settled().await;

    let calls = recorder.calls.lock().unwrap().clone();
    let applied = recorder.applied.lock().unwrap().clone();
    let expected: Vec<i64> = (20..=119).chain([200]).collect();
    assert_eq!(applied, expected, "every message once, in stream order");
    assert!(calls.iter().all(|call| call.len() <= 64), "{calls:?}");
    assert!(
        calls.len() <= 4,
        "100 ready messages in batches of up to 64: {} calls",
        calls.len()
    );
    assert_eq!(calls.last().unwrap(), &vec![(200, 1)]);
    shutdown.cancel();
    router.join().await;
    fixture.cleanup().await;
}

#[tokio::test]
async fn a_failed_batch_is_handled_one_by_one_so_a_poison_message_dies_alone() {
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    let recorder = Arc::new(Recorder::default());
    publish(&fixture, 1..=30).await;
    let router = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), recorder.clone())
        .on_batch::<Numbered, _, _>(apply)
        .spawn(shutdown.clone());
    let store = DeadLetterStore::new(fixture.pool.clone());
    wait_attached(&router).await;
    fixture.wait_settled().await;

    let dead = store.list(false).await.unwrap();
    assert_eq!(dead.len(), 1, "{dead:?}");
    assert_eq!(dead[0].message_id, format!("n-{POISON}"));
    assert_eq!(dead[0].attempts, 1, "permanent: dead at its first attempt");
    let mut applied = recorder.applied.lock().unwrap().clone();
    let flaky_position = applied.iter().position(|seq| *seq == FLAKY);
    applied.sort_unstable();
    let expected: Vec<i64> = (1..=30).filter(|seq| *seq != POISON).collect();
    assert_eq!(applied, expected, "the others applied, each once");
    assert!(flaky_position.is_some(), "the flaky one applied on a retry");
    let calls = recorder.calls.lock().unwrap().clone();
    assert!(
        calls.iter().any(|call| call.len() == 30),
        "they came as one batch first: {calls:?}"
    );

    // Re-driven, it runs alone again (a batch of one) and succeeds once cured.
    recorder.cured.store(true, Ordering::SeqCst);
    assert_eq!(store.request_redrive(None).await.unwrap(), 1);
    let redriven = test_support::eventually(Duration::from_secs(20), || async {
        store.list(false).await.unwrap().is_empty()
    })
    .await;
    assert!(redriven, "the dead letter was not re-driven");
    assert_eq!(
        recorder
            .applied
            .lock()
            .unwrap()
            .iter()
            .filter(|seq| **seq == POISON)
            .count(),
        1
    );
    shutdown.cancel();
    router.join().await;
    fixture.cleanup().await;
}
