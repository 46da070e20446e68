//! `sync`: the sync-streamer's four targets (issue 6, docs/benchmarks.md).
//!
//! One api (in-process, as `rpc-create` runs it, on a database `bench_api_<suffix>` and a bus
//! namespace of its own) feeds CHANGES through its outbox relay; the variants run in order:
//!
//! - `latency-500/s-1000-clients`: 1,000 users each hold one SSE stream on an in-process
//!   streamer; an open loop creates entries at 500/s through the api's RPC, round-robin over
//!   the users, each entry titled with its send time. Latency = send of the RPC request →
//!   the `change` frame parsed by its owner's client (api, outbox, relay, NATS, tail, SSE).
//!   Target p50 ≤ 10 ms, p99 ≤ 50 ms.
//! - `catch-up-100k-rows`: 100,000 rows (~450 B each) put straight into the read model for
//!   one fresh user's scope; a fresh client (cursor 0) reads every `delta` frame until
//!   `isLastChunk`. Reported as rows/s (ops = rows). Target ≥ 50,000 rows/s.
//! - `materializer`: with no streamer running, 50,000 one-row changesets are published to
//!   CHANGES; a streamer starts, and the time from it taking the lease to its watermark
//!   reaching the last sequence gives changes/s. Target ≥ 5,000/s.
//! - `idle-10000-connections`: the release `sync-streamer` binary as a child process (build
//!   it first: `cargo build --release -p sync-streamer`); 10,000 SSE streams opened and left
//!   idle; resident memory (VmRSS) growth / 10,000 is reported in `mean_ms` as **KB per
//!   connection** (the table has no better column; the line printed says so). Target ≤ 25 KB.

mod backlog;
mod idle;
mod latency;

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::BenchContext;
use crate::measure::LoadMode;
use crate::report::Measurement;
use crate::scenario::Scenario;
use crate::scenarios::api_client::{dev_login, sync_token};
use crate::scenarios::api_rig::ApiRig;
use backlog::{catch_up, materializer};
use idle::idle;
use latency::latency;

const NAME: &str = "sync";
const CLIENTS: usize = 1_000;
const WRITE_RATE: f64 = 500.0;
const CATCH_UP_ROWS: i64 = 100_000;
const MATERIALIZER_CHANGESETS: usize = 50_000;
const IDLE_CONNECTIONS: usize = 10_000;

pub struct Sync;

impl Scenario for Sync {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "sync-streamer: write→client latency at 500 writes/s with 1,000 clients, catch-up of 100,000 rows, materializer changes/s, RSS per idle connection (10,000)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        // 1,000 users sign in from one address within seconds: lift the per-IP limit on
        // sign-ins, which would otherwise refuse most of them with 429.
        let rig = ApiRig::start_with(ctx, |config| {
            config.auth_rate_limit_per_minute = 1_000_000;
        })
        .await?;
        rig.run_then_stop(async |rig| run_all(ctx, rig).await).await
    }
}

struct InProcess {
    base_url: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), sync_streamer::Error>>,
    leadership: sync_streamer::materializer::Leadership,
}

async fn start_streamer(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<InProcess> {
    let mut config = sync_streamer::Config::for_tests(&rig.database_url(ctx)?, &ctx.nats_url);
    config.common.bus_namespace = rig.namespace.clone();
    config.common.database_max_connections = 16;
    config.sync.max_streams_per_user = 100_000;
    config.sync.lease = Duration::from_secs(3);
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let base_url = format!("http://{}", listener.local_addr()?);
    let shutdown = CancellationToken::new();
    let service = sync_streamer::Service::start(config, listener, shutdown.clone())
        .await
        .map_err(|error| anyhow::anyhow!("starting the streamer: {error}"))?;
    let leadership = service.leadership();
    let handle = tokio::spawn(service.serve());
    wait_ready(&format!("{base_url}/readyz")).await?;
    Ok(InProcess {
        base_url,
        shutdown,
        handle,
        leadership,
    })
}

impl InProcess {
    async fn stop(self) {
        self.shutdown.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(20), self.handle).await;
    }
}

async fn wait_ready(url: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if client
            .get(url)
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            return Ok(());
        }
        anyhow::ensure!(Instant::now() < deadline, "{url} not ready within 60 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Sign in as `email` and take a sync token: (session token, sync token).
async fn login(
    client: &reqwest::Client,
    api: &str,
    email: &str,
) -> anyhow::Result<(String, String)> {
    let signed_in = dev_login(client, api, email, "Bench").await?;
    let token = sync_token(client, api, &signed_in.token).await?;
    Ok((signed_in.token, token))
}

fn measurement(
    variant: &str,
    concurrency: usize,
    rate: Option<f64>,
    window: Duration,
    histogram: &Histogram<u64>,
    ops: u64,
    errors: u64,
) -> Measurement {
    let ms = |quantile: f64| {
        if histogram.is_empty() {
            0.0
        } else {
            histogram.value_at_quantile(quantile) as f64 / 1000.0
        }
    };
    Measurement {
        scenario: NAME.to_owned(),
        variant: variant.to_owned(),
        mode: if rate.is_some() {
            LoadMode::Open
        } else {
            LoadMode::Closed
        },
        concurrency,
        target_rate: rate,
        warmup_s: 0.0,
        duration_s: window.as_secs_f64(),
        ops,
        errors,
        ops_per_sec: if window.as_secs_f64() > 0.0 {
            ops as f64 / window.as_secs_f64()
        } else {
            0.0
        },
        p50_ms: ms(0.50),
        p90_ms: ms(0.90),
        p99_ms: ms(0.99),
        max_ms: if histogram.is_empty() {
            0.0
        } else {
            histogram.max() as f64 / 1000.0
        },
        mean_ms: if histogram.is_empty() {
            0.0
        } else {
            histogram.mean() / 1000.0
        },
        first_error: None,
        recorded_at: chrono::Utc::now(),
        system: None,
    }
}

async fn run_all(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<Vec<Measurement>> {
    let mut results = Vec::new();
    let streamer = start_streamer(ctx, rig).await?;
    results.push(latency(ctx, rig, &streamer).await?);
    results.push(catch_up(ctx, rig, &streamer).await?);
    streamer.stop().await;
    results.push(materializer(ctx, rig).await?);
    match idle(ctx, rig).await {
        Ok(measurement) => results.push(measurement),
        Err(error) => eprintln!("{NAME}: idle-connections variant skipped: {error:#}"),
    }
    Ok(results)
}
