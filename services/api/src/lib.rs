//! The `api` service: auth and sessions, journal entries (more modules arrive with the api
//! issue), the transactional outbox and its relay. See docs/architecture.md.

pub mod account_purge;
pub mod api_keys;
pub mod api_teams;
pub mod attachments;
pub mod auth;
pub mod changes;
pub mod client_ip;
pub mod config;
pub mod contract;
pub mod cron_jobs;
pub mod error;
pub mod exports;
pub mod google;
pub mod journal_entries;
pub mod metering;
pub mod open_api;
pub mod pagination;
pub mod prompts;
pub mod rate_limit;
pub mod readiness;
pub mod request_logs;
pub mod rpc;
pub mod rpc_batch;
pub mod session;
pub mod session_cache;
pub mod subscriptions;
pub mod sync_token;
pub mod teams;
pub mod users;
pub mod validation;

use std::sync::{Arc, LazyLock};

use axum::Router;
use bus::service::{ServiceBuilder, ServiceSkeleton};
use bus::{Bus, BusRouter};
use messages::definition::BusMessage;
use messages::journal::v1::{
    AttachmentVerified, CleanUpAbandonedUploads, DispatchDuePrompts, PurgeExpiredSessions,
    RetentionPurgeDue, RollOverUsage, SessionRevoked,
};
use platform::PlatformError;
use platform::s3::ObjectStore;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::api_keys::KeyVerifier;
pub use crate::config::{Config, Environment};
use crate::error::ApiError;
use crate::rate_limit::IpRateLimiter;
use crate::request_logs::RequestLogSink;
use crate::session_cache::SessionCache;

pub const SERVICE: &str = "api";
/// The Postgres schema this service owns; no other service touches it.
pub const SCHEMA: &str = "api";
pub const DEFAULT_PORT: u16 = 8080;

/// The schema's migrations: the bus's tables (`shared/bus/migrations`) and this service's own.
pub static MIGRATOR: LazyLock<Migrator> =
    LazyLock::new(|| bus::tables::with_bus_tables(sqlx::migrate!("../../migrations/api")));

/// What every handler can reach.
#[derive(Clone)]
pub struct AppState {
    pub db: sqlx::PgPool,
    pub bus: Bus,
    pub config: Arc<Config>,
    /// Per-client-IP limit on the sign-in endpoints.
    pub auth_limiter: Arc<IpRateLimiter>,
    /// Outgoing HTTP (Google's token endpoint and keys): no redirects followed, bounded
    /// timeouts (each Google call by `GOOGLE_HTTP_TIMEOUT_SECONDS`, which overrides the
    /// client's own 15 s).
    pub http: reqwest::Client,
    /// API key verification (cached, shared by every request of this replica).
    pub api_keys: Arc<KeyVerifier>,
    /// Open API request logs, written in batches off the request path.
    pub request_logs: RequestLogSink,
    /// Open API per-key rate limits and cached key contexts.
    pub open_api: Arc<open_api::OpenApiState>,
    /// Signs `sync.token` tokens (`SYNC_TOKEN_SECRET`).
    pub sync_tokens: sync_protocol::TokenKey,
    /// The bucket of attachments (`S3_*`).
    pub storage: ObjectStore,
    /// Google's ID token signing keys (JWKS), cached.
    pub google_keys: Arc<google::ProviderKeys>,
    /// Verified sessions (`SESSION_CACHE_*`), dropped on revocation on every replica.
    pub sessions: Arc<SessionCache>,
}

impl AppState {
    pub fn new(
        db: sqlx::PgPool,
        bus: Bus,
        nats: async_nats::Client,
        config: Config,
        request_logs: RequestLogSink,
    ) -> Result<Self, Error> {
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .connect_timeout(std::time::Duration::from_secs(5))
            .timeout(std::time::Duration::from_secs(15))
            .build()
            .map_err(|error| Error::HttpClient(error.to_string()))?;
        let api_keys = Arc::new(KeyVerifier::new(
            db.clone(),
            nats,
            bus.subject(api_keys::verifier::INVALIDATION_SUBJECT),
            &config.api_keys,
        ));
        let sessions = Arc::new(SessionCache::new(&config.session_cache));
        Ok(Self {
            db,
            bus,
            api_keys,
            sessions,
            storage: ObjectStore::new(&config.s3),
            auth_limiter: Arc::new(IpRateLimiter::per_minute(config.auth_rate_limit_per_minute)),
            sync_tokens: sync_protocol::TokenKey::new(config.sync_token_secret.clone()),
            config: Arc::new(config),
            http,
            request_logs,
            open_api: Arc::new(open_api::OpenApiState::default()),
            google_keys: Arc::new(google::ProviderKeys::default()),
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
    #[error("nats: {0}")]
    Nats(String),
}

impl Error {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Platform(_) => "PLATFORM",
            Self::Bus(_) => "BUS",
            Self::HttpClient(_) => "HTTP_CLIENT",
            Self::Nats(_) => "NATS",
        }
    }
}

/// Every RPC procedure, each declared a query (GET-able) or a mutation (POST only).
fn rpc_router() -> rpc::RpcRouter {
    auth::rpc_routes()
        .merge(users::routes())
        .merge(teams::routes())
        .merge(journal_entries::routes())
        .merge(prompts::routes())
        .merge(request_logs::routes())
        .merge(api_teams::routes())
        .merge(api_keys::routes())
        .merge(subscriptions::routes())
        .merge(exports::routes())
        .merge(sync_token::routes())
        .merge(attachments::routes())
}

/// The list of RPC procedures the service serves (what [`routes`] mounts under `/rpc`), so
/// tests can cover every procedure without a hand-kept list.
pub fn rpc_procedures() -> Vec<rpc::Procedure> {
    rpc_router().procedures().to_vec()
}

/// The service's routes (without the shared health and metrics routes): the sign-in
/// endpoints under `/auth`, the user-app RPC under `/rpc`, CORS for the allowed origins.
pub fn routes(state: AppState) -> Router {
    let procedures = rpc_router()
        .into_router()
        // oRPC answers an unknown procedure with 404 (C12); ours keeps the error shape.
        .route(
            "/rpc/{*procedure}",
            axum::routing::any(|| async { ApiError::ProcedureNotFound }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(rpc::MAX_BODY_BYTES));
    // A batch (`x-orpc-batch`) runs each of its calls through the same procedures.
    let batch = rpc_batch::BatchDispatch::new(procedures.clone().with_state(state.clone()));
    let rpc = procedures.layer(axum::middleware::from_fn_with_state(
        batch,
        rpc_batch::middleware,
    ));
    Router::new()
        .merge(auth::http_routes())
        .merge(cron_jobs::routes())
        .merge(open_api::routes(&state))
        .merge(rpc)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::refresh_cookie,
        ))
        .layer(auth::cors_layer(&state.config))
        .with_state(state)
}

/// The service, connected and migrated, its background tasks running, not yet serving:
/// [`Service::start`] then [`Service::serve`]. Tests keep [`Service::state`] to look inside
/// (e.g. the API key verifier's scrypt counter).
pub struct Service {
    skeleton: ServiceSkeleton,
    state: AppState,
    readiness: platform::health::Readiness,
    listener: TcpListener,
}

impl Service {
    pub async fn start(
        config: Config,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        let mut skeleton =
            ServiceBuilder::new(SERVICE, SCHEMA, &config.common, &MIGRATOR, shutdown.clone())
                .start::<Error>()
                .await?;
        let infra = skeleton.infra().clone();
        let (request_logs, request_log_writer) =
            request_logs::spawn_writer(infra.db.clone(), request_logs::DEFAULT_QUEUE_CAPACITY);
        // No request is served any more once this runs: write what they logged.
        let grace = config.common.shutdown_grace;
        skeleton.drain_on_shutdown(request_log_writer.finish(grace));
        let state = AppState::new(
            infra.db.clone(),
            skeleton.bus().clone(),
            infra.nats.clone(),
            config,
            request_logs,
        )?;
        // Subscribed before serving: no revocation published after readiness is missed.
        let api_keys = state
            .api_keys
            .start_background(shutdown.clone())
            .await
            .map_err(|error| Error::Nats(error.to_string()))?;
        // Likewise: every replica drops the sessions any replica revokes.
        let session_revocations = session_cache::Listener::new(
            infra.jetstream.clone(),
            state.bus.stream_name("EVENTS"),
            state
                .bus
                .subject(&<SessionRevoked as BusMessage>::subject()),
        )
        .start(Arc::clone(&state.sessions), shutdown.clone())
        .await
        .map_err(Error::Nats)?;
        let rate_sweep = spawn_rate_sweep(&state, shutdown.clone());
        let bucket_check = spawn_bucket_check(&state, shutdown.clone());
        // The worker's questions about a user's data (exports), answered from this schema.
        let db = state.db.clone();
        let export_queries = bus::query::serve::<messages::journal::v1::ExportDataRequest, _, _>(
            &state.bus,
            8,
            move |request| exports::answer_export_data(db.clone(), request),
            shutdown.clone(),
        )
        .await?;
        // The scheduled jobs' tasks (from the cron service) for the api's own tables.
        let consumers = skeleton.consume(
            BusRouter::new(state.bus.clone(), state.db.clone(), state.clone())
                .task::<DispatchDuePrompts, _, _>(cron_jobs::on_job::<DispatchDuePrompts>)
                .task::<PurgeExpiredSessions, _, _>(cron_jobs::on_job::<PurgeExpiredSessions>)
                .task::<RollOverUsage, _, _>(cron_jobs::on_job::<RollOverUsage>)
                .task::<CleanUpAbandonedUploads, _, _>(cron_jobs::on_job::<CleanUpAbandonedUploads>)
                .on::<RetentionPurgeDue, _, _>(cron_jobs::on_job::<RetentionPurgeDue>)
                // `export.ready` marks the user's export ready.
                .on::<messages::journal::v1::ExportReady, _, _>(exports::on_export_ready)
                // The worker's verdict on an upload marks the attachment ready or rejected.
                .on::<AttachmentVerified, _, _>(attachments::on_attachment_verified),
        );
        // NATS and the consumers are reported; only Postgres decides (see `readiness`).
        let readiness = readiness::readiness(&infra, consumers);
        let nats_gauge = readiness::spawn_nats_gauge(&infra, shutdown.clone());
        for task in [
            api_keys,
            rate_sweep,
            export_queries,
            bucket_check,
            session_revocations,
            nats_gauge,
        ] {
            skeleton.track(task);
        }
        Ok(Self {
            skeleton,
            state,
            readiness,
            listener,
        })
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serve until the shutdown token is cancelled; then requests, consumers and background
    /// tasks finish, and the relay publishes what they wrote (`bus::service`).
    pub async fn serve(self) -> Result<(), Error> {
        let routes = routes(self.state.clone());
        self.skeleton
            .serve(self.listener, routes, self.readiness)
            .await
    }
}

/// Forget idle keys of the open API's per-key rate limiter, and idle teams of its quota
/// counter, now and then (bounded memory).
fn spawn_rate_sweep(state: &AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    let open_api = Arc::clone(&state.open_api);
    tokio::spawn(async move {
        let mut every = tokio::time::interval(metering::RATE_LIMITER_SWEEP);
        loop {
            tokio::select! {
                _ = every.tick() => {
                    open_api.key_rates.retain_recent();
                    open_api.quota.retain_busy();
                }
                () = shutdown.cancelled() => break,
            }
        }
    })
}

/// Check the attachments' bucket once at start, off the start-up path (the api serves
/// everything but `cdn.*` without object storage); in development create it when missing.
fn spawn_bucket_check(state: &AppState, shutdown: CancellationToken) -> JoinHandle<()> {
    let storage = state.storage.clone();
    let create = state.config.environment == Environment::Development;
    tokio::spawn(async move {
        let checked = tokio::select! {
            checked = tokio::time::timeout(
                std::time::Duration::from_secs(10),
                storage.ensure_bucket(create),
            ) => checked,
            // Stopping: the check is not worth waiting for.
            () = shutdown.cancelled() => return,
        };
        match checked {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::warn!(%error, "object storage is not usable yet; cdn.* will answer STORAGE_UNAVAILABLE");
            }
            Err(_) => tracing::warn!("object storage does not answer yet"),
        }
    })
}

/// Run the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    Service::start(config, listener, shutdown)
        .await?
        .serve()
        .await
}
