//! The `api` service: auth and sessions, journal entries (more modules arrive with the api
//! issue), the transactional outbox and its relay. See docs/architecture.md.

pub mod auth;
pub mod changes;
pub mod client_ip;
pub mod config;
pub mod error;
pub mod google;
pub mod journal_entries;
pub mod metering;
pub mod pagination;
pub mod prompts;
pub mod rate_limit;
pub mod request_logs;
pub mod rpc;
pub mod session;
pub mod teams;
pub mod users;
pub mod validation;

use std::sync::Arc;

use axum::Router;
use bus::Bus;
use bus::relay::{self, RelayConfig};
use platform::PlatformError;
use platform::infra::Infra;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, Environment};
use crate::error::ApiError;
use crate::rate_limit::IpRateLimiter;
use crate::request_logs::RequestLogSink;

pub const SERVICE: &str = "api";
/// The Postgres schema this service owns; no other service touches it.
pub const SCHEMA: &str = "api";
pub const DEFAULT_PORT: u16 = 8080;

pub static MIGRATOR: Migrator = sqlx::migrate!("../../migrations/api");

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: sqlx::PgPool,
    pub bus: Bus,
    pub config: Arc<Config>,
    /// Per-client-IP limit on the sign-in endpoints.
    pub auth_limiter: Arc<IpRateLimiter>,
    /// Outgoing HTTP (Google's token endpoint): no redirects followed, bounded timeouts.
    pub http: reqwest::Client,
    /// Open API request logs, written in batches off the request path.
    pub request_logs: RequestLogSink,
}

impl AppState {
    pub fn new(
        db: sqlx::PgPool,
        bus: Bus,
        config: Config,
        request_logs: RequestLogSink,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|error| Error::HttpClient(error.to_string()))?;
        Ok(Self {
            db,
            bus,
            auth_limiter: Arc::new(IpRateLimiter::per_minute(config.auth_rate_limit_per_minute)),
            config: Arc::new(config),
            http,
            request_logs,
        })
    }
}

/// Everything that can stop the service, each with a stable code for logs and alerts.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("bus: {0}")]
    Bus(#[from] bus::BusError),
    #[error("http client: {0}")]
    HttpClient(String),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Platform(_) => "PLATFORM",
            Self::Bus(_) => "BUS",
            Self::HttpClient(_) => "HTTP_CLIENT",
        }
    }
}

/// The service's routes (without the shared health and metrics routes): the sign-in
/// endpoints under `/auth`, the user-app RPC under `/rpc`, CORS for the allowed origins.
pub fn routes(state: AppState) -> Router {
    let rpc = Router::new()
        .merge(auth::rpc_routes())
        .merge(users::routes())
        .merge(teams::routes())
        .merge(journal_entries::routes())
        .merge(prompts::routes())
        .merge(request_logs::routes())
        // oRPC answers an unknown procedure with 404 (C12); ours keeps the error shape.
        .route(
            "/rpc/{*procedure}",
            axum::routing::any(|| async { ApiError::ProcedureNotFound }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(rpc::MAX_BODY_BYTES));
    Router::new()
        .merge(auth::http_routes())
        .merge(rpc)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::refresh_cookie,
        ))
        .layer(auth::cors_layer(&state.config))
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
    let (request_log_sink, request_log_writer) =
        request_logs::spawn_writer(infra.db.clone(), request_logs::DEFAULT_QUEUE_CAPACITY);
    let grace = config.common.shutdown_grace;
    let state = AppState::new(infra.db.clone(), bus, config, request_log_sink)?;
    let app = platform::http::service_router(SERVICE, routes(state.clone()), infra.readiness());
    // The last sinks go with the state and the router, so the writer can drain and end.
    drop(state);
    platform::http::serve(listener, app, shutdown.clone(), grace).await?;
    shutdown.cancel();
    request_log_writer.finish(grace).await;
    let _ = relay.await;
    Ok(())
}
