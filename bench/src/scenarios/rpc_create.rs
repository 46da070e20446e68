//! `rpc-create`: `journalEntries.create` through the whole RPC stack, and the same SQL without
//! it.
//!
//! The real api runs in the bench process (`api::run` on a `127.0.0.1:0` listener, with its
//! production router, middleware, pool and outbox relay) against a database of its own
//! (`bench_api_<suffix>`, created and dropped by the run: the api's schema name is fixed, so a
//! database rather than a schema isolates it) and a bus namespace of its own
//! (`bench<suffix>`). Each of the 64 connections signs in as a user of its own through the dev
//! login and uses that real session token: 64 users writing at once, as in production, rather
//! than one user whose changesets (all on one ordering key, `changes.user.<id>`) the relay can
//! only publish one per batch.
//!
//! Variants (closed loop, 64 operations in flight each):
//! - `rpc-create` / `journalEntries.create`: 64 HTTP/1.1 keep-alive connections (one reqwest
//!   client, one connection per task) POST `{"json":{"title":"bench","content":<400 B>}}` with
//!   its user's bearer token; an operation succeeds on a `200` whose body is the created entry.
//! - `rpc-create-ceiling` / `sql-1tx` (the ceiling): what that call does in Postgres, by the
//!   api's own code: `journal_entries::create::create_entry` (one autocommit statement writing
//!   the entry, its `journal_entry.created` event and its changeset) on a pool of 64
//!   connections that never ping (connection *i* acting as user *i*). The session lookup is
//!   left out: the api answers it from its session cache.
//! - `rpc-create-ceiling` / `sql-as-api-pool`: the same call on the pool the api uses
//!   (`platform::db::connect`, 16 connections). It splits the gap between the two rows above
//!   into the api's pool usage and everything else (HTTP, routing, middleware, JSON,
//!   validation, the session cache).
//!
//! The api stays up throughout, so its relay drains the outbox during every variant (and the
//! outbox trigger behaves the same way: see docs/bus.md). Before each variant the entry and
//! outbox tables are truncated and a `CHECKPOINT` taken.
//!
//! It prints the ratio of the two throughputs and checks the targets: RPC ≥ 60 % of the
//! ceiling, RPC p99 < 30 ms.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use domain::ids::UserId;
use secrecy::SecretString;
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::context::BenchContext;
use crate::measure::ClosedLoop;
use crate::report::Measurement;
use crate::scenario::Scenario;
use crate::scenarios::api_client::{CreateCall, ensure_some_succeeded, load_client, percent};
use crate::scenarios::api_rig::{API_POOL_SIZE, ApiRig, CONCURRENCY};
use crate::scenarios::ceiling::make_content;

const NAME: &str = "rpc-create";
const CEILING_NAME: &str = "rpc-create-ceiling";
const RPC_VARIANT: &str = "journalEntries.create";
/// Which pool the SQL-only variants call the api's create on.
#[derive(Debug, Clone, Copy)]
enum SqlShape {
    /// The ceiling the targets refer to: one connection per operation in flight, no
    /// checkout ping.
    Ceiling,
    /// The pool the api runs on (`platform::db::connect`, its size). RPC vs this row is the
    /// cost of HTTP, routing, middleware, JSON and validation; this row vs the ceiling is the
    /// cost of the api's pool usage.
    AsApi,
}

impl SqlShape {
    fn variant(self) -> &'static str {
        match self {
            Self::Ceiling => "sql-1tx",
            Self::AsApi => "sql-as-api-pool",
        }
    }

    fn pool_size(self) -> u32 {
        match self {
            Self::Ceiling => CONCURRENCY as u32,
            Self::AsApi => API_POOL_SIZE,
        }
    }

    async fn pool(self, ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<PgPool> {
        let pool = match self {
            Self::Ceiling => PgPoolOptions::new()
                .max_connections(self.pool_size())
                .min_connections(self.pool_size())
                .acquire_timeout(Duration::from_secs(30))
                .test_before_acquire(false)
                .connect_with(rig.api_options.clone().application_name("bench"))
                .await
                .context("connecting the ceiling's pool")?,
            Self::AsApi => {
                let url = SecretString::from(rig.database_url(ctx)?);
                platform::db::connect(&url, api::SCHEMA, self.pool_size())
                    .await
                    .context("connecting a pool like the api's")?
            }
        };
        // Open every connection before measuring.
        let mut held = Vec::with_capacity(self.pool_size() as usize);
        for _ in 0..self.pool_size() {
            held.push(pool.acquire().await.context("opening pool connections")?);
        }
        drop(held);
        Ok(pool)
    }
}

/// Like the `ceiling` scenario's rows: ~500 bytes per entry.
pub(crate) const CONTENT_BYTES: usize = 400;
pub(crate) const TITLE: &str = "bench";
/// Targets (docs/benchmarks.md).
const TARGET_RATIO: f64 = 0.60;
const TARGET_P99_MS: f64 = 30.0;

pub struct RpcCreate;

impl Scenario for RpcCreate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "journalEntries.create through the in-process api (HTTP, auth, validation, entry + event + changeset in one statement) at 64 connections, vs the api's create called straight on a pool (rpc-create-ceiling)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let rig = ApiRig::start(ctx).await?;
        rig.run_then_stop(async |rig| measure_all(ctx, rig).await)
            .await
    }
}

async fn measure_all(ctx: &BenchContext, rig: &ApiRig) -> anyhow::Result<Vec<Measurement>> {
    let content: Arc<str> = make_content(CONTENT_BYTES).into();

    rig.reset().await?;
    eprintln!(
        "{NAME}: {RPC_VARIANT} over HTTP (closed loop, {CONCURRENCY} connections, api pool {API_POOL_SIZE}), {} s warmup + {} s measured ...",
        ctx.warmup.as_secs_f64(),
        ctx.duration.as_secs_f64()
    );
    let rpc = measure_rpc(ctx, rig, &content).await?;
    eprintln!("{NAME}: {RPC_VARIANT}: {}", rpc.summary());
    rig.print_rows(NAME).await;
    ensure_some_succeeded(&rpc)?;

    let mut sql = Vec::with_capacity(2);
    for shape in [SqlShape::Ceiling, SqlShape::AsApi] {
        rig.reset().await?;
        eprintln!(
            "{CEILING_NAME}: {} (closed loop, {CONCURRENCY} in flight on {} pool connections), {} s warmup + {} s measured ...",
            shape.variant(),
            shape.pool_size(),
            ctx.warmup.as_secs_f64(),
            ctx.duration.as_secs_f64()
        );
        let measurement = measure_sql(ctx, rig, &content, shape).await?;
        eprintln!(
            "{CEILING_NAME}: {}: {}",
            shape.variant(),
            measurement.summary()
        );
        rig.print_rows(CEILING_NAME).await;
        ensure_some_succeeded(&measurement)?;
        sql.push(measurement);
    }
    let ceiling = sql[0].clone();
    let as_api = sql[1].clone();

    let ratio = percent(rpc.ops_per_sec, ceiling.ops_per_sec) / 100.0;
    let met = |ok: bool| if ok { "met" } else { "NOT met" };
    eprintln!(
        "{NAME}: RPC/ceiling = {:.0} / {:.0} ops/s = {:.1} % (target ≥ {:.0} %: {}); RPC p99 {:.3} ms (target < {TARGET_P99_MS} ms: {})",
        rpc.ops_per_sec,
        ceiling.ops_per_sec,
        ratio * 100.0,
        TARGET_RATIO * 100.0,
        met(ratio >= TARGET_RATIO),
        rpc.p99_ms,
        met(rpc.p99_ms < TARGET_P99_MS),
    );
    eprintln!(
        "{NAME}: RPC / {} = {:.1} % (HTTP, routing, middleware, JSON, validation); {} / ceiling = {:.1} % (the api's pool usage)",
        as_api.variant,
        percent(rpc.ops_per_sec, as_api.ops_per_sec),
        as_api.variant,
        percent(as_api.ops_per_sec, ceiling.ops_per_sec),
    );
    Ok(vec![rpc, ceiling, as_api])
}

/// 64 tasks, each on its own keep-alive connection, POST `journalEntries.create`.
pub(crate) async fn measure_rpc(
    ctx: &BenchContext,
    rig: &ApiRig,
    content: &str,
) -> anyhow::Result<Measurement> {
    let client = load_client(CONCURRENCY * 2)?;
    let url: Arc<str> = format!("{}/rpc/journalEntries/create", rig.base_url).into();
    let authorizations: Arc<[String]> = rig
        .tokens
        .iter()
        .map(|token| format!("Bearer {token}"))
        .collect();
    let body: Arc<str> = serde_json::json!({ "json": { "title": TITLE, "content": content } })
        .to_string()
        .into();
    let load = ClosedLoop::new(ctx, CONCURRENCY)
        .run(move |op| {
            let client = client.clone();
            let url = Arc::clone(&url);
            let authorizations = Arc::clone(&authorizations);
            let body = Arc::clone(&body);
            async move {
                let authorization = authorizations
                    .get(op.worker)
                    .context("no session for this worker")?;
                CreateCall::rpc(&url, authorization, &body)
                    .send(&client)
                    .await
            }
        })
        .await?;
    Ok(Measurement::from_load(NAME, RPC_VARIANT, &load))
}

/// The api's create, `CONCURRENCY` operations in flight on the pool `shape` says, worker *i*
/// writing as the user of session *i*.
async fn measure_sql(
    ctx: &BenchContext,
    rig: &ApiRig,
    content: &str,
    shape: SqlShape,
) -> anyhow::Result<Measurement> {
    let pool = shape.pool(ctx, rig).await?;
    let authors: Vec<UserId> =
        sqlx::query_scalar("SELECT user_id FROM sessions WHERE revoked_at IS NULL")
            .fetch_all(&pool)
            .await
            .context("reading the bench sessions' users")?;
    anyhow::ensure!(
        authors.len() == CONCURRENCY,
        "expected {CONCURRENCY} bench sessions, found {}",
        authors.len()
    );
    let authors: Arc<[UserId]> = authors.into();
    let content: Arc<str> = content.into();
    let load = {
        let pool = pool.clone();
        ClosedLoop::new(ctx, CONCURRENCY)
            .run(move |op| {
                let pool = pool.clone();
                let authors = Arc::clone(&authors);
                let content = Arc::clone(&content);
                async move {
                    let author = *authors
                        .get(op.worker)
                        .context("no session for this worker")?;
                    let input = api::journal_entries::types::CreateInput {
                        title: TITLE.to_owned(),
                        content: content.to_string(),
                        mood: None,
                        tags: None,
                        entry_date: None,
                        team_id: None,
                        prompt_id: None,
                    };
                    api::journal_entries::create::create_entry(&pool, author, input).await?;
                    Ok(())
                }
            })
            .await?
    };
    pool.close().await;
    Ok(Measurement::from_load(CEILING_NAME, shape.variant(), &load))
}
