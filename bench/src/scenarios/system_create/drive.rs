//! One run's load and what it measures: sign in, attach the SSE client, drive creates, let the
//! system drain, and turn the probes' readings into the run's figures.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::context::BenchContext;
use crate::measure::{ClosedLoop, LoadResult, OpenLoop};
use crate::report::{Measurement, SystemFigures};

use super::probes::{PgCounters, Probe, quantile_ms};
use super::procfs::{self, CpuSample};
use super::rig::SystemRig;
use super::sse::SseClient;
use super::{
    CONTENT_CHARS, DEFAULT_DRAIN_TIMEOUT, DEFAULT_DURATION, DEFAULT_USERS, Load, MAX_IN_FLIGHT,
    NAME, TITLE, Variant, print_summary, row_writes,
};
use crate::scenarios::api_client::{CreateCall, SignedIn, dev_login, load_client, sync_token};
use crate::scenarios::ceiling::make_content;

/// `users` users signed in through the dev login (`system-<run>-<i>@example.com`).
async fn sign_in(
    client: &reqwest::Client,
    api: &str,
    users: usize,
    run: usize,
) -> anyhow::Result<Vec<SignedIn>> {
    let mut sessions = Vec::with_capacity(users);
    for user in 0..users {
        let email = format!("system-{run}-{user}@example.com");
        sessions.push(dev_login(client, api, &email, &format!("System {user}")).await?);
    }
    Ok(sessions)
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

pub(super) async fn drive(
    ctx: &BenchContext,
    rig: &mut SystemRig,
    variant: Variant,
    load: Load,
    label: &str,
    load_average: String,
) -> anyhow::Result<Measurement> {
    let client = load_client(MAX_IN_FLIGHT)?;
    let api = rig.service("api")?.base_url.clone();
    let streamer = rig.service("sync-streamer")?.base_url.clone();
    let users = match variant {
        Variant::ManyUsers => ctx.system.users.unwrap_or(DEFAULT_USERS).max(1),
        Variant::OneUser => 1,
    };
    let sessions = sign_in(&client, &api, users, 0).await?;
    let measured = sessions.first().context("no user signed in")?;
    let measured_user = measured.user_id;
    let measured_token = measured.token.clone();
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
        .map(|session| format!("Bearer {}", session.token))
        .collect();
    let create = move |op: crate::measure::OpInfo| {
        let client = client.clone();
        let url = Arc::clone(&url);
        let body = Arc::clone(&body);
        let authorizations = Arc::clone(&authorizations);
        async move {
            let index = usize::try_from(op.seq % authorizations.len() as u64).unwrap_or(0);
            let authorization = authorizations.get(index).context("no session")?;
            CreateCall::rpc(&url, authorization, &body)
                .send(&client)
                .await
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
