//! The bus as a service runs it, for the `events` and `tasks` scenarios.
//!
//! [`BusRig::start`] prepares a Postgres schema of its own exactly like the services do
//! (`platform::db::connect` + `platform::db::migrate` with the worker's migrations, which
//! hold the bus tables), starts the bus under a unique namespace (`Bus::start`), optionally
//! the outbox relay, and a `BusRouter` with a no-op `BusProbe` task handler. The handler
//! hands the moment it ran to the operation waiting for that probe's `sequence`
//! ([`Probes`]). [`BusRig::stop`] shuts everything down, deletes the namespace's streams and
//! drops the schema.

mod probes;
mod relay_setup;

pub use probes::{EMITTED_TO_HANDLER, HANDLE_TIMEOUT, Phases, Probes, Waiter, new_histogram};
pub use relay_setup::RelaySetup;

use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use bus::relay::{self, RelayConfig};
use bus::router::RunningRouter;
use bus::{Bus, BusRouter};

use messages::journal::v1::BusProbe;
use secrecy::SecretString;
use sqlx::PgPool;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::BenchContext;
use crate::db;
use crate::measure::{ClosedLoop, OpInfo, OpenLoop};
use crate::report::Measurement;
use probes::{ReplicaState, handle_probe};

/// The worker's migrations: they create the bus tables (outbox, dead_letters,
/// processed_messages).
static MIGRATOR: std::sync::LazyLock<sqlx::migrate::Migrator> = std::sync::LazyLock::new(|| {
    bus::tables::with_bus_tables(sqlx::migrate!("../migrations/worker"))
});

/// Handler concurrency of the router (deliveries in flight per process).
pub const ROUTER_CONCURRENCY: usize = 64;

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
                if let Some(interval) = setup.poll_only {
                    config.wake_on_writes = false;
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

impl Variant {
    /// An open-loop row: `rate` operations a second, at most `max_in_flight` at once.
    pub const fn open(name: &'static str, rate: f64, max_in_flight: usize) -> Self {
        Self {
            name,
            load: Load::Open {
                rate,
                max_in_flight,
            },
        }
    }

    /// A closed-loop row: `concurrency` operations back to back.
    pub const fn closed(name: &'static str, concurrency: usize) -> Self {
        Self {
            name,
            load: Load::Closed { concurrency },
        }
    }
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

/// What a bus scenario prints after each variant, beside what [`BusRig::measure`] prints.
#[derive(Debug, Clone, Copy)]
pub enum AfterVariant {
    Nothing,
    /// The window's outbox rows the relay has not published yet.
    RelayBacklog,
    /// How many probes each replica handled (warmup included).
    ReplicaShares,
}

impl BusRig {
    /// Measure `variants` in order, each with an operation from `operation`, then stop the
    /// rig whatever happened (the measurement's error first).
    pub async fn measure_variants<Op, Fut>(
        self,
        ctx: &BenchContext,
        scenario: &str,
        variants: &[Variant],
        operation: impl Fn(&BusRig) -> Op,
        after: AfterVariant,
    ) -> anyhow::Result<Vec<Measurement>>
    where
        Op: Fn(OpInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = anyhow::Result<()>> + Send + 'static,
    {
        let outcome = async {
            let mut measurements = Vec::with_capacity(variants.len());
            for variant in variants {
                let before = self.handled_by_replica();
                let (measurement, window) = self
                    .measure(ctx, scenario, *variant, operation(&self))
                    .await?;
                match after {
                    AfterVariant::Nothing => {}
                    AfterVariant::RelayBacklog => match self.relay_backlog(window).await {
                        Ok(line) => eprintln!("{scenario}:   {line}"),
                        Err(error) => {
                            eprintln!("{scenario}:   relay stats unavailable: {error:#}")
                        }
                    },
                    AfterVariant::ReplicaShares => {
                        let shares: Vec<String> = before
                            .iter()
                            .zip(self.handled_by_replica())
                            .map(|(before, after)| (after - before).to_string())
                            .collect();
                        eprintln!(
                            "{scenario}:   handled per replica (warmup included): {}",
                            shares.join(" / ")
                        );
                    }
                }
                measurements.push(measurement);
            }
            anyhow::Ok(measurements)
        }
        .await;
        let stopped = self.stop().await;
        let measurements = outcome?;
        stopped?;
        Ok(measurements)
    }

    /// What the outbox still holds of the rows created in the window. The relay deletes the
    /// rows it publishes (the lean outbox, docs/bus.md), so a row left here was not published
    /// yet; how long publishing took is the `insert→handler` phase, measured per message.
    async fn relay_backlog(&self, (from, to): WallWindow) -> anyhow::Result<String> {
        let (unsent, oldest_ms): (i64, Option<f64>) = sqlx::query_as(
            "SELECT count(*), (extract(epoch FROM now() - min(created_at)) * 1000)::float8
               FROM outbox
              WHERE created_at >= $1 AND created_at < $2",
        )
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await?;
        Ok(match oldest_ms {
            Some(age) => {
                format!(
                    "relay: {unsent} rows of the window still unsent, the oldest {age:.0} ms old"
                )
            }
            None => "relay: every row of the window published (none left in the outbox)".to_owned(),
        })
    }
}
