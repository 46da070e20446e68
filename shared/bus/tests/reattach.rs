//! Consumers come back within 2 s of NATS (issue 17): a private NATS is killed and started
//! again with the same store; a message published once it accepts connections again reaches
//! a single-message handler and a batch handler within 2 s. Twice: a short outage (the pull
//! streams are still open when NATS returns) and one longer than the missed-heartbeat window
//! (the consumers are re-attaching when NATS returns).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::{Batch, Bus, BusRouter, HandlerError, Msg, State};
use messages::definition::DeliveryConfig;
use test_support::PrivateNats;
use tokio_util::sync::CancellationToken;

/// An event type of this test's own.
#[derive(Clone, PartialEq, prost::Message)]
struct Beat {
    #[prost(int64, tag = "1")]
    sequence: i64,
}

messages::define_event!(
    Beat,
    "bus_test.beat",
    DeliveryConfig {
        retry_limit: 3,
        retry_delay: Duration::from_millis(100),
        retry_backoff: false,
        expire_in: Duration::from_secs(30),
    }
);

/// The bound the issue sets, from NATS accepting connections to the handler having the message.
const LIVE_AGAIN_WITHIN: Duration = Duration::from_secs(2);

#[derive(Default)]
struct Seen {
    sequences: Mutex<Vec<i64>>,
}

impl Seen {
    fn has(&self, sequence: i64) -> bool {
        self.sequences.lock().unwrap().contains(&sequence)
    }
}

async fn one(State(seen): State<Arc<Seen>>, Msg(beat): Msg<Beat>) -> Result<(), HandlerError> {
    seen.sequences.lock().unwrap().push(beat.sequence);
    Ok(())
}

async fn many(State(seen): State<Arc<Seen>>, batch: Batch<Beat>) -> Result<(), HandlerError> {
    let mut sequences = seen.sequences.lock().unwrap();
    sequences.extend(batch.messages.iter().map(|item| item.message.sequence));
    Ok(())
}

/// Publish until JetStream takes it (the client may still be reconnecting).
async fn publish(bus: &Bus, sequence: i64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match bus
            .publish(&Beat { sequence }, &format!("beat-{sequence}"))
            .await
        {
            Ok(_) => return,
            Err(error) if Instant::now() < deadline => {
                eprintln!("publish {sequence}: {error}; again");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(error) => panic!("publish {sequence}: {error}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handlers_get_new_messages_within_two_seconds_of_nats_returning() {
    let mut nats = PrivateNats::start();
    let fixture = common::Fixture::new(&nats.url()).await;
    let shutdown = CancellationToken::new();
    let single = Arc::new(Seen::default());
    let batched = Arc::new(Seen::default());
    let single_router = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), single.clone())
        .on::<Beat, _, _>(one)
        .spawn(shutdown.clone());
    // Another service (its own durable consumer) with a batch handler.
    let batch_bus = Bus::start(
        fixture.bus.jetstream().clone(),
        fixture.bus.namespace(),
        "bustestbatch",
    )
    .await
    .unwrap();
    let batch_router = BusRouter::new(batch_bus, fixture.pool.clone(), batched.clone())
        .on_batch::<Beat, _, _>(many)
        .spawn(shutdown.clone());

    publish(&fixture.bus, 0).await;
    let both = test_support::eventually(Duration::from_secs(15), || async {
        single.has(0) && batched.has(0)
    })
    .await;
    assert!(both, "the first message was not handled");

    for (round, outage) in [(1, Duration::from_millis(500)), (2, Duration::from_secs(5))] {
        nats.stop();
        tokio::time::sleep(outage).await;
        nats.resume();
        let back = Instant::now();
        publish(&fixture.bus, round).await;
        let handled = test_support::eventually(Duration::from_secs(30), || async {
            single.has(round) && batched.has(round)
        })
        .await;
        let took = back.elapsed();
        assert!(
            handled,
            "round {round}: not handled after NATS returned (single {}, batch {})",
            single.has(round),
            batched.has(round)
        );
        eprintln!("round {round} ({outage:?} outage): handled {took:?} after NATS returned");
        assert!(
            took <= LIVE_AGAIN_WITHIN,
            "round {round}: handled {took:?} after NATS returned, more than {LIVE_AGAIN_WITHIN:?}"
        );
        assert!(
            single_router.detached().is_empty() && batch_router.detached().is_empty(),
            "round {round}: a consumer is still detached"
        );
    }

    shutdown.cancel();
    single_router.join().await;
    batch_router.join().await;
    fixture.cleanup().await;
}
