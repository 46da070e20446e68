//! `bus_consumer_pending`, `bus_consumer_ack_pending` and `bus_consumer_redelivered` show what
//! JetStream knows of each of a router's durable consumers: a held-up handler leaves messages
//! pending and one in flight, a failed first attempt shows as redelivered; once the handler
//! runs free every gauge returns to 0.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{BusRouter, HandlerError, Meta, Msg, State};
use messages::definition::DeliveryConfig;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

/// An event type of this test's own.
#[derive(Clone, PartialEq, prost::Message)]
struct Gauged {
    #[prost(int64, tag = "1")]
    sequence: i64,
}

messages::define_event!(
    Gauged,
    "bus_test.gauged",
    DeliveryConfig {
        retry_limit: 3,
        retry_delay: Duration::from_millis(100),
        retry_backoff: false,
        expire_in: Duration::from_secs(30),
    }
);

const CONSUMER: &str = "bustest--bus_test_gauged";
/// Longer than a few refreshes (every 5 s).
const BOUND: Duration = Duration::from_secs(30);

/// Sequence 0 fails its first attempt; every attempt after that waits for the gate.
struct Held {
    gate: Semaphore,
    attempts: Mutex<Vec<(i64, u32)>>,
}

async fn held(
    State(held): State<Arc<Held>>,
    Msg(gauged): Msg<Gauged>,
    meta: Meta,
) -> Result<(), HandlerError> {
    held.attempts
        .lock()
        .unwrap()
        .push((gauged.sequence, meta.attempt));
    if gauged.sequence == 0 && meta.attempt == 1 {
        return Err(HandlerError::retry("the first attempt fails"));
    }
    let permit = held.gate.acquire().await.unwrap();
    permit.forget();
    Ok(())
}

/// The value of `name{consumer=CONSUMER}` in the process's metrics, if it is there.
fn gauge(name: &str) -> Option<f64> {
    let rendered = platform::metrics::render();
    let label = format!("consumer=\"{CONSUMER}\"");
    rendered
        .lines()
        .find(|line| line.starts_with(&format!("{name}{{")) && line.contains(&label))
        .and_then(|line| line.rsplit(' ').next())
        .map(|value| value.parse().unwrap())
}

async fn gauges_become(
    pending: impl Fn(f64) -> bool,
    ack_pending: impl Fn(f64) -> bool,
    redelivered: f64,
) -> bool {
    test_support::eventually(BOUND, || async {
        gauge("bus_consumer_pending").is_some_and(&pending)
            && gauge("bus_consumer_ack_pending").is_some_and(&ack_pending)
            && gauge("bus_consumer_redelivered") == Some(redelivered)
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consumer_gauges_show_pending_in_flight_and_redelivered_messages() {
    let _ = platform::metrics::handle();
    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    let state = Arc::new(Held {
        gate: Semaphore::new(0),
        attempts: Mutex::new(Vec::new()),
    });
    // One delivery at a time: while it waits at the gate, the rest stay pending.
    let router = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), state.clone())
        .concurrency(1)
        .on::<Gauged, _, _>(held)
        .spawn(shutdown.clone());

    fixture
        .bus
        .publish(&Gauged { sequence: 0 }, "gauged-0")
        .await
        .unwrap();
    let redelivered = test_support::eventually(BOUND, || async {
        state.attempts.lock().unwrap().contains(&(0, 2))
    })
    .await;
    assert!(redelivered, "sequence 0 was not delivered a second time");
    for sequence in 1..=5 {
        fixture
            .bus
            .publish(&Gauged { sequence }, &format!("gauged-{sequence}"))
            .await
            .unwrap();
    }
    // Sequence 0 is at the gate (redelivered, unacked); at most one more is handed out.
    let held_up = gauges_become(
        |pending| pending >= 4.0,
        |ack_pending| (1.0..=2.0).contains(&ack_pending),
        1.0,
    )
    .await;
    assert!(
        held_up,
        "gauges while held up: pending {:?}, ack pending {:?}, redelivered {:?}",
        gauge("bus_consumer_pending"),
        gauge("bus_consumer_ack_pending"),
        gauge("bus_consumer_redelivered")
    );

    state.gate.add_permits(100);
    let drained = gauges_become(
        |pending| pending == 0.0,
        |ack_pending| ack_pending == 0.0,
        0.0,
    )
    .await;
    assert!(
        drained,
        "gauges after the gate opened: pending {:?}, ack pending {:?}, redelivered {:?}",
        gauge("bus_consumer_pending"),
        gauge("bus_consumer_ack_pending"),
        gauge("bus_consumer_redelivered")
    );
    assert_eq!(
        state.attempts.lock().unwrap().len(),
        7,
        "6 messages, one retried"
    );

    shutdown.cancel();
    router.join().await;
    fixture.cleanup().await;
}
