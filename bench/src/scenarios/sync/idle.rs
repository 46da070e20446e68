//! `idle-10000-connections`: resident memory per idle stream on the release binary.

use std::time::Duration;

use anyhow::Context as _;
use futures::StreamExt;
use hdrhistogram::Histogram;
use tokio::time::Instant;

use crate::context::BenchContext;

use crate::report::Measurement;

use super::{IDLE_CONNECTIONS, NAME, login, measurement, wait_ready};
use crate::scenarios::api_rig::ApiRig;

fn rss_kb(pid: u32) -> anyhow::Result<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|value| value.trim().trim_end_matches("kB").trim().parse().ok())
        .context("VmRSS not found")
}

/// Resident memory per idle connection on the release binary.
pub(super) async fn idle(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<Measurement> {
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
        .env("DATABASE_URL", rig.database_url(ctx)?)
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
