//! The `sync-streamer` service. See docs/architecture.md for what it owns.

use std::net::SocketAddr;

use axum::Router;
use bus::Bus;
use platform::PlatformError;
use platform::bootstrap::ServiceConfig;
use platform::config::{CommonConfig, ConfigError, EnvReader};
use platform::infra::Infra;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub const SERVICE: &str = "sync-streamer";
/// The Postgres schema this service owns; no other service touches it.
pub const SCHEMA: &str = "sync";
pub const DEFAULT_PORT: u16 = 8081;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/sync");

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
    // The streamer tails CHANGES; make sure the streams exist.
    Bus::start(
        infra.jetstream.clone(),
        &config.common.bus_namespace,
        SERVICE,
    )
    .await?;
    let app = platform::http::service_router(SERVICE, Router::new(), infra.readiness());
    platform::http::serve(listener, app, shutdown, config.common.shutdown_grace).await?;
    Ok(())
}
