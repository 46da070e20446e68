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

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::BenchContext;
use crate::measure::LoadMode;
use crate::report::Measurement;
use crate::scenario::Scenario;
use crate::scenarios::rpc_create::ApiRig;

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
        let outcome = run_all(ctx, &rig).await;
        let stopped = rig.stop().await;
        let measurements = outcome?;
        stopped?;
        Ok(measurements)
    }
}

fn database_url(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<String> {
    let mut url =
        url::Url::parse(&ctx.database_url).context("--database-url must be a postgres:// URL")?;
    url.set_path(&format!("/{}", rig.database));
    Ok(url.to_string())
}

struct InProcess {
    base_url: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), sync_streamer::Error>>,
    leadership: sync_streamer::materializer::Leadership,
}

async fn start_streamer(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<InProcess> {
    let mut config = sync_streamer::Config::for_tests(&database_url(ctx, rig)?, &ctx.nats_url);
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

async fn login(
    client: &reqwest::Client,
    api: &str,
    email: &str,
) -> anyhow::Result<(String, String)> {
    let login: serde_json::Value = client
        .post(format!("{api}/auth/dev/login"))
        .json(&serde_json::json!({"email": email, "name": "Bench"}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let session = login["token"]
        .as_str()
        .context("no session token")?
        .to_owned();
    let sync: serde_json::Value = client
        .post(format!("{api}/rpc/sync/token"))
        .bearer_auth(&session)
        .json(&serde_json::json!({}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    let token = sync["json"]["token"]
        .as_str()
        .context("no sync token")?
        .to_owned();
    Ok((session, token))
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

/// Write → client latency at 500 writes/s with 1,000 connected clients.
async fn latency(
    ctx: &BenchContext,
    rig: &ApiRig,
    streamer: &InProcess,
) -> anyhow::Result<Measurement> {
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(2_000)
        .build()?;
    eprintln!("{NAME}: signing in {CLIENTS} users and opening their streams ...");
    let mut sessions = Vec::with_capacity(CLIENTS);
    for user in 0..CLIENTS {
        sessions.push(
            login(
                &client,
                &rig.base_url,
                &format!("sync-bench-{user}@example.com"),
            )
            .await?,
        );
    }
    let epoch = Instant::now();
    let measuring_from = Arc::new(AtomicU64::new(u64::MAX));
    let histogram = Arc::new(std::sync::Mutex::new(Histogram::<u64>::new_with_bounds(
        1,
        3_600_000_000,
        3,
    )?));
    let received = Arc::new(AtomicU64::new(0));
    let stop = CancellationToken::new();
    let mut readers = Vec::new();
    let stream_client = reqwest::Client::new();
    for (_, token) in &sessions {
        let response = stream_client
            .get(format!("{}/sync/stream", streamer.base_url))
            .bearer_auth(token)
            .send()
            .await?
            .error_for_status()?;
        let (histogram, received, stop, measuring_from) = (
            Arc::clone(&histogram),
            Arc::clone(&received),
            stop.clone(),
            Arc::clone(&measuring_from),
        );
        readers.push(tokio::spawn(async move {
            let mut body = response.bytes_stream();
            let mut buffer = String::new();
            loop {
                let chunk = tokio::select! {
                    chunk = body.next() => chunk,
                    () = stop.cancelled() => break,
                };
                let Some(Ok(chunk)) = chunk else { break };
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let event: String = buffer.drain(..end + 2).collect();
                    let Some(data) = event.lines().find_map(|line| line.strip_prefix("data: "))
                    else {
                        continue;
                    };
                    if !data.starts_with("{\"changes\"") && !data.contains("\"type\":\"change\"") {
                        continue;
                    }
                    let Ok(frame) = serde_json::from_str::<serde_json::Value>(data) else {
                        continue;
                    };
                    let Some(sent_us) = frame["changes"][0]["data"]["title"]
                        .as_str()
                        .and_then(|title| title.parse::<u64>().ok())
                    else {
                        continue;
                    };
                    if sent_us < measuring_from.load(Ordering::Relaxed) {
                        continue;
                    }
                    let now_us = epoch.elapsed().as_micros() as u64;
                    if let Ok(mut histogram) = histogram.lock() {
                        let _ = histogram.record(now_us.saturating_sub(sent_us).max(1));
                    }
                    received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    eprintln!(
        "{NAME}: {CLIENTS} streams open; writing at {WRITE_RATE}/s for {} s warmup + {} s ...",
        ctx.warmup.as_secs(),
        ctx.duration.as_secs()
    );
    let write_client = reqwest::Client::builder()
        .pool_max_idle_per_host(256)
        .build()?;
    let interval = Duration::from_secs_f64(1.0 / WRITE_RATE);
    let started = Instant::now();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let sent = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut index = 0_usize;
    let total = ctx.warmup + ctx.duration;
    let mut measured_sent = 0_u64;
    while started.elapsed() < total {
        ticker.tick().await;
        if started.elapsed() >= ctx.warmup && measuring_from.load(Ordering::Relaxed) == u64::MAX {
            measuring_from.store(epoch.elapsed().as_micros() as u64, Ordering::Relaxed);
        }
        if measuring_from.load(Ordering::Relaxed) != u64::MAX {
            measured_sent += 1;
        }
        let session = sessions[index % CLIENTS].0.clone();
        index += 1;
        let (write_client, url, sent, errors) = (
            write_client.clone(),
            format!("{}/rpc/journalEntries/create", rig.base_url),
            Arc::clone(&sent),
            Arc::clone(&errors),
        );
        let title = epoch.elapsed().as_micros().to_string();
        tokio::spawn(async move {
            let ok = write_client
                .post(url)
                .bearer_auth(session)
                .json(&serde_json::json!({"json": {"title": title, "content": "latency probe"}}))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ok {
                sent.fetch_add(1, Ordering::Relaxed)
            } else {
                errors.fetch_add(1, Ordering::Relaxed)
            };
        });
    }
    // Let the last frames arrive.
    tokio::time::sleep(Duration::from_secs(2)).await;
    stop.cancel();
    for reader in readers {
        let _ = reader.await;
    }
    let histogram = histogram
        .lock()
        .map_err(|_| anyhow::anyhow!("histogram lock poisoned"))?
        .clone();
    let got = received.load(Ordering::Relaxed);
    let failed = errors.load(Ordering::Relaxed);
    eprintln!(
        "{NAME}: latency: {measured_sent} writes sent in the window, {got} frames received, {failed} write errors"
    );
    let mut result = measurement(
        "latency-500/s-1000-clients",
        CLIENTS,
        Some(WRITE_RATE),
        ctx.duration,
        &histogram,
        got,
        measured_sent.saturating_sub(got),
    );
    result.warmup_s = ctx.warmup.as_secs_f64();
    eprintln!(
        "{NAME}: latency p50 {:.2} ms (target ≤ 10: {}), p99 {:.2} ms (target ≤ 50: {})",
        result.p50_ms,
        if result.p50_ms <= 10.0 {
            "met"
        } else {
            "NOT met"
        },
        result.p99_ms,
        if result.p99_ms <= 50.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(result)
}

/// Catch-up of 100,000 rows to a fresh client.
async fn catch_up(
    ctx: &BenchContext,
    rig: &ApiRig,
    streamer: &InProcess,
) -> anyhow::Result<Measurement> {
    let client = reqwest::Client::new();
    let (_, token) = login(&client, &rig.base_url, "sync-bench-catch-up@example.com").await?;
    let claims_user = {
        let payload = token.split('.').next().unwrap_or_default();
        let json = base64_decode(payload)?;
        let claims: serde_json::Value = serde_json::from_slice(&json)?;
        claims["userId"]
            .as_str()
            .context("userId in the token")?
            .to_owned()
    };
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url(ctx, rig)?)
        .await?;
    let watermark: i64 = sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
        .fetch_one(&pool)
        .await?;
    anyhow::ensure!(watermark > 0, "the materializer has applied nothing yet");
    let content = crate::scenarios::ceiling::make_content(300);
    eprintln!(
        "{NAME}: seeding {CATCH_UP_ROWS} rows into the read model (scope user.{claims_user}) ..."
    );
    sqlx::query(
        "INSERT INTO sync.rows (scope, table_name, row_id, version, seq, deleted, data)
         SELECT $1, 'journal_entries', id::text, 1, 1 + (n % $3), false,
                json_build_object('journalEntryId', id, 'authorUserId', $4::text, 'teamId', null,
                  'promptId', null, 'title', 'seeded ' || n, 'content', $5::text, 'mood', null,
                  'tags', '[]'::json, 'entryDate', null, 'createdAt', 1764000000000,
                  'updatedAt', 1764000000000, 'deletedAt', null, 'version', 1)
         FROM (SELECT n, gen_random_uuid() AS id FROM generate_series(1, $2) AS n) AS seeded",
    )
    .bind(format!("user.{claims_user}"))
    .bind(CATCH_UP_ROWS)
    .bind(watermark)
    .bind(&claims_user)
    .bind(&content)
    .execute(&pool)
    .await?;
    sqlx::query("ANALYZE sync.rows").execute(&pool).await?;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let mut best_rate = 0.0_f64;
    let mut rows_total = 0_u64;
    let mut elapsed_total = Duration::ZERO;
    for run in 0..3 {
        let started = Instant::now();
        let response = client
            .get(format!("{}/sync/stream", streamer.base_url))
            .bearer_auth(&token)
            .send()
            .await?
            .error_for_status()?;
        let mut body = response.bytes_stream();
        let mut buffer = Vec::<u8>::new();
        let mut rows = 0_u64;
        'read: while let Some(chunk) = body.next().await {
            buffer.extend_from_slice(&chunk?);
            while let Some(end) = buffer.windows(2).position(|pair| pair == b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                let text = String::from_utf8_lossy(&event);
                let Some(data) = text.lines().find_map(|line| line.strip_prefix("data: ")) else {
                    continue;
                };
                let frame: serde_json::Value = serde_json::from_str(data)?;
                if frame["type"] == "delta" {
                    rows += frame["data"].as_array().map_or(0, Vec::len) as u64;
                    if frame["isLastChunk"] == true {
                        break 'read;
                    }
                }
            }
        }
        let elapsed = started.elapsed();
        let rate = rows as f64 / elapsed.as_secs_f64();
        eprintln!(
            "{NAME}: catch-up run {run}: {rows} rows in {:.3} s = {rate:.0} rows/s",
            elapsed.as_secs_f64()
        );
        let _ = histogram.record(elapsed.as_micros() as u64);
        best_rate = best_rate.max(rate);
        rows_total += rows;
        elapsed_total += elapsed;
    }
    pool.close().await;
    let result = measurement(
        "catch-up-100k-rows",
        1,
        None,
        elapsed_total,
        &histogram,
        rows_total,
        0,
    );
    eprintln!(
        "{NAME}: catch-up {:.0} rows/s over 3 runs (best {best_rate:.0}); target ≥ 50,000: {} (p50/p99 columns: the whole catch-up's duration)",
        result.ops_per_sec,
        if result.ops_per_sec >= 50_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(result)
}

fn base64_decode(text: &str) -> anyhow::Result<Vec<u8>> {
    // URL-safe, no padding (the sync token's claims).
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

/// Materializer throughput over a backlog of one-row changesets.
async fn materializer(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<Measurement> {
    let nats = platform::nats::connect(&ctx.nats_url, "bench").await?;
    let jetstream = async_nats::jetstream::new(nats);
    let bus = bus::Bus::start(jetstream.clone(), &rig.namespace, "bench").await?;
    eprintln!(
        "{NAME}: publishing {MATERIALIZER_CHANGESETS} changesets with no streamer running ..."
    );
    let row = serde_json::json!({"journalEntryId": "x", "title": "materializer", "content": crate::scenarios::ceiling::make_content(300), "version": 1});
    let mut acks = Vec::new();
    let mut last = 0_u64;
    for index in 0..MATERIALIZER_CHANGESETS {
        let entry_id = uuid::Uuid::new_v4().to_string();
        let mut data = row.clone();
        data["journalEntryId"] = serde_json::json!(entry_id);
        let changeset = messages::sync::v1::Changeset {
            scope: format!("user.{}", uuid::Uuid::from_u128(index as u128 % 1000)),
            changes: vec![messages::sync::v1::RowChange {
                table: "journal_entries".to_owned(),
                op: messages::sync::v1::ChangeOp::Insert as i32,
                row_id: entry_id,
                version: 1,
                row_json: serde_json::to_vec(&data)?,
            }],
            written_at_ms: chrono::Utc::now().timestamp_millis(),
            ..Default::default()
        };
        let subject = bus.subject(&format!("changes.{}", changeset.scope));
        acks.push(
            jetstream
                .publish(subject, prost::Message::encode_to_vec(&changeset).into())
                .await?,
        );
        if acks.len() >= 1_000 {
            for ack in acks.drain(..) {
                last = last.max(ack.await?.sequence);
            }
        }
    }
    for ack in acks.drain(..) {
        last = last.max(ack.await?.sequence);
    }
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&database_url(ctx, rig)?)
        .await?;
    let from: i64 = sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
        .fetch_one(&pool)
        .await?;
    let streamer = start_streamer(ctx, rig).await?;
    let deadline = Instant::now() + Duration::from_secs(30);
    while !streamer.leadership.is_leader() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the streamer never took the lease"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let watermark: i64 = sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
            .fetch_one(&pool)
            .await?;
        if watermark as u64 >= last {
            break;
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the materializer did not catch up within 10 minutes"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let elapsed = started.elapsed();
    streamer.stop().await;
    pool.close().await;
    let applied = last.saturating_sub(from as u64);
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let _ = histogram.record(elapsed.as_micros() as u64);
    let result = measurement("materializer", 1, None, elapsed, &histogram, applied, 0);
    eprintln!(
        "{NAME}: materializer applied {applied} changesets (1 change each) in {:.2} s = {:.0} changes/s; target ≥ 5,000: {}",
        elapsed.as_secs_f64(),
        result.ops_per_sec,
        if result.ops_per_sec >= 5_000.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    Ok(result)
}

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}

/// Resident memory per idle connection on the release binary.
async fn idle(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<Measurement> {
    let exe = std::env::current_exe()?;
    let binary = exe.with_file_name("sync-streamer");
    anyhow::ensure!(
        binary.exists(),
        "{} not built: run `cargo build --release -p sync-streamer`",
        binary.display()
    );
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
        listener.local_addr()?.port()
    };
    let mut child = tokio::process::Command::new(&binary)
        .env("DATABASE_URL", database_url(ctx, rig)?)
        .env("NATS_URL", &ctx.nats_url)
        .env("BUS_NAMESPACE", &rig.namespace)
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("SYNC_MAX_STREAMS_PER_USER", "100000")
        .env("RUST_LOG", "warn")
        .kill_on_drop(true)
        .spawn()?;
    let pid = child.id().context("child pid")?;
    let base_url = format!("http://127.0.0.1:{port}");
    wait_ready(&format!("{base_url}/readyz")).await?;
    let client = reqwest::Client::new();
    let (_, token) = login(&client, &rig.base_url, "sync-bench-idle@example.com").await?;
    // Warm the process up with a few streams so allocator arenas and pools exist.
    let mut streams = Vec::new();
    for _ in 0..50 {
        streams.push(open_idle(&client, &base_url, &token).await?);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = rss_kb(pid)?;
    eprintln!("{NAME}: streamer RSS {before} kB with 50 streams; opening {IDLE_CONNECTIONS} ...");
    let started = Instant::now();
    for _ in 0..IDLE_CONNECTIONS {
        streams.push(open_idle(&client, &base_url, &token).await?);
    }
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after = rss_kb(pid)?;
    let per_connection = after.saturating_sub(before) as f64 / IDLE_CONNECTIONS as f64;
    eprintln!(
        "{NAME}: {IDLE_CONNECTIONS} idle streams opened in {:.1} s; RSS {before} → {after} kB = {per_connection:.1} KB per connection; target ≤ 25 KB: {}",
        started.elapsed().as_secs_f64(),
        if per_connection <= 25.0 {
            "met"
        } else {
            "NOT met"
        }
    );
    drop(streams);
    let _ = child.kill().await;
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3)?;
    let _ = histogram.record((per_connection * 1000.0) as u64);
    let mut result = measurement(
        "idle-10000-connections (mean_ms = KB/conn)",
        IDLE_CONNECTIONS,
        None,
        Duration::ZERO,
        &histogram,
        IDLE_CONNECTIONS as u64,
        0,
    );
    result.mean_ms = per_connection;
    Ok(result)
}

/// Open a stream and read until its catch-up ends, then keep the body (idle).
async fn open_idle(
    client: &reqwest::Client,
    base_url: &str,
    token: &str,
) -> anyhow::Result<impl futures::Stream> {
    let response = client
        .get(format!("{base_url}/sync/stream"))
        .bearer_auth(token)
        .send()
        .await?
        .error_for_status()?;
    let mut body = response.bytes_stream();
    let mut seen = Vec::new();
    while !seen
        .windows(13)
        .any(|window| window == b"isLastChunk\":".as_slice())
    {
        match tokio::time::timeout(Duration::from_secs(10), body.next()).await {
            Ok(Some(chunk)) => seen.extend_from_slice(&chunk?),
            _ => anyhow::bail!("the stream ended before its catch-up"),
        }
    }
    Ok(body)
}
