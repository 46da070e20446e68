//! `tasks`: a task published straight to JetStream (`Bus::publish`, no outbox) and picked up
//! by a no-op handler on one worker process.
//!
//! One operation = `bus.publish(BusProbe, message id)` (waits for the JetStream ack) → wait
//! until the handler has run. Same rig as `events` (production `Bus::start` and
//! `BusRouter`, a schema of its own for the router's dead letters, a unique namespace), but
//! no relay.
//!
//! Variants: `steady-500/s` and `steady-5000/s` (open loop, latency from the scheduled time)
//! and `saturation` (closed loop at 256 and 512 in flight).

use std::sync::Arc;

use anyhow::Context as _;
use tokio::time::Instant;

use crate::context::BenchContext;
use crate::measure::OpInfo;
use crate::report::Measurement;
use crate::scenario::{BoxFuture, Scenario};
use crate::scenarios::bus_rig::{AfterVariant, BusRig, Variant};

const NAME: &str = "tasks";
/// The schema is `bench_tasks_<suffix>`, unique per run.
const SCHEMA_PREFIX: &str = "bench_tasks";
/// The router's pool (dead letters only; nothing touches it on the happy path).
const POOL_SIZE: u32 = 8;

const VARIANTS: [Variant; 4] = [
    Variant::open("steady-500/s", 500.0, 512),
    Variant::open("steady-5000/s", 5000.0, 1024),
    Variant::closed("saturation", 256),
    Variant::closed("saturation", 512),
];

pub(crate) const PHASES: [&str; 4] = [
    "publish→handler (Meta.emitted_at)",
    "publish→JetStream ack",
    "ack→handler",
    "handler→op resumed",
];

pub struct Tasks;

impl Scenario for Tasks {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "Bus::publish straight to JetStream → no-op task handler on one worker: pickup latency at 500 and 5000 tasks/s (open loop) and throughput at saturation (closed loop, 256/512 in flight)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let rig = BusRig::start(ctx, SCHEMA_PREFIX, POOL_SIZE, None, &PHASES).await?;
        rig.measure_variants(ctx, NAME, &VARIANTS, operation, AfterVariant::Nothing)
            .await
    }
}

/// publish (and its ack) → wait for the handler.
pub(crate) fn operation(
    rig: &BusRig,
) -> impl Fn(OpInfo) -> BoxFuture<'static, anyhow::Result<()>> + Send + Sync + 'static + use<> {
    let bus = rig.bus.clone();
    let probes = Arc::clone(&rig.probes);
    move |_op| {
        let bus = bus.clone();
        let probes = Arc::clone(&probes);
        Box::pin(async move {
            let (probe, waiter) = probes.register();
            let message_id = probes.message_id(waiter.sequence());
            let began = Instant::now();
            bus.publish(&probe, &message_id).await.context("publish")?;
            let acked = Instant::now();
            let handled = waiter.handled().await?;
            let resumed = Instant::now();
            probes.record_legs(began, acked, handled, resumed);
            Ok(())
        })
    }
}
