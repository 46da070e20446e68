//! What every scenario gets: connection settings, timings, and pool helpers.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use tokio::sync::OnceCell;

/// The services' defaults, so the bench hits what `cargo xtask dev` set up.
pub const DEFAULT_DATABASE_URL: &str = platform::config::DEFAULT_DATABASE_URL;
pub const DEFAULT_NATS_URL: &str = platform::config::DEFAULT_NATS_URL;

/// Settings shared by all scenarios of one `bench` invocation.
#[derive(Debug)]
pub struct BenchContext {
    pub database_url: String,
    pub nats_url: String,
    /// Measured time per variant (after warmup).
    pub duration: Duration,
    /// Time per variant whose samples are discarded before measuring starts.
    pub warmup: Duration,
    /// Whether `--duration` was given (`duration` is then that value rather than the
    /// default): scenarios with a default of their own use it only when it was.
    pub duration_given: bool,
    /// Options of the `system-create` scenario.
    pub system: SystemOptions,
    database_ready: OnceCell<()>,
}

/// `system-create`'s options (`--rates`, `--variants`, ...; see docs/benchmarks.md).
#[derive(Debug, Clone, Default)]
pub struct SystemOptions {
    /// Open-loop rates (creates per second); `None`: the scenario's defaults.
    pub rates: Option<Vec<f64>>,
    /// Connections of the closed-loop run; `Some(0)` skips it, `None`: the default (64).
    pub closed_connections: Option<usize>,
    /// Variants to run (`many-users`, `one-user`); `None`: both.
    pub variants: Option<Vec<String>>,
    /// Users of the `many-users` variant; `None`: the default (200).
    pub users: Option<usize>,
    /// Directory with the five release service binaries; `None`: the bench binary's own.
    pub bin_dir: Option<PathBuf>,
    /// How long to wait after a run for the system to work off its backlog; `None`: 30 s.
    pub drain_timeout: Option<Duration>,
}

impl BenchContext {
    pub fn new(
        database_url: String,
        nats_url: String,
        duration: Duration,
        warmup: Duration,
    ) -> Self {
        Self {
            database_url,
            nats_url,
            duration,
            warmup,
            duration_given: false,
            system: SystemOptions::default(),
            database_ready: OnceCell::new(),
        }
    }

    /// Connect options parsed from `--database-url`.
    pub fn pg_options(&self) -> anyhow::Result<PgConnectOptions> {
        PgConnectOptions::from_str(&self.database_url)
            .with_context(|| "invalid --database-url / DATABASE_URL")
    }

    /// Create the target database if it does not exist (once per invocation).
    pub async fn ensure_database(&self) -> anyhow::Result<()> {
        self.database_ready
            .get_or_try_init(|| async {
                let options = self.pg_options()?;
                crate::db::ensure_database(&options).await
            })
            .await?;
        Ok(())
    }

    /// A pool of exactly `size` connections to the target database, all opened before this
    /// returns so that connection set-up is not part of any measurement.
    ///
    /// Unlike the services' pool (`platform::db::connect`), it does not ping a connection
    /// on every checkout (`test_before_acquire(false)`): benchmarks measure the queries,
    /// not an extra round trip per operation.
    pub async fn pg_pool(&self, size: u32) -> anyhow::Result<PgPool> {
        anyhow::ensure!(size > 0, "pool size must be at least 1");
        self.ensure_database().await?;
        let options = self.pg_options()?.application_name("bench");
        let pool = PgPoolOptions::new()
            .max_connections(size)
            .min_connections(size)
            .acquire_timeout(Duration::from_secs(30))
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .context("connecting to Postgres")?;
        // Open every connection now: hold `size` of them at once, then hand them back.
        let mut held = Vec::with_capacity(size as usize);
        for _ in 0..size {
            held.push(pool.acquire().await.context("opening pool connections")?);
        }
        drop(held);
        Ok(pool)
    }
}
