//! `task-replicas`: the `tasks` operation (publish a `BusProbe` task straight to JetStream,
//! wait until a no-op handler ran) with 1, 2 and 3 worker replicas sharing the task's durable
//! consumer, to show how task handling scales with replicas.
//!
//! Each replica is a production `BusRouter` (concurrency 64) with a NATS connection and a
//! Postgres pool of its own, as a separate worker process would have; all run in the bench
//! process, on its runtime, alongside the load generator. On this 2-core machine that also
//! means the replicas share the CPU with NATS and the publishers: the figures show how the
//! pull consumer spreads the work and what it costs, not what more machines would add.
//!
//! Variants per replica count: `steady-5000/s` (open loop: pickup latency at the target
//! rate) and `saturation` (closed loop, 512 in flight). After each variant the run prints how
//! many probes each replica handled.

use crate::context::BenchContext;
use crate::report::Measurement;
use crate::scenario::Scenario;
use crate::scenarios::bus_rig::{AfterVariant, BusRig, Load, Variant};
use crate::scenarios::tasks::{PHASES, operation};

const NAME: &str = "task-replicas";
const SCHEMA_PREFIX: &str = "bench_replicas";
/// Each replica's pool (dead letters only; nothing touches it on the happy path).
const POOL_SIZE: u32 = 4;

const STEADY: Load = Load::Open {
    rate: 5000.0,
    max_in_flight: 1024,
};
const SATURATION: Load = Load::Closed { concurrency: 512 };

/// (replicas, variant)
const RUNS: [(usize, [Variant; 2]); 3] = [
    (
        1,
        [
            Variant {
                name: "1 replica, steady-5000/s",
                load: STEADY,
            },
            Variant {
                name: "1 replica, saturation",
                load: SATURATION,
            },
        ],
    ),
    (
        2,
        [
            Variant {
                name: "2 replicas, steady-5000/s",
                load: STEADY,
            },
            Variant {
                name: "2 replicas, saturation",
                load: SATURATION,
            },
        ],
    ),
    (
        3,
        [
            Variant {
                name: "3 replicas, steady-5000/s",
                load: STEADY,
            },
            Variant {
                name: "3 replicas, saturation",
                load: SATURATION,
            },
        ],
    ),
];

pub struct TaskReplicas;

impl Scenario for TaskReplicas {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "tasks through the bus to a no-op handler with 1, 2 and 3 worker replicas sharing the consumer: pickup latency at 5000 tasks/s (open loop) and throughput at saturation (512 in flight)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let mut measurements = Vec::new();
        for (replicas, variants) in RUNS {
            let rig =
                BusRig::start_replicas(ctx, SCHEMA_PREFIX, POOL_SIZE, None, &PHASES, replicas)
                    .await?;
            measurements.extend(
                rig.measure_variants(ctx, NAME, &variants, operation, AfterVariant::ReplicaShares)
                    .await?,
            );
        }
        Ok(measurements)
    }
}
