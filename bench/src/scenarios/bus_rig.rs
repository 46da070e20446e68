//! The bus as a service runs it, for the `events` and `tasks` scenarios.
//!
//! [`BusRig::start`] prepares a Postgres schema of its own exactly like the services do
//! (`platform::db::connect` + `platform::db::migrate` with the worker's migrations, which
//! hold the bus tables), starts the bus under a unique namespace (`Bus::start`), optionally
//! the outbox relay, and a `BusRouter` with a no-op `BusProbe` task handler. The handler
//! hands the moment it ran to the operation waiting for that probe's `sequence`
//! ([`Probes`]). [`BusRig::stop`] shuts everything down, deletes the namespace's streams and
//! drops the schema.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use anyhow::Context as _;
use bus::relay::{self, RelayConfig};
use bus::router::RunningRouter;
use bus::{Bus, BusRouter, HandlerError, Meta, Msg, State};
use hdrhistogram::Histogram;
use messages::journal::v1::BusProbe;
use secrecy::SecretString;
use sqlx::PgPool;
use tokio::sync::oneshot;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::BenchContext;
use crate::db;
use crate::measure::{ClosedLoop, OpInfo, OpenLoop};
use crate::report::Measurement;

/// The worker's migrations: they create the bus tables (outbox, dead_letters,
/// processed_messages) and the outbox NOTIFY trigger.
static MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
    bus::tables::with_bus_tables(sqlx::migrate!("../migrations/worker"))
});

/// Handler concurrency of the router (deliveries in flight per process).
pub const ROUTER_CONCURRENCY: usize = 64;

/// How long one operation waits for its handler before it counts as an error.
pub const HANDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Latency histograms in microseconds, like the drivers'.
const HISTOGRAM_MAX_US: u64 = 3_600_000_000;

pub fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    Histogram::new_with_bounds(1, HISTOGRAM_MAX_US, 3).context("creating histogram")
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The time window whose samples count (the driver's measured window).
#[derive(Debug, Clone, Copy)]
struct Window {
    from: Instant,
    to: Instant,
}

/// Named latency histograms for the phases of an operation, recorded only inside the
/// measured window (set with [`Probes::measure`]).
pub struct Phases {
    names: Vec<&'static str>,
    histograms: Vec<Mutex<Histogram<u64>>>,
}

impl Phases {
    fn new(names: &[&'static str]) -> anyhow::Result<Self> {
        Ok(Self {
            names: names.to_vec(),
            histograms: names
                .iter()
                .map(|_| new_histogram().map(Mutex::new))
                .collect::<anyhow::Result<_>>()?,
        })
    }

    fn record(&self, phase: usize, value: Duration) {
        if let Some(histogram) = self.histograms.get(phase) {
            lock(histogram).saturating_record(micros(value));
        }
    }

    fn reset(&self) {
        for histogram in &self.histograms {
            lock(histogram).reset();
        }
    }

    /// One line per phase: `name: p50 … p90 … p99 … max … (n samples)`.
    pub fn summary(&self) -> Vec<String> {
        let width = self.names.iter().map(|name| name.len()).max().unwrap_or(0);
        self.names
            .iter()
            .zip(&self.histograms)
            .map(|(name, histogram)| {
                let histogram = lock(histogram);
                if histogram.is_empty() {
                    return format!("{name:<width$}  no samples");
                }
                let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
                format!(
                    "{name:<width$}  p50 {:>8.3} ms  p90 {:>8.3} ms  p99 {:>8.3} ms  max {:>8.3} ms  mean {:>8.3} ms  ({} samples)",
                    ms(0.5),
                    ms(0.9),
                    ms(0.99),
                    histogram.max() as f64 / 1000.0,
                    histogram.mean() / 1000.0,
                    histogram.len()
                )
            })
            .collect()
    }
}

/// Probes waiting for their handler, and the phase histograms.
pub struct Probes {
    run_id: String,
    next_sequence: AtomicI64,
    waiting: Mutex<HashMap<i64, oneshot::Sender<Instant>>>,
    window: Mutex<Option<Window>>,
    pub phases: Phases,
}

/// Phase recorded by the handler itself: `Meta::emitted_at_micros` → handler (the bus's
/// own end-to-end figure: outbox insert time for relayed rows, publish time for direct
/// publishes). Always phase 0.
pub const EMITTED_TO_HANDLER: usize = 0;

impl Probes {
    /// `phases[0]` must be the handler's emitted→handler phase ([`EMITTED_TO_HANDLER`]).
    fn new(run_id: String, phases: &[&'static str]) -> anyhow::Result<Self> {
        Ok(Self {
            run_id,
            next_sequence: AtomicI64::new(0),
            waiting: Mutex::new(HashMap::new()),
            window: Mutex::new(None),
            phases: Phases::new(phases)?,
        })
    }

    /// A fresh probe whose handler call this operation can wait for.
    pub fn register(self: &Arc<Self>) -> (BusProbe, Waiter) {
        let sequence = self.next_sequence.fetch_add(1, Ordering::Relaxed);
        let (sender, receiver) = oneshot::channel();
        lock(&self.waiting).insert(sequence, sender);
        let probe = BusProbe {
            run_id: self.run_id.clone(),
            sequence,
            aggregate_key: String::new(),
        };
        let waiter = Waiter {
            probes: Arc::clone(self),
            sequence,
            receiver: Some(receiver),
        };
        (probe, waiter)
    }

    pub fn message_id(&self, sequence: i64) -> String {
        format!("{}-{sequence}", self.run_id)
    }

    /// Phase samples count from now on only inside `[from, from + duration)`; clears the
    /// histograms and any waiter left over from an earlier variant.
    pub fn measure(&self, from: Instant, duration: Duration) {
        *lock(&self.window) = Some(Window {
            from,
            to: from + duration,
        });
        self.phases.reset();
        lock(&self.waiting).clear();
    }

    /// Record `value` for `phase` if `at` lies in the measured window.
    pub fn record(&self, phase: usize, at: Instant, value: Duration) {
        let in_window =
            lock(&self.window).is_some_and(|window| at >= window.from && at < window.to);
        if in_window {
            self.phases.record(phase, value);
        }
    }

    pub fn waiting(&self) -> usize {
        lock(&self.waiting).len()
    }

    fn handled(&self, sequence: i64, at: Instant) {
        if let Some(sender) = lock(&self.waiting).remove(&sequence) {
            let _ = sender.send(at);
        }
    }
}

/// Waits for one probe's handler; forgets the probe if dropped unfinished.
pub struct Waiter {
    probes: Arc<Probes>,
    sequence: i64,
    receiver: Option<oneshot::Receiver<Instant>>,
}

impl Waiter {
    pub fn sequence(&self) -> i64 {
        self.sequence
    }

    /// When the handler ran, or an error after [`HANDLE_TIMEOUT`].
    pub async fn handled(mut self) -> anyhow::Result<Instant> {
        let receiver = self.receiver.take().context("probe already awaited")?;
        match tokio::time::timeout(HANDLE_TIMEOUT, receiver).await {
            Ok(Ok(at)) => Ok(at),
            Ok(Err(_)) => anyhow::bail!("probe {} was forgotten", self.sequence),
            Err(_) => anyhow::bail!(
                "probe {} not handled within {} s",
                self.sequence,
                HANDLE_TIMEOUT.as_secs()
            ),
        }
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.receiver.is_some() {
            lock(&self.probes.waiting).remove(&self.sequence);
        }
    }
}

/// What one replica's handler reaches: the shared probes and its own count.
#[derive(Clone)]
struct ReplicaState {
    probes: Arc<Probes>,
    handled: Arc<AtomicU64>,
}

/// The no-op handler: note when it ran and wake the waiting operation.
async fn handle_probe(
    State(replica): State<ReplicaState>,
    Msg(probe): Msg<BusProbe>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let now = Instant::now();
    let probes = &replica.probes;
    if probe.run_id != probes.run_id {
        return Ok(());
    }
    replica.handled.fetch_add(1, Ordering::Relaxed);
    if let Some(emitted) = meta.emitted_at_micros {
        let micros = bus::headers::now_micros().saturating_sub(emitted).max(0);
        probes.record(
            EMITTED_TO_HANDLER,
            now,
            Duration::from_micros(micros.unsigned_abs()),
        );
    }
    probes.handled(probe.sequence, now);
    Ok(())
}

/// How the relay runs. [`RelaySetup::PRODUCTION`] is what the services do; the others are
/// diagnostics for finding where the time goes (`BENCH_EVENTS_RELAY`, see `events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RelaySetup {
    /// Give the relay a pool of its own of this size instead of the service pool.
    pub own_pool: Option<u32>,
    /// Drop the outbox's NOTIFY trigger and let the relay poll at this interval.
    pub poll_without_notify: Option<Duration>,
}

impl RelaySetup {
    pub const PRODUCTION: Self = Self {
        own_pool: None,
        poll_without_notify: None,
    };

    /// `production`, or a comma-separated list of `own-pool=<connections>` and
    /// `poll=<milliseconds>` (the latter drops the NOTIFY trigger).
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let mut setup = Self::PRODUCTION;
        for part in text
            .split(',')
            .map(str::trim)
            .filter(|part| !part.is_empty())
        {
            match part.split_once('=') {
                None if part == "production" => {}
                Some(("own-pool", size)) => {
                    let size: u32 = size.parse().context("own-pool=<connections>")?;
                    anyhow::ensure!(size > 0, "own-pool needs at least 1 connection");
                    setup.own_pool = Some(size);
                }
                Some(("poll", millis)) => {
                    let millis: f64 = millis.parse().context("poll=<milliseconds>")?;
                    anyhow::ensure!(
                        millis.is_finite() && millis > 0.0 && millis <= 60_000.0,
                        "poll must be between 0 and 60000 ms"
                    );
                    setup.poll_without_notify = Some(Duration::from_secs_f64(millis / 1000.0));
                }
                _ => anyhow::bail!(
                    "unknown relay set-up `{part}` (production, own-pool=<n>, poll=<ms>)"
                ),
            }
        }
        Ok(setup)
    }
}

impl std::fmt::Display for RelaySetup {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut parts = Vec::new();
        if let Some(size) = self.own_pool {
            parts.push(format!("relay on its own pool of {size}"));
        }
        if let Some(interval) = self.poll_without_notify {
            parts.push(format!(
                "no NOTIFY trigger, relay polls every {} ms",
                interval.as_secs_f64() * 1000.0
            ));
        }
        if parts.is_empty() {
            f.write_str("production")
        } else {
            f.write_str(&parts.join(", "))
        }
    }
}

/// A running bus: pool, streams, (relay,) router.
pub struct BusRig {
    /// `<prefix>_<12 hex digits>`, the same suffix as the namespace.
    pub schema: String,
    pub pool: PgPool,
    pub bus: Bus,
    pub probes: Arc<Probes>,
    admin: PgPool,
    shutdown: CancellationToken,
    routers: Vec<RunningRouter>,
    /// Probes handled by each replica's router.
    handled: Vec<Arc<AtomicU64>>,
    replica_pools: Vec<PgPool>,
    relay: Option<tokio::task::JoinHandle<()>>,
}

impl BusRig {
    /// Set up a schema `<schema_prefix>_<suffix>` and a namespace `bench<suffix>` (unique
    /// per run, so two runs at once cannot drop each other's tables or streams), start the
    /// router (and the relay, as `relay` says).
    /// `phases[0]` is recorded by the handler (see [`EMITTED_TO_HANDLER`]).
    pub async fn start(
        ctx: &BenchContext,
        schema_prefix: &str,
        pool_size: u32,
        relay: Option<RelaySetup>,
        phases: &[&'static str],
    ) -> anyhow::Result<Self> {
        Self::start_replicas(ctx, schema_prefix, pool_size, relay, phases, 1).await
    }

    /// Like [`start`](Self::start), with `replicas` routers sharing the probe task's durable
    /// consumer the way worker replicas do: each with a NATS connection and a pool of its own
    /// (all in this process, on one runtime).
    pub async fn start_replicas(
        ctx: &BenchContext,
        schema_prefix: &str,
        pool_size: u32,
        relay: Option<RelaySetup>,
        phases: &[&'static str],
        replicas: usize,
    ) -> anyhow::Result<Self> {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let suffix = &suffix[..12];
        let schema = format!("{schema_prefix}_{suffix}");
        let admin = ctx.pg_pool(1).await?;
        let url = SecretString::from(ctx.database_url.clone());
        let pool = platform::db::connect(&url, &schema, pool_size)
            .await
            .context("connecting the service pool")?;
        platform::db::migrate(&pool, &schema, &MIGRATOR)
            .await
            .context("migrating the bench schema")?;

        let namespace = format!("bench{suffix}");
        let client = platform::nats::connect(&ctx.nats_url, "bench")
            .await
            .context("connecting to NATS")?;
        let bus = Bus::start(async_nats::jetstream::new(client), &namespace, "bench")
            .await
            .context("starting the bus")?;
        eprintln!("bus: schema {schema}, namespace {namespace}");

        let probes = Arc::new(Probes::new(namespace.clone(), phases)?);
        let shutdown = CancellationToken::new();
        let mut routers = Vec::with_capacity(replicas);
        let mut handled = Vec::with_capacity(replicas);
        let mut replica_pools = Vec::new();
        for replica in 0..replicas.max(1) {
            // The first replica uses the rig's bus and pool; the others their own, as
            // separate worker processes would.
            let (replica_bus, replica_pool) = if replica == 0 {
                (bus.clone(), pool.clone())
            } else {
                let client = platform::nats::connect(&ctx.nats_url, "bench-replica")
                    .await
                    .context("connecting a replica to NATS")?;
                let replica_bus =
                    Bus::start(async_nats::jetstream::new(client), &namespace, "bench")
                        .await
                        .context("starting a replica's bus")?;
                let replica_pool = platform::db::connect(&url, &schema, pool_size)
                    .await
                    .context("connecting a replica's pool")?;
                replica_pools.push(replica_pool.clone());
                (replica_bus, replica_pool)
            };
            let count = Arc::new(AtomicU64::new(0));
            let state = ReplicaState {
                probes: Arc::clone(&probes),
                handled: Arc::clone(&count),
            };
            routers.push(
                BusRouter::new(replica_bus, replica_pool, state)
                    .concurrency(ROUTER_CONCURRENCY)
                    .task::<BusProbe, _, _>(handle_probe)
                    .spawn(shutdown.clone()),
            );
            handled.push(count);
        }
        let relay = match relay {
            None => None,
            Some(setup) => {
                if setup != RelaySetup::PRODUCTION {
                    eprintln!("bus: DIAGNOSTIC relay set-up, not production: {setup}");
                }
                let relay_pool = match setup.own_pool {
                    Some(size) => platform::db::connect(&url, &schema, size)
                        .await
                        .context("connecting the relay's pool")?,
                    None => pool.clone(),
                };
                let mut config = RelayConfig::new(&schema);
                if let Some(interval) = setup.poll_without_notify {
                    sqlx::query("DROP TRIGGER outbox_notify ON outbox")
                        .execute(&pool)
                        .await
                        .context("dropping the outbox NOTIFY trigger")?;
                    config.poll_interval = interval;
                }
                Some(relay::spawn(
                    bus.clone(),
                    relay_pool,
                    config,
                    shutdown.clone(),
                ))
            }
        };
        let rig = Self {
            schema,
            pool,
            bus,
            probes,
            admin,
            shutdown,
            routers,
            handled,
            replica_pools,
            relay,
        };
        rig.wait_attached().await?;
        Ok(rig)
    }

    async fn wait_attached(&self) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let detached: Vec<String> = self
                .routers
                .iter()
                .flat_map(|router| router.detached())
                .collect();
            if detached.is_empty() {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "consumers not attached after 10 s: {}",
                detached.join(", ")
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Probes handled so far by each replica.
    pub fn handled_by_replica(&self) -> Vec<u64> {
        self.handled
            .iter()
            .map(|count| count.load(Ordering::Relaxed))
            .collect()
    }

    /// Before a variant: empty the outbox and checkpoint, so every variant starts from the
    /// same table and WAL state.
    pub async fn reset(&self) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE outbox")
            .execute(&self.pool)
            .await
            .context("truncating the outbox")?;
        if let Err(error) = sqlx::query("CHECKPOINT").execute(&self.admin).await {
            eprintln!("bus: CHECKPOINT failed, continuing without it: {error}");
        }
        Ok(())
    }

    /// Stop the consumers and the relay, delete the streams, drop the schema.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        for router in std::mem::take(&mut self.routers) {
            router.join().await;
        }
        for pool in std::mem::take(&mut self.replica_pools) {
            pool.close().await;
        }
        if let Some(relay) = self.relay.take() {
            let _ = relay.await;
        }
        let streams = self.bus.delete_streams().await;
        self.pool.close().await;
        let dropped = db::drop_schema(&self.admin, &self.schema).await;
        self.admin.close().await;
        streams.context("deleting the bench streams")?;
        dropped
    }
}

/// How one variant drives load.
#[derive(Debug, Clone, Copy)]
pub enum Load {
    /// Fixed rate, latency from the scheduled time.
    Open { rate: f64, max_in_flight: usize },
    /// `concurrency` operations back to back.
    Closed { concurrency: usize },
}

/// One row of a bus scenario's table.
#[derive(Debug, Clone, Copy)]
pub struct Variant {
    pub name: &'static str,
    pub load: Load,
}

/// The measured window in wall-clock time (to select outbox rows by their timestamps).
pub type WallWindow = (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>);

impl BusRig {
    /// Run one variant from a clean outbox, print its summary and phase breakdown, and
    /// return the measurement with its wall-clock window.
    pub async fn measure<F, Fut>(
        &self,
        ctx: &BenchContext,
        scenario: &str,
        variant: Variant,
        op: F,
    ) -> anyhow::Result<(Measurement, WallWindow)>
    where
        F: Fn(OpInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        self.reset().await?;
        let how = match variant.load {
            Load::Open {
                rate,
                max_in_flight,
            } => format!("{rate}/s open loop, at most {max_in_flight} in flight"),
            Load::Closed { concurrency } => format!("closed loop, {concurrency} in flight"),
        };
        eprintln!(
            "{scenario}: {} ({how}), {} s warmup + {} s measured ...",
            variant.name,
            ctx.warmup.as_secs_f64(),
            ctx.duration.as_secs_f64()
        );
        self.probes
            .measure(Instant::now() + ctx.warmup, ctx.duration);
        let wall_from = chrono::Utc::now() + ctx.warmup;
        let window = (wall_from, wall_from + ctx.duration);
        let load = match variant.load {
            Load::Open {
                rate,
                max_in_flight,
            } => OpenLoop::new(ctx, rate, max_in_flight).run(op).await?,
            Load::Closed { concurrency } => ClosedLoop::new(ctx, concurrency).run(op).await?,
        };
        let measurement = Measurement::from_load(scenario, variant.name, &load);
        eprintln!(
            "{scenario}: {} ({how}): {}",
            variant.name,
            measurement.summary()
        );
        for line in self.probes.phases.summary() {
            eprintln!("{scenario}:   {line}");
        }
        let left = self.probes.waiting();
        if left > 0 {
            eprintln!("{scenario}:   {left} probe(s) still waiting for their handler");
        }
        Ok((measurement, window))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relay_setup_parses() -> anyhow::Result<()> {
        assert_eq!(RelaySetup::parse("production")?, RelaySetup::PRODUCTION);
        assert_eq!(RelaySetup::parse("")?, RelaySetup::PRODUCTION);
        let setup = RelaySetup::parse("own-pool=2, poll=5")?;
        assert_eq!(setup.own_pool, Some(2));
        assert_eq!(setup.poll_without_notify, Some(Duration::from_millis(5)));
        assert!(RelaySetup::parse("poll=0").is_err());
        assert!(RelaySetup::parse("own-pool=0").is_err());
        assert!(RelaySetup::parse("fast").is_err());
        Ok(())
    }
}
