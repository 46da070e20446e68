//! `events`: one message end to end through the transactional outbox, as the services emit.
//!
//! One operation = `BEGIN` → `bus::outbox::emit(BusProbe)` → `COMMIT` → wait until the
//! no-op handler has run: the relay (woken in process by the write) publishes the row to
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
use crate::scenarios::bus_rig::{AfterVariant, BusRig, RelaySetup, Variant};

const NAME: &str = "events";
/// Diagnostics only: run the relay differently from production (see
/// [`RelaySetup::parse`]), e.g. `BENCH_EVENTS_RELAY=own-pool=2,poll=5`. Unset = production.
const RELAY_ENV: &str = "BENCH_EVENTS_RELAY";
/// The schema is `bench_bus_<suffix>`, unique per run.
const SCHEMA_PREFIX: &str = "bench_bus";
/// The service pool (`platform::db::connect`), shared by emitters, relay and router.
const POOL_SIZE: u32 = 32;

const VARIANTS: [Variant; 3] = [
    // The in-flight bound is far above what 500/s needs when healthy; it only bounds a stall.
    Variant::open("steady-500/s", 500.0, 512),
    Variant::closed("saturation", 256),
    Variant::closed("saturation", 512),
];

const PHASES: [&str; 4] = [
    "insert→handler (Meta.emitted_at)",
    "begin→commit",
    "commit→handler",
    "handler→op resumed",
];

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
        rig.measure_variants(ctx, NAME, &VARIANTS, operation, AfterVariant::RelayBacklog)
            .await
    }
}

/// begin → emit → commit → wait for the handler.
fn operation(
    rig: &BusRig,
) -> impl Fn(OpInfo) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'static + use<> {
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
            probes.record_legs(began, committed, handled, resumed);
            Ok(())
        })
    }
}
