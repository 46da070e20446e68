//! `catch-up-100k-rows` and `materializer`: working off a backlog, to a client and into the read model.

use std::time::Duration;

use futures::StreamExt;
use hdrhistogram::Histogram;

use tokio::time::Instant;

use crate::context::BenchContext;

use crate::report::Measurement;

use super::{
    CATCH_UP_ROWS, InProcess, MATERIALIZER_CHANGESETS, NAME, login, measurement, start_streamer,
};
use crate::scenarios::api_client::token_user_id;
use crate::scenarios::api_rig::ApiRig;

/// Catch-up of 100,000 rows to a fresh client.
pub(super) async fn catch_up(
    ctx: &BenchContext,
    rig: &ApiRig,
    streamer: &InProcess,
) -> anyhow::Result<Measurement> {
    let client = reqwest::Client::new();
    let (_, token) = login(&client, &rig.base_url, "sync-bench-catch-up@example.com").await?;
    let claims_user = token_user_id(&token)?.to_string();
    let pool = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .connect(&rig.database_url(ctx)?)
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

/// Materializer throughput over a backlog of one-row changesets.
pub(super) async fn materializer(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<Measurement> {
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
        .connect(&rig.database_url(ctx)?)
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
