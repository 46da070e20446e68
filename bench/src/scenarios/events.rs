//! `events`: one message end to end through the transactional outbox, as the services emit.
//!
//! One operation = `BEGIN` → `bus::outbox::emit(BusProbe)` → `COMMIT` → wait until the
//! no-op handler has run: the relay (woken by the outbox's NOTIFY) publishes the row to
//! JetStream, the router's consumer pulls it and calls the handler. Production code
//! throughout (`Bus::start`, `bus::relay`, `BusRouter`), in a schema of its own prepared by
//! `platform::db`, with a unique bus namespace.
//!
//! Variants: `steady-500/s` (open loop, latency from the scheduled time) and `saturation`
//! (closed loop at 256 and 512 operations in flight).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::context::BenchContext;
use crate::measure::OpInfo;
use crate::report::Measurement;
use crate::scenario::{BoxFuture, Scenario};
use crate::scenarios::bus_rig::{BusRig, Load, RelaySetup, Variant, WallWindow};

const NAME: &str = "events";
/// Diagnostics only: run the relay differently from production (see
/// [`RelaySetup::parse`]), e.g. `BENCH_EVENTS_RELAY=own-pool=2,poll=5`. Unset = production.
const RELAY_ENV: &str = "BENCH_EVENTS_RELAY";
/// The schema is `bench_bus_<suffix>`, unique per run.
const SCHEMA_PREFIX: &str = "bench_bus";
/// The service pool (`platform::db::connect`), shared by emitters, relay and router.
const POOL_SIZE: u32 = 32;

const VARIANTS: [Variant; 3] = [
    Variant {
        name: "steady-500/s",
        load: Load::Open {
            rate: 500.0,
            // Far above what 500/s needs when healthy; only bounds a stall.
            max_in_flight: 512,
        },
    },
    Variant {
        name: "saturation",
        load: Load::Closed { concurrency: 256 },
    },
    Variant {
        name: "saturation",
        load: Load::Closed { concurrency: 512 },
    },
];

const PHASES: [&str; 4] = [
    "insert→handler (Meta.emitted_at)",
    "begin→commit",
    "commit→handler",
    "handler→op resumed",
];
const BEGIN_TO_COMMIT: usize = 1;
const COMMIT_TO_HANDLER: usize = 2;
const HANDLER_TO_RESUMED: usize = 3;

pub struct Events;

impl Scenario for Events {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "outbox insert → relay → JetStream → no-op handler, end to end: at 500 events/s (open loop) and at saturation (closed loop, 256/512 in flight)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let relay = match std::env::var(RELAY_ENV) {
            Ok(text) => RelaySetup::parse(&text).context(RELAY_ENV)?,
            Err(_) => RelaySetup::PRODUCTION,
        };
        let rig = BusRig::start(ctx, SCHEMA_PREFIX, POOL_SIZE, Some(relay), &PHASES).await?;
        let outcome = measure_all(ctx, &rig).await;
        let stopped = rig.stop().await;
        let measurements = outcome?;
        stopped?;
        Ok(measurements)
    }
}

async fn measure_all(ctx: &BenchContext, rig: &BusRig) -> anyhow::Result<Vec<Measurement>> {
    let mut measurements = Vec::with_capacity(VARIANTS.len());
    for variant in VARIANTS {
        let (measurement, window) = rig.measure(ctx, NAME, variant, operation(rig)).await?;
        match relay_stats(rig, window).await {
            Ok(line) => eprintln!("{NAME}:   {line}"),
            Err(error) => eprintln!("{NAME}:   relay stats unavailable: {error:#}"),
        }
        measurements.push(measurement);
    }
    Ok(measurements)
}

/// begin → emit → commit → wait for the handler.
fn operation(
    rig: &BusRig,
) -> impl Fn(OpInfo) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'static {
    let pool = rig.pool.clone();
    let probes = Arc::clone(&rig.probes);
    move |_op| {
        let pool = pool.clone();
        let probes = Arc::clone(&probes);
        Box::pin(async move {
            let (probe, waiter) = probes.register();
            let began = Instant::now();
            let mut tx = pool.begin().await.context("begin")?;
            bus::outbox::emit(&mut tx, &probe)
                .await
                .context("outbox emit")?;
            tx.commit().await.context("commit")?;
            let committed = Instant::now();
            let handled = waiter.handled().await?;
            let resumed = Instant::now();
            probes.record(BEGIN_TO_COMMIT, resumed, committed - began);
            probes.record(
                COMMIT_TO_HANDLER,
                resumed,
                handled.saturating_duration_since(committed),
            );
            probes.record(
                HANDLER_TO_RESUMED,
                resumed,
                resumed.saturating_duration_since(handled),
            );
            Ok(())
        })
    }
}

/// What the outbox still holds of the rows created in the window. The relay deletes the rows
/// it publishes (the lean outbox, docs/bus.md), so a row left here was not published yet;
/// how long publishing took is the `insert→handler` phase, measured per message.
async fn relay_stats(rig: &BusRig, (from, to): WallWindow) -> anyhow::Result<String> {
    let (unsent, oldest_ms): (i64, Option<f64>) = sqlx::query_as(
        "SELECT count(*), (extract(epoch FROM now() - min(created_at)) * 1000)::float8
           FROM outbox
          WHERE created_at >= $1 AND created_at < $2",
    )
    .bind(from)
    .bind(to)
    .fetch_one(&rig.pool)
    .await?;
    Ok(match oldest_ms {
        Some(age) => {
            format!("relay: {unsent} rows of the window still unsent, the oldest {age:.0} ms old")
        }
        None => "relay: every row of the window published (none left in the outbox)".to_owned(),
    })
}
