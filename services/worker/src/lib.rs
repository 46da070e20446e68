//! The `worker` service: the heavy asynchronous handlers, scaled horizontally. See
//! docs/architecture.md for what it owns.

pub mod entry_activity;

use std::net::SocketAddr;

use axum::Router;
use bus::relay::{self, RelayConfig};
use bus::{Bus, BusRouter};
use messages::journal::v1::JournalEntryCreated;
use platform::PlatformError;
use platform::bootstrap::ServiceConfig;
use platform::config::{CommonConfig, ConfigError, EnvReader};
use platform::infra::Infra;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "worker";
/// The Postgres schema this service owns; no other service touches it.
pub const SCHEMA: &str = "worker";
pub const DEFAULT_PORT: u16 = 8082;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/worker");

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let common = CommonConfig::read(&mut env);
        let port = platform::config::read_port(&mut env, DEFAULT_PORT);
        env.finish()?;
        Ok(Self { common, port })
    }

    /// Defaults for tests: the given database and NATS server.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
        }
    }
}

impl ServiceConfig for Config {
    fn common(&self) -> &CommonConfig {
        &self.common
    }
    fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.common.host, self.port)
    }
}

/// What the worker's handlers can reach.
#[derive(Clone)]
pub struct WorkerState {
    pub db: sqlx::PgPool,
}

/// Everything that can stop the service, each with a stable code for logs and alerts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Platform(_) => "PLATFORM",
            Self::Bus(_) => "BUS",
        }
    }
}

/// Run the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let infra = Infra::start(SERVICE, SCHEMA, &config.common, &MIGRATOR).await?;
    let bus = Bus::start(
        infra.jetstream.clone(),
        &config.common.bus_namespace,
        SERVICE,
    )
    .await?;
    let relay = relay::spawn(
        bus.clone(),
        infra.db.clone(),
        RelayConfig::new(SCHEMA),
        shutdown.clone(),
    );
    let state = WorkerState {
        db: infra.db.clone(),
    };
    let consumers = BusRouter::new(bus, infra.db.clone(), state)
        .on::<JournalEntryCreated, _, _>(entry_activity::record_entry_created)
        // cron's daily `retention.purge_due`: this schema's outbox and idempotency records.
        .purge_bus_tables_daily()
        .spawn(shutdown.clone());
    let readiness = infra.readiness().with_check(consumers.readiness_check());
    let app = platform::http::service_router(SERVICE, Router::new(), readiness);
    platform::http::serve(
        listener,
        app,
        shutdown.clone(),
        config.common.shutdown_grace,
    )
    .await?;
    // Stop pulling, let in-flight handlers finish, then stop the relay.
    shutdown.cancel();
    consumers.join().await;
    let _ = relay.await;
    Ok(())
}
