//! The `sync-streamer` service (ARCHITECTURE §5, docs/sync.md): materializes the CHANGES
//! stream into the `sync` read model (one leader across replicas) and serves delta catch-up
//! then live changes over SSE and as an oRPC event iterator.

pub mod catchup;
pub mod changesets;
pub mod config;
pub mod cors;
pub mod error;
pub mod hub;
pub mod lag;
pub mod materializer;
pub mod revocation;
pub mod stream;

use std::sync::Arc;

use bus::service::{ServiceBuilder, ServiceSkeleton};
use std::future::Future;
use std::pin::Pin;

use platform::health::ReadinessCheck;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

pub use crate::config::{Config, SyncConfig};
pub use crate::error::{Error, StreamError};
use crate::hub::Hub;
use crate::materializer::{Leadership, Materializer};
use crate::revocation::RevokedSessions;
use crate::stream::StreamState;
/// The frames this service writes (`cargo xtask contract` reads their schema here).
pub use sync_protocol::frames;

bus::service_identity! {
    service: "sync-streamer",
    schema: "sync",
    default_port: 8081,
    migrations: "../../migrations/sync",
}

/// The service, connected and migrated, its background tasks running, not yet serving.
pub struct Service {
    skeleton: ServiceSkeleton,
    state: StreamState,
    leadership: Leadership,
    readiness: platform::health::Readiness,
    listener: TcpListener,
    background: Vec<tokio::task::AbortHandle>,
    tail: tokio::task::AbortHandle,
}

/// `/readyz` fails unless a consumer tails CHANGES and the tail is within `max_lag` of the
/// stream's head (a consumer that exists but delivers nothing is not enough).
struct TailCheck {
    hub: Hub,
    jetstream: async_nats::jetstream::Context,
    stream_name: String,
    max_lag: std::time::Duration,
}

impl ReadinessCheck for TailCheck {
    fn name(&self) -> &str {
        "changes_tail"
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            if !self.hub.is_tailing() {
                return Err("not tailing CHANGES".to_owned());
            }
            if self.jetstream.client().connection_state()
                != async_nats::connection::State::Connected
            {
                return Err("not tailing CHANGES (NATS disconnected)".to_owned());
            }
            let position = self.hub.position();
            let lag = lag::measure(&self.jetstream, &self.stream_name, position)
                .await
                .map_err(|error| format!("cannot see the head of CHANGES: {error}"))?;
            if lag.age > self.max_lag {
                return Err(format!(
                    "the tail is {} changesets and {:.1} s behind the head of CHANGES \
                     (at {position}, head {}; ready within {} s)",
                    lag.messages,
                    lag.age.as_secs_f64(),
                    lag.head,
                    self.max_lag.as_secs_f64()
                ));
            }
            Ok(())
        })
    }
}

impl Service {
    pub async fn start(
        config: Config,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> Result<Self, Error> {
        // No relay: the sync-streamer writes nothing to its outbox.
        let mut skeleton =
            ServiceBuilder::new(SERVICE, SCHEMA, &config.common, &MIGRATOR, shutdown.clone())
                .without_relay()
                .start::<Error>()
                .await?;
        let infra = skeleton.infra().clone();
        let bus = skeleton.bus().clone();
        let sync = Arc::new(config.sync.clone());
        let hub = Hub::new(sync.ring_capacity);
        let changes_stream = bus.stream_name("CHANGES");
        let leadership = Leadership::default();
        let revoked = RevokedSessions::default();
        let materializer = Materializer {
            db: infra.db.clone(),
            jetstream: infra.jetstream.clone(),
            stream_name: changes_stream.clone(),
            lease: sync.lease,
            batch: sync.materializer_batch,
            transaction_wait: sync.transaction_wait,
            tombstone_retention: sync.tombstone_retention,
            purge_interval: sync.purge_interval,
            leadership: leadership.clone(),
            replica_id: Uuid::new_v4(),
        };
        let tail = tokio::spawn(hub::run_tail(
            hub.clone(),
            infra.jetstream.clone(),
            changes_stream.clone(),
            shutdown.clone(),
        ));
        let tail_abort = tail.abort_handle();
        let background = vec![
            tokio::spawn(materializer.run(shutdown.clone())),
            tail,
            tokio::spawn(lag::run_monitor(
                hub.clone(),
                infra.jetstream.clone(),
                changes_stream.clone(),
                infra.db.clone(),
                sync.tail_stall,
                shutdown.clone(),
            )),
            revocation::follow(bus.clone(), revoked.clone(), hub.clone(), shutdown.clone()),
        ];
        let readiness = infra.readiness().with_check(TailCheck {
            hub: hub.clone(),
            jetstream: infra.jetstream.clone(),
            stream_name: changes_stream.clone(),
            max_lag: sync.tail_ready_lag,
        });
        let state = StreamState {
            db: infra.db.clone(),
            jetstream: infra.jetstream.clone(),
            changes_stream,
            hub,
            tokens: sync_protocol::TokenKey::new(sync.token_secret.clone())
                .with_max_lifetime(sync.token_max_lifetime),
            catchups: Arc::new(tokio::sync::Semaphore::new(sync.catchup_concurrency)),
            config: sync,
            revoked,
            shutdown: shutdown.clone(),
        };
        let abort_handles = background.iter().map(JoinHandle::abort_handle).collect();
        for task in background {
            skeleton.track(task);
        }
        Ok(Self {
            skeleton,
            state,
            leadership,
            readiness,
            listener,
            background: abort_handles,
            tail: tail_abort,
        })
    }

    /// Whether this replica holds the materializer lease.
    pub fn leadership(&self) -> Leadership {
        self.leadership.clone()
    }

    /// Handles to abort the background tasks (tests simulate a crashed replica with them).
    pub fn abort_handles(&self) -> Vec<tokio::task::AbortHandle> {
        self.background.clone()
    }

    /// The CHANGES tail's task alone (tests simulate a tail that stopped taking changesets).
    pub fn tail_abort_handle(&self) -> tokio::task::AbortHandle {
        self.tail.clone()
    }

    pub fn hub(&self) -> Hub {
        self.state.hub.clone()
    }

    /// Serve until the shutdown token is cancelled; streams end with a `closed` frame
    /// (`shutdown`) so clients reconnect elsewhere.
    pub async fn serve(self) -> Result<(), Error> {
        let routes = stream::routes(self.state.clone())
            .layer(cors::layer(&self.state.config.allowed_origins));
        self.skeleton
            .serve(self.listener, routes, self.readiness)
            .await
    }
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
