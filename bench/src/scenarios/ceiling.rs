//! `ceiling`: how many single-row inserts per second Postgres takes straight through sqlx.
//!
//! The upper bound for anything the services do per journal entry: no HTTP, no NATS, no
//! transaction around the insert — one autocommit `INSERT` of a ~500-byte row per
//! operation, closed loop, one pool connection per task (1, 8, 32 and 64).

use std::sync::Arc;

use anyhow::Context as _;
use sqlx::postgres::PgPool;
use uuid::Uuid;

use crate::context::BenchContext;
use crate::db;
use crate::measure::ClosedLoop;
use crate::report::Measurement;
use crate::scenario::Scenario;

const SCHEMA: &str = "bench_ceiling";
const CONCURRENCY: [usize; 4] = [1, 8, 32, 64];
const VARIANT: &str = "insert-1row";

const CREATE_TABLE: &str = "CREATE TABLE bench_ceiling.entries (
    id         uuid        PRIMARY KEY DEFAULT gen_random_uuid(),
    author     uuid        NOT NULL,
    title      text        NOT NULL,
    content    text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    version    int         NOT NULL
)";

const INSERT: &str = "INSERT INTO bench_ceiling.entries (author, title, content, version) \
                      VALUES ($1, $2, $3, $4)";

/// Bytes of `content` per row; with the other columns and the tuple header a row is about
/// 500 bytes (the scenario prints the measured average).
const CONTENT_BYTES: usize = 400;

pub struct Ceiling;

impl Scenario for Ceiling {
    fn name(&self) -> &'static str {
        "ceiling"
    }

    fn description(&self) -> &'static str {
        "single-row autocommit INSERTs of ~500 B straight through sqlx at 1/8/32/64 connections (the raw Postgres ceiling)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let admin = ctx.pg_pool(1).await?;
        db::recreate_schema(&admin, SCHEMA).await?;
        let outcome = measure_all(ctx, &admin).await;
        let cleanup = db::drop_schema(&admin, SCHEMA).await;
        admin.close().await;
        let measurements = outcome?;
        cleanup?;
        Ok(measurements)
    }
}

async fn measure_all(ctx: &BenchContext, admin: &PgPool) -> anyhow::Result<Vec<Measurement>> {
    sqlx::query(CREATE_TABLE)
        .execute(admin)
        .await
        .context("creating bench_ceiling.entries")?;
    let content: Arc<str> = make_content(CONTENT_BYTES).into();
    let mut measurements = Vec::with_capacity(CONCURRENCY.len());
    for concurrency in CONCURRENCY {
        // Every level starts from an empty table right after a checkpoint, so levels see
        // the same index size and the same full-page-write pattern.
        sqlx::query("TRUNCATE bench_ceiling.entries")
            .execute(admin)
            .await
            .context("truncating bench_ceiling.entries")?;
        if let Err(error) = sqlx::query("CHECKPOINT").execute(admin).await {
            eprintln!("ceiling: CHECKPOINT failed, continuing without it: {error}");
        }

        eprintln!(
            "ceiling: {concurrency} connection(s), {} s warmup + {} s measured ...",
            ctx.warmup.as_secs_f64(),
            ctx.duration.as_secs_f64()
        );
        let size = u32::try_from(concurrency).context("concurrency too large")?;
        let pool = ctx.pg_pool(size).await?;
        let load = {
            let pool = pool.clone();
            let content = Arc::clone(&content);
            ClosedLoop::new(ctx, concurrency)
                .run(move |op| {
                    let pool = pool.clone();
                    let content = Arc::clone(&content);
                    async move {
                        sqlx::query(INSERT)
                            .bind(Uuid::new_v4())
                            .bind(format!("Benchmark journal entry number {:012}", op.seq))
                            .bind(&*content)
                            .bind(1_i32)
                            .execute(&pool)
                            .await?;
                        Ok(())
                    }
                })
                .await?
        };
        pool.close().await;

        let measurement = Measurement::from_load("ceiling", VARIANT, &load);
        eprintln!(
            "ceiling: {concurrency} connection(s): {}",
            measurement.summary()
        );
        if measurements.is_empty() {
            let row_bytes: Option<f64> = sqlx::query_scalar(
                "SELECT avg(pg_column_size(e.*))::float8 FROM bench_ceiling.entries e",
            )
            .fetch_one(admin)
            .await?;
            if let Some(bytes) = row_bytes {
                eprintln!("ceiling: average row size {bytes:.0} bytes (pg_column_size)");
            }
        }
        measurements.push(measurement);
    }
    Ok(measurements)
}

/// Journal-like prose of exactly `len` bytes (ASCII).
pub fn make_content(len: usize) -> String {
    const TEXT: &str = "Today I walked along the river before work and wrote down three things \
                        I want to remember about the week. ";
    TEXT.chars().cycle().take(len).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_has_the_requested_size() {
        assert_eq!(make_content(CONTENT_BYTES).len(), CONTENT_BYTES);
    }
}
