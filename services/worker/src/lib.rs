//! The `worker` service: the heavy asynchronous handlers, scaled horizontally (docs/worker.md):
//! entry insights from the `journal_entry.*` events ([`insights`]), data exports
//! ([`exports`]), attachment verification with thumbnails ([`attachments`]) and the removal
//! of a purged account's data ([`purge`]). Replicas
//! share each handler's durable consumer.

pub mod attachments;
pub mod exports;
pub mod insights;
pub mod purge;

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use bus::service::ServiceBuilder;
use bus::{Bus, BusRouter};
use messages::journal::v1::{
    ExportUserData, JournalEntryCreated, JournalEntryDeleted, JournalEntryRestored,
    JournalEntryUpdated, UserPurged, VerifyAttachment,
};
use platform::config::{CommonConfig, EnvReader, Environment, FromEnvironment};
use platform::s3::{ObjectStore, S3Config};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exports::ExportSettings;

bus::service_identity! {
    service: "worker",
    schema: "worker",
    default_port: 8082,
    migrations: "../../migrations/worker",
}

/// The longest ack wait of the worker's consumers: how long a message whose replica died
/// waits before another replica gets it. Progress acks every third of it keep a running
/// handler's message; 5 s leaves room to redo a killed replica's message within 10 s of
/// the kill (issue 17; tests/e2e/worker_kill.rs).
pub const DEFAULT_MAX_ACK_WAIT: Duration = Duration::from_secs(5);

/// The default of `INSIGHTS_SYNC_DELAY_MS`: insights a second behind the entries, one
/// changeset per busy user per second.
pub const DEFAULT_INSIGHTS_SYNC_DELAY: Duration = Duration::from_secs(1);
/// The largest `INSIGHTS_SYNC_DELAY_MS`.
const MAX_INSIGHTS_SYNC_DELAY_MS: u64 = 60_000;

#[derive(Debug, Clone)]
pub struct Config {
    pub common: CommonConfig,
    /// `PORT`.
    pub port: u16,
    /// `ENVIRONMENT`: in development a missing bucket is created at start.
    pub environment: Environment,
    /// `S3_*`: where export archives go and attachments are verified.
    pub s3: S3Config,
    /// `WORKER_CONCURRENCY`: deliveries each handler runs at once per replica (default 32).
    pub concurrency: usize,
    /// `WORKER_BATCH_SIZE`: entry events the insights handlers apply in one transaction at
    /// most (default 256).
    pub batch_size: usize,
    /// `INSIGHTS_SYNC_DELAY_MS`: how long changed insights wait before they are published to
    /// the user's clients, so that a user's changes within it go out as one changeset
    /// (default 1,000; 0 to 60,000). `insights::publish` says why.
    pub insights_sync_delay: Duration,
    /// `WORKER_ACK_WAIT_SECONDS`: the longest ack wait of the worker's consumers (default 5):
    /// a message whose replica died is redelivered after at most this long, while progress
    /// acks (every third of it) keep running handlers' messages.
    pub max_ack_wait: Duration,
    /// `EXPORT_LINK_TTL_SECONDS`: how long an export's download link is valid (default and
    /// maximum seven days, the longest a SigV4 presigned URL can live).
    pub export_link_ttl: Duration,
    /// `WORKER_TEST_EXPORT_PAUSE_MS`: tests only (refused in production): pause each export
    /// between its upload and its commit, so a test can kill the process mid-task.
    pub export_pause_after_upload: Duration,
}

impl FromEnvironment for Config {
    const DEFAULT_PORT: u16 = DEFAULT_PORT;

    fn read_own(common: CommonConfig, port: u16, env: &mut EnvReader) -> Self {
        let environment = platform::config::read_environment(env);
        let production = environment == Environment::Production;
        let s3 = S3Config::read(env, production);
        let concurrency = env.with_default("WORKER_CONCURRENCY", 32_usize);
        if concurrency == 0 {
            env.reject("WORKER_CONCURRENCY", "must be at least 1");
        }
        let batch_size = env.with_default("WORKER_BATCH_SIZE", bus::router::DEFAULT_BATCH_SIZE);
        if batch_size == 0 {
            env.reject("WORKER_BATCH_SIZE", "must be at least 1");
        }
        let insights_sync_delay_ms = env.with_default(
            "INSIGHTS_SYNC_DELAY_MS",
            DEFAULT_INSIGHTS_SYNC_DELAY.as_millis() as u64,
        );
        if insights_sync_delay_ms > MAX_INSIGHTS_SYNC_DELAY_MS {
            env.reject(
                "INSIGHTS_SYNC_DELAY_MS",
                format!(
                    "{insights_sync_delay_ms} is above the limit of {MAX_INSIGHTS_SYNC_DELAY_MS}"
                ),
            );
        }
        let max_ack_wait =
            env.seconds_with_default("WORKER_ACK_WAIT_SECONDS", DEFAULT_MAX_ACK_WAIT);
        if max_ack_wait < Duration::from_secs(1) {
            env.reject("WORKER_ACK_WAIT_SECONDS", "must be at least 1");
        }
        let export_link_ttl =
            env.seconds_with_default("EXPORT_LINK_TTL_SECONDS", platform::s3::MAX_PRESIGN_EXPIRY);
        if export_link_ttl.is_zero() || export_link_ttl > platform::s3::MAX_PRESIGN_EXPIRY {
            env.reject(
                "EXPORT_LINK_TTL_SECONDS",
                "must be between 1 and 604800 (seven days)",
            );
        }
        let export_pause_after_upload =
            Duration::from_millis(env.with_default("WORKER_TEST_EXPORT_PAUSE_MS", 0_u64));
        if production && !export_pause_after_upload.is_zero() {
            env.reject(
                "WORKER_TEST_EXPORT_PAUSE_MS",
                "is for tests and refused with ENVIRONMENT=production",
            );
        }
        Self {
            common,
            port,
            environment,
            s3,
            concurrency,
            batch_size,
            insights_sync_delay: Duration::from_millis(insights_sync_delay_ms),
            max_ack_wait,
            export_link_ttl,
            export_pause_after_upload,
        }
    }
}

impl Config {
    /// Defaults for tests: the given database and NATS server, the development S3 settings
    /// (tests point `s3` at a bucket of their own).
    pub fn for_tests(database_url: &str, nats_url: &str) -> Self {
        Self {
            common: CommonConfig::for_tests(database_url, nats_url),
            port: 0,
            environment: Environment::Development,
            s3: S3Config::for_tests(platform::s3::DEFAULT_ENDPOINT, platform::s3::DEFAULT_BUCKET),
            concurrency: 32,
            batch_size: bus::router::DEFAULT_BATCH_SIZE,
            // Short, so tests see insights soon; the coalescing itself is the same.
            insights_sync_delay: Duration::from_millis(20),
            max_ack_wait: DEFAULT_MAX_ACK_WAIT,
            export_link_ttl: platform::s3::MAX_PRESIGN_EXPIRY,
            export_pause_after_upload: Duration::ZERO,
        }
    }
}

platform::impl_service_config!(Config);

/// What the worker's handlers can reach.
#[derive(Clone)]
pub struct WorkerState {
    pub db: sqlx::PgPool,
    /// For questions to other services (the export's data comes from the api).
    pub bus: Bus,
    /// The bucket of export archives and attachments.
    pub storage: ObjectStore,
    pub exports: Arc<ExportSettings>,
    /// Attachment checks that hold a whole file in memory and decode it (images, PDFs) run
    /// this many at once per replica, one per core: each may hold up to the upload cap plus
    /// the decoder's allowance, so `WORKER_CONCURRENCY` of them at once could exhaust memory.
    pub file_checks: Arc<tokio::sync::Semaphore>,
    /// Publishes the insights the entry handlers changed, coalesced (woken by them).
    pub insight_publisher: insights::InsightPublisher,
}

bus::service_error! {
    /// Everything that can stop the service, each with a stable code for logs and alerts.
    pub enum Error {
    }
}

/// Run the service on `listener` until `shutdown` is cancelled.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: CancellationToken,
) -> Result<(), Error> {
    let mut service = ServiceBuilder::new(SERVICE, SCHEMA, &config.common, &MIGRATOR, shutdown)
        .start::<Error>()
        .await?;
    let storage = ObjectStore::new(&config.s3);
    // A worker without object storage still computes insights: exports wait (and retry) until
    // the bucket answers, and readiness says what is missing.
    let create_bucket = config.environment == Environment::Development;
    match tokio::time::timeout(BUCKET_CHECK_TIMEOUT, storage.ensure_bucket(create_bucket)).await {
        Ok(Ok(())) => {}
        Ok(Err(error)) => {
            tracing::warn!(%error, "object storage is not usable yet; exports and attachment checks will retry");
        }
        Err(_) => tracing::warn!("object storage does not answer yet; exports will retry"),
    }
    let insight_publisher =
        insights::InsightPublisher::new(service.db().clone(), config.insights_sync_delay);
    // Ends on the shutdown token after a last publish; the relay's final publish waits for it.
    service.track(tokio::spawn(
        insight_publisher.clone().run(service.shutdown().clone()),
    ));
    let state = WorkerState {
        db: service.db().clone(),
        bus: service.bus().clone(),
        storage: storage.clone(),
        exports: Arc::new(ExportSettings {
            link_ttl: config.export_link_ttl,
            pause_after_upload: config.export_pause_after_upload,
        }),
        file_checks: Arc::new(tokio::sync::Semaphore::new(
            std::thread::available_parallelism().map_or(2, std::num::NonZeroUsize::get),
        )),
        insight_publisher,
    };
    let consumers = service.consume(
        BusRouter::new(service.bus().clone(), service.db().clone(), state)
            .concurrency(config.concurrency)
            .max_ack_wait(config.max_ack_wait)
            .batch_size(config.batch_size)
            // One transaction per fetched batch: a burst of one user's entries is a few commits.
            .on_batch::<JournalEntryCreated, _, _>(insights::on_entries_created)
            .on_batch::<JournalEntryUpdated, _, _>(insights::on_entries_updated)
            .on_batch::<JournalEntryDeleted, _, _>(insights::on_entries_deleted)
            .on_batch::<JournalEntryRestored, _, _>(insights::on_entries_restored)
            .task::<ExportUserData, _, _>(exports::export_user_data)
            .task::<VerifyAttachment, _, _>(attachments::verify_attachment)
            // The api's account purge: this schema's rows about the user go.
            .on::<UserPurged, _, _>(purge::on_user_purged)
            // cron's daily `retention.purge_due`: this schema's outbox and idempotency records.
            .purge_bus_tables_daily(),
    );
    let readiness = service
        .infra()
        .readiness()
        .with_check(consumers)
        .with_check(storage.readiness_check());
    service.serve(listener, Router::new(), readiness).await
}

/// How long start-up waits for the bucket check before going on without it.
const BUCKET_CHECK_TIMEOUT: Duration = Duration::from_secs(10);

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn production_needs_s3_credentials_and_refuses_the_test_pause() {
        let error = Config::read(EnvReader::from_map([
            ("ENVIRONMENT", "production"),
            ("WORKER_TEST_EXPORT_PAUSE_MS", "100"),
        ]))
        .unwrap_err();
        assert!(error.names("S3_ACCESS_KEY_ID"), "{error}");
        assert!(error.names("S3_SECRET_ACCESS_KEY"), "{error}");
        assert!(error.names("WORKER_TEST_EXPORT_PAUSE_MS"), "{error}");
    }

    #[test]
    fn bad_values_are_named_and_development_has_defaults() {
        let error = Config::read(EnvReader::from_map([
            ("EXPORT_LINK_TTL_SECONDS", "604801"),
            ("WORKER_CONCURRENCY", "0"),
            ("S3_ENDPOINT", "localhost:9000"),
            ("INSIGHTS_SYNC_DELAY_MS", "60001"),
        ]))
        .unwrap_err();
        assert!(error.names("INSIGHTS_SYNC_DELAY_MS"), "{error}");
        assert!(error.names("EXPORT_LINK_TTL_SECONDS"), "{error}");
        assert!(error.names("WORKER_CONCURRENCY"), "{error}");
        assert!(error.names("S3_ENDPOINT"), "{error}");

        let config = Config::read(EnvReader::from_map([("S3_BUCKET", "exports")])).unwrap();
        assert_eq!(config.environment, Environment::Development);
        assert_eq!(config.s3.bucket, "exports");
        assert_eq!(config.s3.endpoint, platform::s3::DEFAULT_ENDPOINT);
        assert_eq!(config.export_link_ttl, platform::s3::MAX_PRESIGN_EXPIRY);
        assert!(config.export_pause_after_upload.is_zero());
        assert_eq!(config.insights_sync_delay, DEFAULT_INSIGHTS_SYNC_DELAY);
        let config = Config::read(EnvReader::from_map([("INSIGHTS_SYNC_DELAY_MS", "0")])).unwrap();
        assert!(config.insights_sync_delay.is_zero());
    }
}
