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

mod probes;
pub mod procfs;
mod rig;
pub mod sse;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::context::BenchContext;
use crate::measure::{ClosedLoop, LoadResult, OpenLoop};
use crate::report::{Measurement, RowWrites, SystemFigures};
use crate::scenario::Scenario;
use crate::scenarios::ceiling::make_content;
use probes::{PgCounters, Probe, quantile_ms};
use procfs::CpuSample;
use rig::SystemRig;
use sse::SseClient;

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

struct Session {
    user_id: uuid::Uuid,
    authorization: String,
}

async fn sign_in(
    client: &reqwest::Client,
    api: &str,
    users: usize,
    run: usize,
) -> anyhow::Result<Vec<Session>> {
    let mut sessions = Vec::with_capacity(users);
    for user in 0..users {
        let login: serde_json::Value = client
            .post(format!("{api}/auth/dev/login"))
            .json(&serde_json::json!({
                "email": format!("system-{run}-{user}@example.com"),
                "name": format!("System {user}"),
            }))
            .send()
            .await
            .context("dev login")?
            .error_for_status()
            .context("dev login")?
            .json()
            .await
            .context("dev login answer")?;
        let token = login["token"].as_str().context("dev login: no token")?;
        let user_id = login["user"]["userId"]
            .as_str()
            .or_else(|| login["userId"].as_str())
            .and_then(|id| uuid::Uuid::parse_str(id).ok());
        let user_id = match user_id {
            Some(id) => id,
            None => whoami(client, api, token).await?,
        };
        sessions.push(Session {
            user_id,
            authorization: format!("Bearer {token}"),
        });
    }
    Ok(sessions)
}

/// The user id behind a session, from the sync token's claims (the login's answer did not
/// carry it in a known field).
async fn whoami(client: &reqwest::Client, api: &str, token: &str) -> anyhow::Result<uuid::Uuid> {
    let sync_token = sync_token(client, api, token).await?;
    let payload = sync_token.split('.').next().unwrap_or_default();
    let claims: serde_json::Value = serde_json::from_slice(&base64url(payload)?)?;
    let id = claims["userId"]
        .as_str()
        .context("no userId in the sync token")?;
    uuid::Uuid::parse_str(id).context("the sync token's userId is not a uuid")
}

async fn sync_token(client: &reqwest::Client, api: &str, session: &str) -> anyhow::Result<String> {
    let answer: serde_json::Value = client
        .post(format!("{api}/rpc/sync/token"))
        .bearer_auth(session)
        .json(&serde_json::json!({}))
        .send()
        .await
        .context("sync token")?
        .error_for_status()
        .context("sync token")?
        .json()
        .await
        .context("sync token answer")?;
    answer["json"]["token"]
        .as_str()
        .map(str::to_owned)
        .context("no sync token in the answer")
}

fn base64url(text: &str) -> anyhow::Result<Vec<u8>> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut bits = 0_u32;
    let mut count = 0;
    let mut out = Vec::new();
    for byte in text.bytes() {
        let value = ALPHABET
            .iter()
            .position(|c| *c == byte)
            .context("not base64url")? as u32;
        bits = (bits << 6) | value;
        count += 6;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    Ok(out)
}

/// A moment of the run: CPU, counters, wall clock.
struct Mark {
    wall: DateTime<Utc>,
    at: Instant,
    cpu: CpuSample,
    counters: PgCounters,
}

async fn mark(probe: &Probe) -> anyhow::Result<Mark> {
    let at = Instant::now();
    let wall = Utc::now();
    let cpu = CpuSample::read();
    let counters = probe.counters().await?;
    Ok(Mark {
        wall,
        at,
        cpu,
        counters,
    })
}

async fn drive(
    ctx: &BenchContext,
    rig: &mut SystemRig,
    variant: Variant,
    load: Load,
    label: &str,
    load_average: String,
) -> anyhow::Result<Measurement> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(MAX_IN_FLIGHT)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
    let api = rig.service("api")?.base_url.clone();
    let streamer = rig.service("sync-streamer")?.base_url.clone();
    let users = match variant {
        Variant::ManyUsers => ctx.system.users.unwrap_or(DEFAULT_USERS).max(1),
        Variant::OneUser => 1,
    };
    let sessions = sign_in(&client, &api, users, 0).await?;
    let measured = sessions.first().context("no user signed in")?;
    let measured_user = measured.user_id;
    let measured_token = measured
        .authorization
        .strip_prefix("Bearer ")
        .unwrap_or_default()
        .to_owned();
    let sse = SseClient::attach(
        &streamer,
        &sync_token(&client, &api, &measured_token).await?,
    )
    .await?;
    let probe = Probe::new(
        rig.admin.clone(),
        rig.pool.clone(),
        rig.database.clone(),
        &ctx.nats_url,
        &rig.namespace,
    )
    .await?;
    probe.checkpoint().await;

    let duration = if ctx.duration_given {
        ctx.duration
    } else {
        DEFAULT_DURATION
    };
    let warmup = ctx.warmup;
    let url: Arc<str> = format!("{api}/rpc/journalEntries/create").into();
    let body: Arc<str> = serde_json::json!({
        "json": { "title": TITLE, "content": make_content(CONTENT_CHARS) }
    })
    .to_string()
    .into();
    let authorizations: Arc<[String]> = sessions
        .iter()
        .map(|session| session.authorization.clone())
        .collect();
    let create = move |op: crate::measure::OpInfo| {
        let client = client.clone();
        let url = Arc::clone(&url);
        let body = Arc::clone(&body);
        let authorizations = Arc::clone(&authorizations);
        async move {
            let index = usize::try_from(op.seq % authorizations.len() as u64).unwrap_or(0);
            let authorization = authorizations.get(index).context("no session")?;
            let response = client
                .post(&*url)
                .header("authorization", authorization)
                .header("content-type", "application/json")
                .body(body.to_string())
                .send()
                .await
                .context("sending")?;
            let status = response.status();
            let bytes = response.bytes().await.context("reading the response")?;
            anyhow::ensure!(
                status == reqwest::StatusCode::OK
                    && bytes.starts_with(br#"{"json":{"journalEntryId":""#),
                "{status}: {}",
                String::from_utf8_lossy(&bytes)
            );
            Ok(())
        }
    };

    eprintln!(
        "{NAME}: {label}: {users} user(s) signed in, SSE client attached; {} s warmup + {} s measured ...",
        warmup.as_secs_f64(),
        duration.as_secs_f64()
    );
    let start_writes = probe.table_writes().await?;
    let start = mark(&probe).await?;
    // Marks at the window's start and end, taken beside the driver (whose clock starts
    // within microseconds of this one), and the backlog the moment the load stops.
    let sampler = {
        let probe = probe.clone();
        let begin = Instant::now();
        tokio::spawn(async move {
            tokio::time::sleep_until(begin + warmup).await;
            let from = mark(&probe).await?;
            tokio::time::sleep_until(begin + warmup + duration).await;
            let to = mark(&probe).await?;
            let backlog = probe.backlog().await?;
            anyhow::Ok((from, to, backlog))
        })
    };
    let result: LoadResult = match load {
        Load::Open(rate) => {
            OpenLoop {
                rate,
                max_in_flight: MAX_IN_FLIGHT,
                warmup,
                duration,
                drain_timeout: Duration::from_secs(10),
            }
            .run(create)
            .await?
        }
        Load::Closed(connections) => {
            ClosedLoop {
                concurrency: connections,
                warmup,
                duration,
            }
            .run(create)
            .await?
        }
    };
    let (from, to, backlog) = sampler.await.context("the sampler task failed")??;
    rig.check_alive()?;

    // Let the system work off what it owes, then read what it did.
    let drain_timeout = ctx.system.drain_timeout.unwrap_or(DEFAULT_DRAIN_TIMEOUT);
    let drain_started = Instant::now();
    let drained = loop {
        let remaining = probe.backlog().await?;
        if remaining.is_empty() {
            break true;
        }
        if drain_started.elapsed() >= drain_timeout {
            eprintln!(
                "{NAME}: {label}: not drained after {} s: outbox {}, pending {}, worker behind {}, materializer behind {}",
                drain_timeout.as_secs_f64(),
                remaining.outbox_total(),
                remaining.pending_total(),
                remaining.worker_behind,
                remaining.materializer_behind
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let drain_s = drain_started.elapsed().as_secs_f64();
    // Backends report their statistics at most once a second: let the last ones arrive.
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    let end = mark(&probe).await?;
    let end_writes = probe.table_writes().await?;
    let arrivals = sse.finish().await;

    let (creates_in_window, creates_total) = probe.creates(from.wall, to.wall).await?;
    let measured_in_window = probe.creates_of(measured_user, from.wall, to.wall).await?;
    let (lags, unapplied, lag_source) = probe.event_lags(from.wall, to.wall).await?;

    let window_ms = (from.wall.timestamp_millis(), to.wall.timestamp_millis());
    let mut sse_histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    for (created_ms, lag_us) in &arrivals.samples {
        if (window_ms.0..window_ms.1).contains(created_ms) {
            sse_histogram.saturating_record((*lag_us).max(1));
        }
    }
    let sse_samples = sse_histogram.len();

    let window = to.at.saturating_duration_since(from.at);
    let per = |amount: i64, creates: i64| {
        if creates > 0 {
            amount as f64 / creates as f64
        } else {
            0.0
        }
    };
    let own = |a: &Mark, b: &Mark| {
        i64::try_from(b.counters.own_queries - a.counters.own_queries).unwrap_or(0)
    };
    let services: Vec<(u32, &'static str)> = rig
        .services
        .iter()
        .map(|service| (service.pid, service.name))
        .collect();
    let bench_pid = std::process::id();
    let cpu_percent = procfs::cpu_percent(&from.cpu, &to.cpu, window, |pid, comm| {
        if let Some((_, name)) = services.iter().find(|(service, _)| *service == pid) {
            return Some((*name).to_owned());
        }
        if pid == bench_pid {
            return Some("bench".to_owned());
        }
        match comm {
            "postgres" | "nats-server" | "s3s-fs" => Some(comm.to_owned()),
            _ => None,
        }
    });

    let mut measurement = Measurement::from_load(NAME, label, &result);
    measurement.system = Some(SystemFigures {
        creates_in_window,
        creates_per_s: if window.is_zero() {
            0.0
        } else {
            creates_in_window as f64 / window.as_secs_f64()
        },
        event_lag_p50_ms: quantile_ms(&lags, 0.50),
        event_lag_p99_ms: quantile_ms(&lags, 0.99),
        event_lag_source: lag_source.to_owned(),
        event_lag_unapplied: unapplied,
        sse_p50_ms: quantile_ms(&sse_histogram, 0.50),
        sse_p99_ms: quantile_ms(&sse_histogram, 0.99),
        sse_samples,
        sse_missing: measured_in_window - i64::try_from(sse_samples).unwrap_or(0),
        sse_ended: arrivals.ended,
        wal_bytes_per_create: per(
            to.counters.wal_bytes - from.counters.wal_bytes,
            creates_in_window,
        ),
        commits_per_create: per(
            to.counters.commits - from.counters.commits - own(&from, &to),
            creates_in_window,
        ),
        wal_bytes_per_create_drained: per(
            end.counters.wal_bytes - start.counters.wal_bytes,
            creates_total,
        ),
        commits_per_create_drained: per(
            end.counters.commits - start.counters.commits - own(&start, &end),
            creates_total,
        ),
        drained,
        drain_s,
        other_databases_commits: to.counters.other_commits - from.counters.other_commits,
        checkpoints: to.counters.checkpoints - from.counters.checkpoints,
        cpu_percent,
        row_writes_per_create_drained: row_writes(&start_writes, &end_writes, creates_total),
        backlog,
        load_average,
    });
    if let Some(system) = &measurement.system {
        print_summary(label, &measurement, system, creates_total);
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

    #[test]
    fn the_default_loads_are_the_issues() {
        assert_eq!(DEFAULT_RATES, [500.0, 1_000.0, 2_000.0, 4_000.0, 6_000.0]);
        assert_eq!(DEFAULT_CLOSED_CONNECTIONS, 64);
        assert_eq!(DEFAULT_DURATION, Duration::from_secs(15));
        assert_eq!(make_content(CONTENT_CHARS).chars().count(), 240);
        assert_eq!(rig::SERVICES.len(), 5);
    }

    #[test]
    fn base64url_decodes_unpadded_claims() -> anyhow::Result<()> {
        // {"userId":"x"}
        assert_eq!(base64url("eyJ1c2VySWQiOiJ4In0")?, br#"{"userId":"x"}"#);
        Ok(())
    }
}
