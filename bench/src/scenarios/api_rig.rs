//! The api running in the bench process (`api::run` on a `127.0.0.1:0` listener, with its
//! production router, middleware, pool and outbox relay) against a database of its own
//! (`bench_api_<suffix>`, created and dropped by the run: the api's schema name is fixed, so a
//! database rather than a schema isolates it) and a bus namespace of its own
//! (`bench<suffix>`), with `CONCURRENCY` users signed in through the dev login.

use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::context::BenchContext;
use crate::db::quote_identifier;
use crate::scenarios::api_client::dev_login;

/// What the rig's messages start with.
const NAME: &str = "api-rig";
/// Users signed in, one per connection of the scenarios that drive the api.
pub(crate) const CONCURRENCY: usize = 64;
/// The api's pool: `DATABASE_MAX_CONNECTIONS`' default, as the service runs in production.
pub(crate) const API_POOL_SIZE: u32 = 16;

/// The api running in this process on a database and bus namespace of its own, signed in.
pub(crate) struct ApiRig {
    pub(crate) database: String,
    pub(crate) namespace: String,
    nats_url: String,
    pub(crate) base_url: String,
    /// One session token per connection (user `bench-<i>@example.com`).
    pub(crate) tokens: Vec<String>,
    /// Connect options for the api's schema in the bench database.
    pub(crate) api_options: PgConnectOptions,
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
        let mut config = api::Config::for_tests(&self.database_url(ctx)?, &ctx.nats_url);
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
            let email = format!("bench-{user}@example.com");
            let signed_in =
                dev_login(&client, &self.base_url, &email, &format!("Bench {user}")).await?;
            self.tokens.push(signed_in.token);
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

    /// Run `scenario` on the rig, then stop the rig whatever happened (the scenario's error
    /// first).
    pub(crate) async fn run_then_stop<T>(
        self,
        scenario: impl AsyncFnOnce(&ApiRig) -> anyhow::Result<T>,
    ) -> anyhow::Result<T> {
        let outcome = scenario(&self).await;
        let stopped = self.stop().await;
        let value = outcome?;
        stopped?;
        Ok(value)
    }

    /// The URL of the api's database (for services and pools of its own).
    pub(crate) fn database_url(&self, ctx: &BenchContext) -> anyhow::Result<String> {
        let mut url = url::Url::parse(&ctx.database_url)
            .context("--database-url must be a postgres:// URL")?;
        url.set_path(&format!("/{}", self.database));
        Ok(url.to_string())
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
        remove_run(&self.nats_url, &self.namespace, self.admin, &self.database).await
    }
}

/// After a run: delete the streams of its bus namespace and drop its database (both even
/// when the other fails), then close `admin`.
pub(crate) async fn remove_run(
    nats_url: &str,
    namespace: &str,
    admin: PgPool,
    database: &str,
) -> anyhow::Result<()> {
    let streams = async {
        let client = platform::nats::connect(nats_url, "bench").await?;
        let bus = bus::Bus::start(async_nats::jetstream::new(client), namespace, "bench").await?;
        bus.delete_streams().await?;
        anyhow::Ok(())
    }
    .await;
    // A WAL outbox's slots (`BUS_OUTBOX=wal`) keep a database from being dropped: end the
    // run's sessions, which frees the slots, then drop them.
    let _ =
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(database)
            .execute(&admin)
            .await;
    for _ in 0..50 {
        let slots: Vec<(String, bool)> = sqlx::query_as(
            "SELECT slot_name::text, active FROM pg_replication_slots WHERE database = $1",
        )
        .bind(database)
        .fetch_all(&admin)
        .await
        .unwrap_or_default();
        if slots.is_empty() {
            break;
        }
        for (slot, active) in slots {
            if !active {
                let _ = sqlx::query("SELECT pg_drop_replication_slot($1::name)")
                    .bind(&slot)
                    .execute(&admin)
                    .await;
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let dropped = sqlx::query(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_identifier(database)
    ))
    .execute(&admin)
    .await
    .with_context(|| format!("dropping database {database}"));
    admin.close().await;
    streams.context("deleting the run's streams")?;
    dropped?;
    Ok(())
}
