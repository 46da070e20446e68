//! The `api` service: auth and sessions, journal entries (more modules arrive with the api
//! issue), the transactional outbox and its relay. See docs/architecture.md.

pub mod auth;
pub mod error;
pub mod journal_entries;
pub mod rpc;

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use axum::Router;
use axum::routing::{any, post};
use bus::Bus;
use bus::relay::{self, RelayConfig};
use platform::PlatformError;
use platform::bootstrap::ServiceConfig;
use platform::config::{CommonConfig, ConfigError, EnvReader};
use platform::infra::Infra;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::error::ApiError;

pub const SERVICE: &str = "api";
/// The Postgres schema this service owns; no other service touches it.
pub const SCHEMA: &str = "api";
pub const DEFAULT_PORT: u16 = 8080;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/api");

/// `ENVIRONMENT`: development features (the dev login) are refused in production.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Environment {
    Development,
    Production,
}

impl FromStr for Environment {
    type Err = String;
    fn from_str(value: &str) -> Result<Self, Self::Err> {
        match value.to_ascii_lowercase().as_str() {
            "development" | "dev" | "test" => Ok(Self::Development),
            "production" | "prod" => Ok(Self::Production),
            other => Err(format!(
                "expected `development` or `production`, got `{other}`"
            )),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
    /// `ENVIRONMENT` (default development).
    pub environment: Environment,
    /// `AUTH_DEV_LOGIN`: enables `POST /auth/dev/login` (default false; refused in production).
    pub auth_dev_login: bool,
}

impl Config {
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::read(EnvReader::from_process())
    }

    pub fn read(mut env: EnvReader) -> Result<Self, ConfigError> {
        let common = CommonConfig::read(&mut env);
        let port = platform::config::read_port(&mut env, DEFAULT_PORT);
        let environment = env.with_default("ENVIRONMENT", Environment::Development);
        let auth_dev_login = env.flag("AUTH_DEV_LOGIN", false);
        if auth_dev_login && environment == Environment::Production {
            env.reject(
                "AUTH_DEV_LOGIN",
                "the dev login cannot be enabled when ENVIRONMENT=production",
            );
        }
        env.finish()?;
        Ok(Self {
            common,
            port,
            environment,
            auth_dev_login,
        })
    }

    /// Defaults for tests: the given database and NATS server, dev login on.
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
            environment: Environment::Development,
            auth_dev_login: true,
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

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: sqlx::PgPool,
    pub bus: Bus,
    pub config: Arc<Config>,
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

/// The service's routes (without the shared health and metrics routes).
pub fn routes(state: AppState) -> Router {
    Router::new()
        .route("/auth/dev/login", post(auth::dev_login))
        .route("/rpc/journalEntries/create", any(journal_entries::create))
        .route("/rpc/{*procedure}", any(|| async { ApiError::NotFound }))
        .with_state(state)
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
    let state = AppState {
        db: infra.db.clone(),
        bus,
        config: Arc::new(config),
    };
    let app = platform::http::service_router(SERVICE, routes(state.clone()), infra.readiness());
    platform::http::serve(
        listener,
        app,
        shutdown.clone(),
        state.config.common.shutdown_grace,
    )
    .await?;
    shutdown.cancel();
    let _ = relay.await;
    Ok(())
}
