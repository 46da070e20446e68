//! `system-create`: `POST /rpc/journalEntries/create` against the whole system, measured end to
//! end (issue 22, docs/benchmarks.md).
//!
//! Every run (one load level of one variant) gets a fresh system: the five **release**
//! binaries (`api`, `sync-streamer`, `worker`, `cron`, `notifier`, found next to the bench
//! binary or in `--bin-dir`; this scenario builds nothing) as child processes on a database of
//! their own (`bench_system_<pid>_<run>`, which each service migrates at start) and a bus
//! namespace of their own (`bsys<pid>r<run>`), against the local NATS and S3 server. Users
//! sign in through the dev login (as `rpc-create`); user 0, the measured user, also gets a sync
//! token and one SSE client attached to the sync-streamer. Then, after a `CHECKPOINT`, entries
//! (240-character content) are created, round-robin over the users:
//!
//! - open loop at each of `--rates` (default 500, 1,000, 2,000, 4,000, 6,000/s), latency from
//!   the scheduled time, at most 1,024 requests in flight;
//! - closed loop, `--closed-connections` (default 64) back to back.
//!
//! Variants: `many-users` (200 users) and `one-user` (one user writes everything: an import).
//!
//! Measured over the window after `--warmup`, for `--duration` (default 15 s here): request
//! latency, create → worker effect, create → `change` frame at the SSE client, WAL bytes and
//! commits per create, CPU per process, and the backlog when the load stopped. Then the run
//! waits up to `--drain-timeout` for the backlog to drain, and the WAL and commits from the
//! load's start to then, over every entry, are reported too. See `SystemFigures`.

mod drive;
mod probes;
pub mod procfs;
mod rig;
pub mod sse;

use std::collections::BTreeMap;

use std::time::Duration;

use crate::context::BenchContext;

use crate::report::{Measurement, RowWrites, SystemFigures};
use crate::scenario::Scenario;

use rig::SystemRig;

use drive::drive;

const NAME: &str = "system-create";
pub const DEFAULT_RATES: [f64; 5] = [500.0, 1_000.0, 2_000.0, 4_000.0, 6_000.0];
const DEFAULT_CLOSED_CONNECTIONS: usize = 64;
const DEFAULT_USERS: usize = 200;
const DEFAULT_DURATION: Duration = Duration::from_secs(15);
const DEFAULT_DRAIN_TIMEOUT: Duration = Duration::from_secs(30);
/// The issue's request: 240 characters of content.
const CONTENT_CHARS: usize = 240;
const TITLE: &str = "bench";
/// Open loop: requests in flight at most (and HTTP connections).
const MAX_IN_FLIGHT: usize = 1_024;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    ManyUsers,
    OneUser,
}

impl Variant {
    fn name(self) -> &'static str {
        match self {
            Self::ManyUsers => "many-users",
            Self::OneUser => "one-user",
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Load {
    Open(f64),
    Closed(usize),
}

impl Load {
    fn label(self) -> String {
        match self {
            Self::Open(rate) => format!("open {rate}/s"),
            Self::Closed(connections) => format!("closed {connections}"),
        }
    }
}

pub struct SystemCreate;

impl Scenario for SystemCreate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "journalEntries.create against all five release binaries (child processes): open loop 500–6,000/s and closed loop 64, many users and one; request latency, event lag, write→SSE, WAL and commits per create, CPU per process, backlog"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let options = &ctx.system;
        let variants: Vec<Variant> = match &options.variants {
            None => vec![Variant::ManyUsers, Variant::OneUser],
            Some(names) => names
                .iter()
                .map(|name| match name.as_str() {
                    "many-users" => Ok(Variant::ManyUsers),
                    "one-user" => Ok(Variant::OneUser),
                    other => Err(anyhow::anyhow!("unknown variant `{other}`")),
                })
                .collect::<anyhow::Result<_>>()?,
        };
        let mut loads: Vec<Load> = options
            .rates
            .clone()
            .unwrap_or_else(|| DEFAULT_RATES.to_vec())
            .into_iter()
            .map(Load::Open)
            .collect();
        match options
            .closed_connections
            .unwrap_or(DEFAULT_CLOSED_CONNECTIONS)
        {
            0 => {}
            connections => loads.push(Load::Closed(connections)),
        }
        anyhow::ensure!(
            !loads.is_empty(),
            "no rate and no closed-loop run to measure"
        );
        let binaries = rig::service_binaries(&rig::binary_dir(ctx)?)?;
        for (name, path) in &binaries {
            eprintln!("{NAME}: {name}: {}", path.display());
        }

        let mut results = Vec::new();
        let mut failures = Vec::new();
        let mut run = 0;
        for variant in variants {
            for load in &loads {
                run += 1;
                let label = format!("{} {}", variant.name(), load.label());
                match measure_run(ctx, run, variant, *load).await {
                    Ok(measurement) => results.push(measurement),
                    Err(error) => {
                        eprintln!("{NAME}: {label}: failed: {error:#}");
                        failures.push(label);
                    }
                }
            }
        }
        anyhow::ensure!(
            !results.is_empty(),
            "every run failed: {}",
            failures.join(", ")
        );
        if !failures.is_empty() {
            eprintln!("{NAME}: runs that failed: {}", failures.join(", "));
        }
        Ok(results)
    }
}

/// One load level of one variant, on a fresh system.
async fn measure_run(
    ctx: &BenchContext,
    run: usize,
    variant: Variant,
    load: Load,
) -> anyhow::Result<Measurement> {
    let label = format!("{} {}", variant.name(), load.label());
    let load_average = procfs::load_average();
    eprintln!("{NAME}: {label}: starting the five services (load average {load_average}) ...");
    let mut rig = SystemRig::start(ctx, run).await?;
    let outcome = drive(ctx, &mut rig, variant, load, &label, load_average).await;
    let stopped = rig.stop().await;
    let measurement = outcome?;
    if let Err(error) = stopped {
        eprintln!("{NAME}: {label}: cleanup: {error:#}");
    }
    Ok(measurement)
}

/// Rows written per create between two readings of the tables' counters, for the tables
/// that had any.
fn row_writes(
    before: &BTreeMap<String, [i64; 4]>,
    after: &BTreeMap<String, [i64; 4]>,
    creates: i64,
) -> BTreeMap<String, RowWrites> {
    let creates = creates.max(1) as f64;
    after
        .iter()
        .filter_map(|(table, counts)| {
            let base = before.get(table).copied().unwrap_or_default();
            let delta: Vec<f64> = (0..4)
                .map(|index| (counts[index] - base[index]) as f64 / creates)
                .collect();
            delta.iter().any(|amount| *amount > 0.0).then(|| {
                (
                    table.clone(),
                    RowWrites {
                        inserted: delta[0],
                        updated: delta[1],
                        hot_updated: delta[2],
                        deleted: delta[3],
                    },
                )
            })
        })
        .collect()
}

fn print_summary(label: &str, measurement: &Measurement, system: &SystemFigures, total: i64) {
    eprintln!("{NAME}: {label}: {}", measurement.summary());
    eprintln!(
        "{NAME}: {label}:   {} creates in the window ({:.0}/s; {total} in all); event lag p50 {:.1} / p99 {:.1} ms ({} unapplied; from {}); write→SSE p50 {:.1} / p99 {:.1} ms ({} frames, {} missing{})",
        system.creates_in_window,
        system.creates_per_s,
        system.event_lag_p50_ms,
        system.event_lag_p99_ms,
        system.event_lag_unapplied,
        system.event_lag_source,
        system.sse_p50_ms,
        system.sse_p99_ms,
        system.sse_samples,
        system.sse_missing,
        system
            .sse_ended
            .as_deref()
            .map(|why| format!(", stream ended: {why}"))
            .unwrap_or_default()
    );
    eprintln!(
        "{NAME}: {label}:   window: {:.0} B WAL and {:.2} commits per create ({} commits of other databases, {} checkpoints); load start → drained{}: {:.0} B and {:.2} commits per create",
        system.wal_bytes_per_create,
        system.commits_per_create,
        system.other_databases_commits,
        system.checkpoints,
        if system.drained {
            format!(" ({:.1} s)", system.drain_s)
        } else {
            format!(" (NOT drained in {:.0} s)", system.drain_s)
        },
        system.wal_bytes_per_create_drained,
        system.commits_per_create_drained,
    );
    let cpu: Vec<String> = system
        .cpu_percent
        .iter()
        .map(|(name, percent)| format!("{name} {percent:.0} %"))
        .collect();
    eprintln!("{NAME}: {label}:   CPU (% of one core): {}", cpu.join(", "));
    let writes: Vec<String> = system
        .row_writes_per_create_drained
        .iter()
        .filter(|(_, rows)| rows.inserted + rows.updated + rows.deleted >= 0.01)
        .map(|(table, rows)| {
            format!(
                "{table} +{:.2} ~{:.2} (HOT {:.2}) -{:.2}",
                rows.inserted, rows.updated, rows.hot_updated, rows.deleted
            )
        })
        .collect();
    eprintln!(
        "{NAME}: {label}:   rows per create, load start → drained (+ inserted, ~ updated, - deleted): {}",
        writes.join("; ")
    );
    eprintln!(
        "{NAME}: {label}:   backlog when the load stopped: outbox {:?}, consumers {:?}, worker behind {}, materializer behind {}",
        system.backlog.outbox_unsent,
        system.backlog.consumer_pending,
        system.backlog.worker_behind,
        system.backlog.materializer_behind
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scenarios::ceiling::make_content;

    #[test]
    fn the_default_loads_are_the_issues() {
        assert_eq!(DEFAULT_RATES, [500.0, 1_000.0, 2_000.0, 4_000.0, 6_000.0]);
        assert_eq!(DEFAULT_CLOSED_CONNECTIONS, 64);
        assert_eq!(DEFAULT_DURATION, Duration::from_secs(15));
        assert_eq!(make_content(CONTENT_CHARS).chars().count(), 240);
        assert_eq!(rig::SERVICES.len(), 5);
    }
}
