//! Shared set-up for the bus tests: a fresh database with the bus tables, a unique namespace.

#![allow(dead_code)]

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::relay::{self, RelayConfig};
use bus::router::RunningRouter;
use bus::{Bus, BusRouter, HandlerError, Meta, Msg, State};
use messages::journal::v1::BusProbe;
use sqlx::PgPool;
use test_support::TestDb;
use tokio_util::sync::CancellationToken;

/// The worker schema's migrations (the bus's tables and the worker's own).
pub static MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> =
    std::sync::LazyLock::new(|| {
        bus::tables::with_bus_tables(sqlx::migrate!("../../migrations/worker"))
    });

pub struct Fixture {
    pub db: TestDb,
    pub pool: PgPool,
    pub bus: Bus,
    nats_url: String,
}

impl Fixture {
    pub async fn new(nats_url: &str) -> Self {
        let db = TestDb::new().await;
        let pool = platform::db::connect(
            &secrecy::SecretString::from(db.url().to_owned()),
            "worker",
            16,
        )
        .await
        .unwrap();
        platform::db::migrate(&pool, "worker", &MIGRATOR)
            .await
            .unwrap();
        let namespace = format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12]);
        let client = platform::nats::connect(nats_url, "bus-test").await.unwrap();
        let bus = Bus::start(async_nats::jetstream::new(client), &namespace, "bustest")
            .await
            .unwrap();
        Self {
            db,
            pool,
            bus,
            nats_url: nats_url.to_owned(),
        }
    }

    /// Emit probes through the outbox, one transaction each.
    pub async fn emit(&self, probes: impl IntoIterator<Item = BusProbe>) {
        for probe in probes {
            let mut tx = self.pool.begin().await.unwrap();
            let key = probe.aggregate_key.clone();
            if key.is_empty() {
                bus::outbox::emit(&mut tx, &probe).await.unwrap();
            } else {
                bus::outbox::emit_ordered(&mut tx, &probe, &key)
                    .await
                    .unwrap();
            }
            tx.commit().await.unwrap();
        }
    }

    pub async fn unsent(&self) -> i64 {
        sqlx::query_scalar("SELECT count(*) FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.pool)
            .await
            .unwrap()
    }

    /// Wait until every consumer of the namespace has delivered and settled everything (no
    /// retry scheduled, no handler running), then nothing more can arrive; fails the test
    /// when that does not happen within 30 s.
    pub async fn wait_settled(&self) {
        let streams = ["EVENTS", "TASKS", "CHANGES"].map(|base| self.bus.stream_name(base));
        assert!(
            test_support::consumers_settled(&self.nats_url, &streams, Duration::from_secs(30))
                .await,
            "the consumers did not settle"
        );
    }

    pub async fn cleanup(self) {
        self.bus.delete_streams().await.unwrap();
    }

    /// A router that runs [`record`] for `recorder` on every `BusProbe` task (with at most
    /// `concurrency` handlers at once, where given): the token that stops it, the recorder
    /// and the router.
    pub fn record_probes(
        &self,
        recorder: Recorder,
        concurrency: Option<usize>,
    ) -> (CancellationToken, Arc<Recorder>, RunningRouter) {
        let shutdown = CancellationToken::new();
        let recorder = Arc::new(recorder);
        let mut router = BusRouter::new(self.bus.clone(), self.pool.clone(), recorder.clone());
        if let Some(concurrency) = concurrency {
            router = router.concurrency(concurrency);
        }
        let router = router
            .task::<BusProbe, _, _>(record)
            .spawn(shutdown.clone());
        (shutdown, recorder, router)
    }

    /// The outbox relay with the worker's production settings, until `shutdown`.
    pub fn spawn_relay(&self, shutdown: &CancellationToken) -> tokio::task::JoinHandle<()> {
        relay::spawn(
            self.bus.clone(),
            self.pool.clone(),
            RelayConfig::new("worker"),
            shutdown.clone(),
        )
    }

    /// Stop `router` (cancelling `shutdown`), then delete the namespace's streams.
    pub async fn stop(self, shutdown: CancellationToken, router: RunningRouter) {
        shutdown.cancel();
        router.join().await;
        self.cleanup().await;
    }
}

/// Per ordering key, the probes' sequences in the order given.
pub fn sequences_by_key<'a>(
    probes: impl IntoIterator<Item = &'a BusProbe>,
) -> BTreeMap<String, Vec<i64>> {
    let mut by_key: BTreeMap<String, Vec<i64>> = BTreeMap::new();
    for probe in probes {
        by_key
            .entry(probe.aggregate_key.clone())
            .or_default()
            .push(probe.sequence);
    }
    by_key
}

pub fn probe(sequence: i64, key: &str) -> BusProbe {
    BusProbe {
        run_id: String::new(),
        sequence,
        aggregate_key: key.to_owned(),
    }
}

/// Records every delivery; fails while `failing` is set.
#[derive(Default)]
pub struct Recorder {
    pub deliveries: Mutex<Vec<(Instant, Meta, BusProbe)>>,
    pub failing: std::sync::atomic::AtomicBool,
    pub permanent: std::sync::atomic::AtomicBool,
}

impl Recorder {
    /// A recorder whose handler fails (to be retried) until `failing` is cleared.
    pub fn failing() -> Self {
        let recorder = Self::default();
        recorder
            .failing
            .store(true, std::sync::atomic::Ordering::SeqCst);
        recorder
    }

    /// A recorder whose handler fails permanently.
    pub fn permanently_failing() -> Self {
        let recorder = Self::default();
        recorder
            .permanent
            .store(true, std::sync::atomic::Ordering::SeqCst);
        recorder
    }

    pub fn count(&self) -> usize {
        self.deliveries.lock().unwrap().len()
    }
}

pub async fn record(
    State(recorder): State<Arc<Recorder>>,
    Msg(probe): Msg<BusProbe>,
    meta: Meta,
) -> Result<(), HandlerError> {
    recorder
        .deliveries
        .lock()
        .unwrap()
        .push((Instant::now(), meta, probe));
    if recorder.permanent.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(HandlerError::permanent("this probe can never succeed"));
    }
    if recorder.failing.load(std::sync::atomic::Ordering::SeqCst) {
        return Err(HandlerError::retry("probe handler told to fail"));
    }
    Ok(())
}
