//! The `api` service: auth and sessions, users, teams, journal entries, prompts, attachments,
//! exports, API teams and keys with their metering, the transactional outbox and its relay.
//! Where things are: `modules/<feature>/` (types, store, procedures, REST and bus handlers),
//! `routers/` (procedures wired to paths), `http/` (the shared HTTP plumbing), `state.rs`
//! (`AppState`). See docs/architecture.md.

pub mod config;
pub mod contract;
pub mod http;
pub mod jobs;
pub mod modules;
pub mod procedures;
pub mod readiness;
pub mod routers;
pub mod service_error;
pub mod state;

use std::sync::Arc;

use bus::BusRouter;
use bus::service::{ServiceBuilder, ServiceSkeleton};
use messages::journal::v1::{
    AttachmentVerified, CleanUpAbandonedUploads, DispatchDuePrompts, PurgeExpiredSessions,
    RetentionPurgeDue, RollOverUsage,
};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use crate::config::{Config, Environment};
// The paths other crates and the api's tests name (`api::journal_entries::JournalEntry`,
// `api::rpc::Kind`, `api::rpc_procedures`, `api::AppState`, `api::Error`).
pub use crate::http::rpc;
pub use crate::modules::journal_entries;
pub use crate::routers::user_app::rpc_procedures;
pub use crate::service_error::Error;
pub use crate::state::AppState;
// The start-up code below names the features by these short paths.
use crate::modules::auth::session_cache;
use crate::modules::cdn as attachments;
use crate::modules::exports;
use crate::modules::logs as request_logs;
use crate::modules::subscriptions::metering;
use crate::routers::{cron_jobs, routes};

bus::service_identity! {
    service: "api",
    schema: "api",
    default_port: 8080,
    migrations: "../../migrations/api",
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
        let session_revocations = session_cache::follow_revocations(
            state.bus.clone(),
            Arc::clone(&state.sessions),
            shutdown.clone(),
        )
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
