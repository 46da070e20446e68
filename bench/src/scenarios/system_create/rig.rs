//! The whole system as child processes: the five release binaries on a database and a bus
//! namespace of their own, started the way `cargo xtask dev` and the end-to-end tests'
//! `ServiceProcess` start them (same environment variables), killed when the rig is dropped.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use anyhow::Context as _;
use sqlx::postgres::{PgPool, PgPoolOptions};
use tokio::process::{Child, Command};
use tokio::time::Instant;

use crate::context::BenchContext;
use crate::db::quote_identifier;
use crate::scenarios::api_rig::remove_run;

/// The five services, in the order they are started.
pub const SERVICES: [&str; 5] = ["api", "sync-streamer", "worker", "cron", "notifier"];

/// How long the services may take to migrate their schemas and answer `/readyz`.
const READY_TIMEOUT: Duration = Duration::from_secs(90);

/// One service process.
pub struct ServiceChild {
    pub name: &'static str,
    pub pid: u32,
    pub base_url: String,
    child: Child,
}

/// The five services running against `database` in bus namespace `namespace`.
pub struct SystemRig {
    pub database: String,
    pub namespace: String,
    pub database_url: String,
    pub services: Vec<ServiceChild>,
    /// Where the services' output goes (one file per service).
    pub log_dir: PathBuf,
    /// On the `postgres` maintenance database: creates and drops the bench database, reads
    /// server-wide statistics without counting as the bench database's transactions.
    pub admin: PgPool,
    /// On the bench database (all schemas): counts, lags, backlogs.
    pub pool: PgPool,
    nats_url: String,
}

/// The directory holding the service binaries: `--bin-dir`, else the bench binary's own
/// (`<target>/release/` when run through `cargo bench-run`).
pub fn binary_dir(ctx: &BenchContext) -> anyhow::Result<PathBuf> {
    if let Some(dir) = &ctx.system.bin_dir {
        return Ok(dir.clone());
    }
    let exe = std::env::current_exe().context("locating the bench binary")?;
    exe.parent()
        .map(Path::to_path_buf)
        .context("the bench binary has no parent directory")
}

/// Every service binary, checked to exist (this scenario builds nothing).
pub fn service_binaries(dir: &Path) -> anyhow::Result<Vec<(&'static str, PathBuf)>> {
    SERVICES
        .iter()
        .map(|name| {
            let path = dir.join(name);
            anyhow::ensure!(
                path.is_file(),
                "{} is missing: build the services first (`cargo build --release -p api -p sync-streamer -p worker -p cron -p notifier`) or pass --bin-dir",
                path.display()
            );
            Ok((*name, path))
        })
        .collect()
}

fn free_port() -> anyhow::Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").context("finding a free port")?;
    Ok(listener.local_addr()?.port())
}

impl SystemRig {
    /// Create the database, start the five services and wait until every `/readyz` is 200.
    /// `run` numbers the rigs of one bench process (each run gets a fresh system).
    pub async fn start(ctx: &BenchContext, run: usize) -> anyhow::Result<Self> {
        let binaries = service_binaries(&binary_dir(ctx)?)?;
        let pid = std::process::id();
        let database = format!("bench_system_{pid}_{run}");
        let namespace = format!("bsys{pid}r{run}");
        let log_dir = std::env::temp_dir().join(format!("bench-system-{pid}"));
        std::fs::create_dir_all(&log_dir)
            .with_context(|| format!("creating {}", log_dir.display()))?;

        ctx.ensure_database().await?;
        let admin_options = ctx.pg_options()?.database("postgres");
        let admin = PgPoolOptions::new()
            .max_connections(2)
            .connect_with(admin_options.application_name("bench-system-admin"))
            .await
            .context("connecting to the `postgres` database")?;
        sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&database)))
            .execute(&admin)
            .await
            .with_context(|| format!("creating database {database}"))?;
        let mut url = url::Url::parse(&ctx.database_url)
            .context("--database-url must be a postgres:// URL")?;
        url.set_path(&format!("/{database}"));
        let database_url = url.to_string();
        // Lazy: first used once the services have migrated their schemas.
        let pool = PgPoolOptions::new().max_connections(2).connect_lazy_with(
            ctx.pg_options()?
                .database(&database)
                .application_name("bench-system"),
        );
        let mut rig = Self {
            database,
            namespace,
            database_url,
            services: Vec::new(),
            log_dir,
            admin,
            pool,
            nats_url: ctx.nats_url.clone(),
        };
        // From here on `stop` cleans up whatever was set up.
        match rig.launch(ctx, &binaries).await {
            Ok(()) => Ok(rig),
            Err(error) => {
                if let Err(cleanup) = rig.stop().await {
                    eprintln!("system-create: cleanup after a failed start failed: {cleanup:#}");
                }
                Err(error)
            }
        }
    }

    async fn launch(
        &mut self,
        ctx: &BenchContext,
        binaries: &[(&'static str, PathBuf)],
    ) -> anyhow::Result<()> {
        for (name, path) in binaries {
            let port = free_port()?;
            let log_path = self.log_dir.join(format!("{}-{name}.log", self.database));
            let log = std::fs::File::create(&log_path)
                .with_context(|| format!("creating {}", log_path.display()))?;
            let log_err = log.try_clone().context("duplicating the log file")?;
            let mut command = Command::new(path);
            command
                .env("PORT", port.to_string())
                .env("HOST", "127.0.0.1")
                .env("DATABASE_URL", &self.database_url)
                .env("NATS_URL", &ctx.nats_url)
                .env("BUS_NAMESPACE", &self.namespace)
                .env("LOG_FORMAT", "json")
                .env("AUTH_DEV_LOGIN", "true")
                // Hundreds of users sign in from one address within a second.
                .env("AUTH_RATE_LIMIT_PER_MINUTE", "1000000")
                .stdin(Stdio::null())
                .stdout(Stdio::from(log))
                .stderr(Stdio::from(log_err))
                .kill_on_drop(true);
            // Logging every request at info would measure the log writer; warnings only,
            // unless the caller chose a level.
            if std::env::var_os("RUST_LOG").is_none() {
                command.env("RUST_LOG", "warn");
            }
            let child = command
                .spawn()
                .with_context(|| format!("starting {}", path.display()))?;
            let pid = child.id().context("the child has no pid")?;
            self.services.push(ServiceChild {
                name,
                pid,
                base_url: format!("http://127.0.0.1:{port}"),
                child,
            });
        }
        self.wait_ready().await
    }

    async fn wait_ready(&mut self) -> anyhow::Result<()> {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(2))
            .build()?;
        let deadline = Instant::now() + READY_TIMEOUT;
        let mut ready = vec![false; self.services.len()];
        loop {
            for (index, service) in self.services.iter_mut().enumerate() {
                if ready[index] {
                    continue;
                }
                // A process that exited will never be ready: say so now.
                if let Some(status) = service.child.try_wait()? {
                    anyhow::bail!(
                        "{} exited before it was ready ({status}); its log: {}",
                        service.name,
                        self.log_dir
                            .join(format!("{}-{}.log", self.database, service.name))
                            .display()
                    );
                }
                ready[index] = client
                    .get(format!("{}/readyz", service.base_url))
                    .send()
                    .await
                    .is_ok_and(|response| response.status().is_success());
            }
            if ready.iter().all(|r| *r) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let waiting: Vec<&str> = self
                    .services
                    .iter()
                    .zip(&ready)
                    .filter(|(_, ready)| !**ready)
                    .map(|(service, _)| service.name)
                    .collect();
                anyhow::bail!(
                    "not ready within {} s: {}",
                    READY_TIMEOUT.as_secs(),
                    waiting.join(", ")
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn service(&self, name: &str) -> anyhow::Result<&ServiceChild> {
        self.services
            .iter()
            .find(|service| service.name == name)
            .with_context(|| format!("{name} is not running"))
    }

    /// Fail when a service has exited (it crashed during the run).
    pub fn check_alive(&mut self) -> anyhow::Result<()> {
        for service in &mut self.services {
            if let Some(status) = service.child.try_wait()? {
                anyhow::bail!("{} exited during the run ({status})", service.name);
            }
        }
        Ok(())
    }

    /// Kill the services, delete the namespace's streams, drop the database.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        for service in &mut self.services {
            // The database is dropped next, so there is nothing to drain gracefully.
            let _ = service.child.start_kill();
        }
        for service in &mut self.services {
            let _ = tokio::time::timeout(Duration::from_secs(10), service.child.wait()).await;
        }
        self.pool.close().await;
        remove_run(&self.nats_url, &self.namespace, self.admin, &self.database).await
    }
}
