//! `latency-500/s-1000-clients`: write → client latency with 1,000 clients streaming.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;

use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::context::BenchContext;

use crate::report::Measurement;

use super::{CLIENTS, InProcess, NAME, WRITE_RATE, login, measurement};
use crate::scenarios::api_rig::ApiRig;

/// Write → client latency at 500 writes/s with 1,000 connected clients.
pub(super) async fn latency(
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
