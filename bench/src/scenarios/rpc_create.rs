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
//! - `rpc-create-ceiling` / `sql-1tx` (the ceiling): the statements that call runs, straight
//!   through sqlx on 64 connections (connection *i* acting as user *i*), in one transaction
//!   per operation: the session lookup, the `journal_entries` insert, the outbox insert of
//!   `journal_entry.created` and the outbox insert of the changeset, with the same payloads.
//! - `rpc-create-ceiling` / `sql-as-api-pool`: the same statements using Postgres as the api
//!   does: a pool of 16 that pings on checkout, the session looked up on a checkout of its own
//!   before the transaction. It splits the gap between the two rows above into the api's pool
//!   usage and everything else (HTTP, routing, middleware, JSON, validation).
//!
//! The api stays up throughout, so its relay drains the outbox during every variant (and the
//! outbox trigger behaves the same way: see docs/bus.md). Before each variant the entry and
//! outbox tables are truncated and a `CHECKPOINT` taken.
//!
//! It prints the ratio of the two throughputs and checks the targets: RPC ≥ 60 % of the
//! ceiling, RPC p99 < 30 ms.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use messages::definition::BusMessage;
use messages::journal::v1::JournalEntryCreated;
use messages::sync::v1::{ChangeOp, Changeset, RowChange};
use prost::Message as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::types::Json;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::context::BenchContext;
use crate::db::quote_identifier;
use crate::measure::ClosedLoop;
use crate::report::Measurement;
use crate::scenario::Scenario;
use crate::scenarios::ceiling::make_content;

const NAME: &str = "rpc-create";
const CEILING_NAME: &str = "rpc-create-ceiling";
const RPC_VARIANT: &str = "journalEntries.create";
/// How the SQL-only variants use Postgres.
#[derive(Debug, Clone, Copy)]
struct SqlShape {
    variant: &'static str,
    /// Pool connections (the operations in flight are always `CONCURRENCY`).
    pool_size: u32,
    /// Ping each connection on checkout, as the services' pool does (`platform::db::connect`).
    ping_on_checkout: bool,
    /// Look the session up on a checkout of its own before the transaction, as the api's
    /// session extractor does, instead of inside the transaction.
    session_outside_tx: bool,
}

/// The ceiling the targets refer to: everything in one transaction, one connection per
/// operation in flight, no checkout ping.
const CEILING: SqlShape = SqlShape {
    variant: "sql-1tx",
    pool_size: 64,
    ping_on_checkout: false,
    session_outside_tx: false,
};

/// The same statements using Postgres the way the api does: its pool size, a ping per
/// checkout, the session lookup on its own checkout. RPC vs this row is the cost of HTTP,
/// routing, middleware, JSON and validation; this row vs the ceiling is the cost of the api's
/// pool usage.
const AS_API: SqlShape = SqlShape {
    variant: "sql-as-api-pool",
    pool_size: API_POOL_SIZE,
    ping_on_checkout: true,
    session_outside_tx: true,
};
/// Operations in flight: HTTP connections for the RPC variant, pool connections for the
/// ceiling.
pub(crate) const CONCURRENCY: usize = 64;
/// The api's pool: `DATABASE_MAX_CONNECTIONS`' default, as the service runs in production.
const API_POOL_SIZE: u32 = 16;
/// Like the `ceiling` scenario's rows: ~500 bytes per entry.
pub(crate) const CONTENT_BYTES: usize = 400;
pub(crate) const TITLE: &str = "bench";
/// Targets (docs/benchmarks.md).
const TARGET_RATIO: f64 = 0.60;
const TARGET_P99_MS: f64 = 30.0;

// The statements of the RPC path, verbatim: `session::authenticate`, `journal_entries::create`,
// `bus::outbox::emit_raw` (the event, then the changeset written by `changes::Changes::write`).
const SESSION_SQL: &str = "SELECT s.session_id, s.user_id, s.created_at, s.expires_at
           FROM sessions s JOIN users u ON u.user_id = s.user_id
          WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
            AND u.deleted_at IS NULL";
const INSERT_ENTRY_SQL: &str = "INSERT INTO journal_entries
                (author_user_id, team_id, prompt_id, title, content, mood, tags, entry_date)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
         RETURNING journal_entry_id, author_user_id, team_id, prompt_id, title, content, \
                   mood, tags, entry_date, created_at, updated_at, deleted_at, version, \
                   (SELECT timezone FROM users WHERE users.user_id = journal_entries.author_user_id) \
                   AS author_timezone";
const OUTBOX_SQL: &str = "INSERT INTO outbox (outbox_id, subject, payload, headers, ordering_key) VALUES ($1, $2, $3, $4, $5)";

pub struct RpcCreate;

impl Scenario for RpcCreate {
    fn name(&self) -> &'static str {
        NAME
    }

    fn description(&self) -> &'static str {
        "journalEntries.create through the in-process api (HTTP, auth, validation, entry + event + changeset in one tx) at 64 connections, vs the same SQL straight through sqlx (rpc-create-ceiling)"
    }

    async fn run(&self, ctx: &BenchContext) -> anyhow::Result<Vec<Measurement>> {
        let rig = ApiRig::start(ctx).await?;
        let outcome = measure_all(ctx, &rig).await;
        let stopped = rig.stop().await;
        let measurements = outcome?;
        stopped?;
        Ok(measurements)
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
    for shape in [CEILING, AS_API] {
        rig.reset().await?;
        eprintln!(
            "{CEILING_NAME}: {} (closed loop, {CONCURRENCY} in flight on {} pool connections, ping on checkout: {}, session lookup {} the transaction), {} s warmup + {} s measured ...",
            shape.variant,
            shape.pool_size,
            if shape.ping_on_checkout { "yes" } else { "no" },
            if shape.session_outside_tx {
                "before"
            } else {
                "inside"
            },
            ctx.warmup.as_secs_f64(),
            ctx.duration.as_secs_f64()
        );
        let measurement = measure_sql(ctx, rig, &content, shape).await?;
        eprintln!(
            "{CEILING_NAME}: {}: {}",
            shape.variant,
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

pub(crate) fn percent(part: f64, whole: f64) -> f64 {
    if whole > 0.0 {
        part / whole * 100.0
    } else {
        0.0
    }
}

/// A variant whose every operation failed measured nothing: fail the scenario with the cause.
pub(crate) fn ensure_some_succeeded(measurement: &Measurement) -> anyhow::Result<()> {
    anyhow::ensure!(
        measurement.ops > 0,
        "{} / {}: every operation failed ({} errors), first: {}",
        measurement.scenario,
        measurement.variant,
        measurement.errors,
        measurement.first_error.as_deref().unwrap_or("-")
    );
    Ok(())
}

/// 64 tasks, each on its own keep-alive connection, POST `journalEntries.create`.
pub(crate) async fn measure_rpc(
    ctx: &BenchContext,
    rig: &ApiRig,
    content: &str,
) -> anyhow::Result<Measurement> {
    let client = reqwest::Client::builder()
        .http1_only()
        .pool_max_idle_per_host(CONCURRENCY * 2)
        .pool_idle_timeout(None)
        .tcp_nodelay(true)
        .timeout(Duration::from_secs(30))
        .build()
        .context("building the HTTP client")?;
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
        })
        .await?;
    Ok(Measurement::from_load(NAME, RPC_VARIANT, &load))
}

/// The session row `authenticate` reads.
#[derive(sqlx::FromRow)]
#[allow(dead_code)] // read like the api reads it; only `user_id` is used
struct SessionRow {
    session_id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// The RPC path's statements, `CONCURRENCY` operations in flight, shaped by `shape`.
async fn measure_sql(
    ctx: &BenchContext,
    rig: &ApiRig,
    content: &str,
    shape: SqlShape,
) -> anyhow::Result<Measurement> {
    let pool = PgPoolOptions::new()
        .max_connections(shape.pool_size)
        .min_connections(shape.pool_size)
        .acquire_timeout(Duration::from_secs(30))
        .test_before_acquire(shape.ping_on_checkout)
        .connect_with(rig.api_options.clone().application_name("bench"))
        .await
        .context("connecting the SQL variant's pool")?;
    let mut held = Vec::with_capacity(shape.pool_size as usize);
    for _ in 0..shape.pool_size {
        held.push(pool.acquire().await.context("opening pool connections")?);
    }
    drop(held);
    // One session per worker, like the RPC variant's tokens.
    let token_hashes: Vec<Vec<u8>> =
        sqlx::query_scalar("SELECT token_hash FROM sessions WHERE revoked_at IS NULL")
            .fetch_all(&pool)
            .await
            .context("reading the bench sessions' token hashes")?;
    anyhow::ensure!(
        token_hashes.len() == CONCURRENCY,
        "expected {CONCURRENCY} bench sessions, found {}",
        token_hashes.len()
    );
    let token_hashes: Arc<[Vec<u8>]> = token_hashes.into();
    let content: Arc<str> = content.into();
    let load = {
        let pool = pool.clone();
        ClosedLoop::new(ctx, CONCURRENCY)
            .run(move |op| {
                let pool = pool.clone();
                let token_hashes = Arc::clone(&token_hashes);
                let content = Arc::clone(&content);
                async move {
                    let token_hash = token_hashes
                        .get(op.worker)
                        .context("no session for this worker")?;
                    create_in_sql(&pool, token_hash, &content, shape.session_outside_tx).await
                }
            })
            .await?
    };
    pool.close().await;
    Ok(Measurement::from_load(CEILING_NAME, shape.variant, &load))
}

/// What `journalEntries.create` does in the database, without HTTP, auth middleware or
/// validation: the session lookup (inside the transaction, or before it on a checkout of its
/// own), then the entry, its event and its changeset, committed together.
async fn create_in_sql(
    pool: &PgPool,
    token_hash: &[u8],
    content: &str,
    session_outside_tx: bool,
) -> anyhow::Result<()> {
    let lookup = sqlx::query_as(SESSION_SQL).bind(token_hash);
    let (session, mut tx): (Option<SessionRow>, _) = if session_outside_tx {
        let session = lookup.fetch_optional(pool).await?;
        (session, pool.begin().await?)
    } else {
        let mut tx = pool.begin().await?;
        (lookup.fetch_optional(&mut *tx).await?, tx)
    };
    let session = session.context("the bench session is gone")?;
    let entry: api::journal_entries::JournalEntry = sqlx::query_as(INSERT_ENTRY_SQL)
        .bind(session.user_id)
        .bind(None::<Uuid>)
        .bind(None::<Uuid>)
        .bind(TITLE)
        .bind(content)
        .bind(None::<i16>)
        .bind(Vec::<String>::new())
        .bind(None::<NaiveDate>)
        .fetch_one(&mut *tx)
        .await?;
    let entry_id = entry.journal_entry_id.to_string();
    let event = JournalEntryCreated {
        journal_entry_id: entry_id.clone(),
        author_user_id: entry.author_user_id.to_string(),
        team_id: String::new(),
        created_at_ms: entry.created_at.timestamp_millis(),
        version: entry.version,
        // The same facts the api computes (the bench's users are all in UTC).
        facts: Some(messages::journal::v1::JournalEntryFacts {
            word_count: i32::try_from(entry.content.split_whitespace().count()).unwrap_or(0),
            entry_date: None,
            created_local_date: entry.created_at.format("%Y-%m-%d").to_string(),
            created_local_hour: i32::try_from(chrono::Timelike::hour(&entry.created_at))
                .unwrap_or(0),
            created_at_ms: entry.created_at.timestamp_millis(),
        }),
    };
    outbox_insert(
        &mut tx,
        &JournalEntryCreated::subject(),
        JournalEntryCreated::NAME,
        &event.encode_to_vec(),
        Some(&entry_id),
    )
    .await?;
    let scope = format!("user.{}", entry.author_user_id);
    let subject = format!("changes.{scope}");
    let changeset = Changeset {
        scope,
        changes: vec![RowChange {
            table: "journal_entries".to_owned(),
            op: ChangeOp::Insert as i32,
            row_id: entry_id,
            version: entry.version,
            row_json: serde_json::to_vec(&entry)?,
        }],
        written_at_ms: Utc::now().timestamp_millis(),
        ..Default::default()
    };
    outbox_insert(
        &mut tx,
        &subject,
        "changeset",
        &changeset.encode_to_vec(),
        Some(&subject),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

async fn outbox_insert(
    conn: &mut sqlx::PgConnection,
    subject: &str,
    name: &str,
    payload: &[u8],
    ordering_key: Option<&str>,
) -> anyhow::Result<()> {
    let headers = BTreeMap::from([(bus::headers::MESSAGE_NAME.to_owned(), name.to_owned())]);
    sqlx::query(OUTBOX_SQL)
        .bind(Uuid::now_v7())
        .bind(subject)
        .bind(payload)
        .bind(Json(headers))
        .bind(ordering_key)
        .execute(conn)
        .await?;
    Ok(())
}

/// The api running in this process on a database and bus namespace of its own, signed in.
pub(crate) struct ApiRig {
    pub(crate) database: String,
    pub(crate) namespace: String,
    nats_url: String,
    pub(crate) base_url: String,
    /// One session token per connection (user `bench-<i>@example.com`).
    pub(crate) tokens: Vec<String>,
    /// Connect options for the api's schema in the bench database.
    api_options: PgConnectOptions,
    /// On the bench's target database (`--database-url`): creates and drops the api's
    /// database, takes checkpoints.
    admin: PgPool,
    /// On the api's schema: resets tables, counts rows.
    pub(crate) pool: PgPool,
    shutdown: CancellationToken,
    api: Option<JoinHandle<Result<(), api::Error>>>,
}

impl ApiRig {
    pub(crate) async fn start(ctx: &BenchContext) -> anyhow::Result<Self> {
        Self::start_with(ctx, |_| {}).await
    }

    /// Start with `configure` applied to the api's configuration last.
    pub(crate) async fn start_with(
        ctx: &BenchContext,
        configure: impl FnOnce(&mut api::Config),
    ) -> anyhow::Result<Self> {
        let suffix = Uuid::new_v4().simple().to_string();
        let suffix = &suffix[..12];
        let database = format!("bench_api_{suffix}");
        let namespace = format!("bench{suffix}");
        let admin = ctx.pg_pool(1).await?;
        sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&database)))
            .execute(&admin)
            .await
            .with_context(|| format!("creating database {database}"))?;
        let api_options = ctx
            .pg_options()?
            .database(&database)
            .options([("search_path", api::SCHEMA)]);
        // Lazy: its first use comes after the api has migrated its schema. It can only see
        // the api's schema in the bench's own database.
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect_lazy_with(api_options.clone().application_name("bench"));
        let mut rig = Self {
            api_options,
            database,
            namespace,
            nats_url: ctx.nats_url.clone(),
            base_url: String::new(),
            tokens: Vec::new(),
            pool,
            admin,
            shutdown: CancellationToken::new(),
            api: None,
        };
        // From here on `stop` cleans up whatever was set up.
        match rig.launch(ctx, configure).await {
            Ok(()) => Ok(rig),
            Err(error) => {
                if let Err(cleanup) = rig.stop().await {
                    eprintln!("{NAME}: cleanup after a failed start failed: {cleanup:#}");
                }
                Err(error)
            }
        }
    }

    async fn launch(
        &mut self,
        ctx: &BenchContext,
        configure: impl FnOnce(&mut api::Config),
    ) -> anyhow::Result<()> {
        let mut url = url::Url::parse(&ctx.database_url)
            .context("--database-url must be a postgres:// URL")?;
        url.set_path(&format!("/{}", self.database));
        let mut config = api::Config::for_tests(url.as_str(), &ctx.nats_url);
        config.common.bus_namespace = self.namespace.clone();
        config.common.database_max_connections = API_POOL_SIZE;
        config.common.shutdown_grace = Duration::from_secs(5);
        configure(&mut config);
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .context("binding the api's listener")?;
        self.base_url = format!("http://{}", listener.local_addr()?);
        self.api = Some(tokio::spawn(api::run(
            config,
            listener,
            self.shutdown.clone(),
        )));
        let client = reqwest::Client::new();
        self.wait_ready(&client).await?;
        eprintln!(
            "{NAME}: api at {}, database {}, namespace {}",
            self.base_url, self.database, self.namespace
        );

        for user in 0..CONCURRENCY {
            let login: serde_json::Value = client
                .post(format!("{}/auth/dev/login", self.base_url))
                .json(&serde_json::json!({
                    "email": format!("bench-{user}@example.com"),
                    "name": format!("Bench {user}"),
                }))
                .send()
                .await
                .context("dev login")?
                .error_for_status()
                .context("dev login")?
                .json()
                .await
                .context("dev login answer")?;
            let token = login["token"]
                .as_str()
                .context("dev login answered no token")?;
            self.tokens.push(token.to_owned());
        }

        Ok(())
    }

    async fn wait_ready(&mut self, client: &reqwest::Client) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(api) = self.api.take_if(|api| api.is_finished()) {
                match api.await {
                    Ok(Ok(())) => anyhow::bail!("the api stopped while starting"),
                    Ok(Err(error)) => {
                        anyhow::bail!("the api failed to start: {error} ({})", error.code())
                    }
                    Err(error) => anyhow::bail!("the api task failed: {error}"),
                }
            }
            let ready = client
                .get(format!("{}/readyz", self.base_url))
                .send()
                .await
                .is_ok_and(|response| response.status().is_success());
            if ready {
                return Ok(());
            }
            anyhow::ensure!(
                Instant::now() < deadline,
                "the api was not ready within 60 s"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Before a variant: empty the entry and outbox tables and checkpoint, so both variants
    /// start from the same table and WAL state.
    pub(crate) async fn reset(&self) -> anyhow::Result<()> {
        sqlx::query("TRUNCATE journal_entries, outbox CASCADE")
            .execute(&self.pool)
            .await
            .context("truncating journal_entries and outbox")?;
        if let Err(error) = sqlx::query("CHECKPOINT").execute(&self.admin).await {
            eprintln!("{NAME}: CHECKPOINT failed, continuing without it: {error}");
        }
        Ok(())
    }

    /// What the variant wrote (warmup included): entries, outbox rows, rows still unrelayed.
    pub(crate) async fn print_rows(&self, label: &str) {
        let counts: Result<(i64, i64, i64), sqlx::Error> = sqlx::query_as(
            "SELECT (SELECT count(*) FROM journal_entries),
                    (SELECT count(*) FROM outbox),
                    (SELECT count(*) FROM outbox WHERE sent_at IS NULL)",
        )
        .fetch_one(&self.pool)
        .await;
        match counts {
            Ok((entries, outbox, unsent)) => eprintln!(
                "{label}:   wrote {entries} entries and {outbox} outbox rows ({unsent} not yet relayed), warmup included"
            ),
            Err(error) => eprintln!("{label}:   row counts unavailable: {error}"),
        }
    }

    /// Stop the api, delete its streams, drop its database.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        // The relay drains the outbox before it looks at the shutdown: leave it nothing.
        let _ = sqlx::query("TRUNCATE outbox").execute(&self.pool).await;
        self.shutdown.cancel();
        if let Some(api) = self.api.take() {
            match tokio::time::timeout(Duration::from_secs(20), api).await {
                Ok(Ok(Err(error))) => eprintln!("{NAME}: the api stopped with: {error}"),
                Ok(Err(error)) => eprintln!("{NAME}: the api task failed: {error}"),
                Err(_) => eprintln!("{NAME}: the api did not stop within 20 s"),
                Ok(Ok(Ok(()))) => {}
            }
        }
        self.pool.close().await;
        let streams = async {
            let client = platform::nats::connect(&self.nats_url, "bench").await?;
            let bus = bus::Bus::start(async_nats::jetstream::new(client), &self.namespace, "bench")
                .await?;
            bus.delete_streams().await?;
            anyhow::Ok(())
        }
        .await;
        let dropped = sqlx::query(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            quote_identifier(&self.database)
        ))
        .execute(&self.admin)
        .await
        .with_context(|| format!("dropping database {}", self.database));
        self.admin.close().await;
        streams.context("deleting the bench streams")?;
        dropped?;
        Ok(())
    }
}
