//! The one service skeleton every service runs on: start-up (Postgres with the schema
//! migrated, NATS, the bus), the bus router's consumers, the outbox relay, HTTP serving, and
//! the shutdown order, written once:
//!
//! 1. the shutdown token is cancelled (SIGTERM/SIGINT, or a test);
//! 2. HTTP stops accepting and finishes its in-flight requests (within the grace), the
//!    consumers stop fetching and their in-flight handlers finish, and the service's other
//!    drains ([`ServiceSkeleton::drain_on_shutdown`], e.g. cron's scheduled runs) end;
//! 3. then the relay publishes what all of them wrote to the outbox (bounded by the grace)
//!    and stops;
//! 4. `serve` returns.
//!
//! The relay runs on a token of its own for step 3: stopped with everything else, it would
//! leave the rows of handlers and requests finishing during shutdown to the next start.
//!
//! ```ignore
//! let mut service = ServiceBuilder::new(SERVICE, SCHEMA, &config.common, &MIGRATOR, shutdown)
//!     .start::<Error>()
//!     .await?;
//! let consumers = service.consume(
//!     BusRouter::new(service.bus().clone(), service.db().clone(), state).on::<E, _, _>(handler),
//! );
//! let readiness = service.infra().readiness().with_check(consumers);
//! service.serve::<Error>(listener, Router::new(), readiness).await
//! ```

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::process::ExitCode;
use std::time::Duration;

use platform::PlatformError;
use platform::bootstrap::ServiceConfig;
use platform::config::{CommonConfig, FromEnvironment, OutboxKind};
use platform::health::Readiness;
use platform::infra::Infra;
use sqlx::PgPool;
use sqlx::migrate::Migrator;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, DropGuard};

use crate::relay::{self, RelayConfig};
use crate::router::{BusRouter, ConsumersAttached, RunningRouter};
use crate::wal_outbox::stream::ReplicationTarget;
use crate::wal_outbox::{self, WalOutboxConfig};
use crate::{Bus, BusError};

/// A service's identity, declared once at the top of its `lib.rs`: `SERVICE` (its name in
/// logs, metrics and the bus's durable names), `SCHEMA` (the Postgres schema it owns; no other
/// service touches it), `DEFAULT_PORT` (when `PORT` is unset) and `MIGRATOR` (the bus's
/// tables, `shared/bus/migrations`, with the service's own `migrations/<schema>/`, in version
/// order):
///
/// ```ignore
/// bus::service_identity! {
///     service: "worker",
///     schema: "worker",
///     default_port: 8082,
///     migrations: "../../migrations/worker",
/// }
/// ```
/// The migrations path is relative to the service's `Cargo.toml`, as `sqlx::migrate!` reads it
/// (the service depends on `sqlx` with its `migrate` feature).
#[macro_export]
macro_rules! service_identity {
    (
        service: $service:literal,
        schema: $schema:literal,
        default_port: $default_port:literal,
        migrations: $migrations:literal $(,)?
    ) => {
        /// The service's name in logs, metrics and the bus's durable names.
        pub const SERVICE: &str = $service;
        /// The Postgres schema this service owns; no other service touches it.
        pub const SCHEMA: &str = $schema;
        /// The port it listens on when `PORT` is unset.
        pub const DEFAULT_PORT: u16 = $default_port;
        /// The schema's migrations: the bus's tables (`shared/bus/migrations`) and this
        /// service's own.
        pub static MIGRATOR: ::std::sync::LazyLock<::sqlx::migrate::Migrator> =
            ::std::sync::LazyLock::new(|| {
                $crate::tables::with_bus_tables(::sqlx::migrate!($migrations))
            });
    };
}

/// A service's error type: the start-up failures every service shares (`Platform`, code
/// `PLATFORM`; `Bus`, code `BUS`) plus its own variants, each with its stable code:
///
/// ```ignore
/// bus::service_error! {
///     /// Everything that can stop the service, each with a stable code for logs and alerts.
///     pub enum Error {
///         #[error("http client: {0}")]
///         HttpClient(String) => "HTTP_CLIENT",
///     }
/// }
/// ```
/// The enum derives `Debug` and `thiserror::Error` (the service depends on `thiserror` and
/// `platform`) and gets `fn code(&self) -> &'static str`.
#[macro_export]
macro_rules! service_error {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident {
            $(
                $(#[$variant_meta:meta])*
                $variant:ident ( $($field:tt)* ) => $code:literal
            ),* $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Debug, thiserror::Error)]
        $vis enum $name {
            #[error(transparent)]
            Platform(#[from] ::platform::PlatformError),
            #[error("bus: {0}")]
            Bus(#[from] $crate::BusError),
            $(
                $(#[$variant_meta])*
                $variant ( $($field)* ),
            )*
        }

        impl $name {
            pub fn code(&self) -> &'static str {
                match self {
                    Self::Platform(_) => "PLATFORM",
                    Self::Bus(_) => "BUS",
                    $( Self::$variant(..) => $code, )*
                }
            }
        }
    };
}

/// Every service's `main`: the dead-letter operator command when asked for
/// (`<binary> dead-letters ...`, against `schema`), otherwise the service itself
/// (`platform::bootstrap::run_main`: config, telemetry, the port, signals, exit code).
pub async fn main<C, Fut, E>(
    service: &'static str,
    schema: &str,
    run: impl FnOnce(C, TcpListener, CancellationToken) -> Fut,
) -> ExitCode
where
    C: ServiceConfig + FromEnvironment,
    Fut: Future<Output = Result<(), E>>,
    E: Display,
{
    if let Some(code) = crate::dead_letter::admin_main(schema).await {
        return code;
    }
    platform::bootstrap::run_main(service, C::from_env, run).await
}

/// What a service needs to start: its names, its settings, its migrations.
pub struct ServiceBuilder<'a> {
    service: &'static str,
    schema: &'static str,
    common: &'a CommonConfig,
    migrator: &'a Migrator,
    shutdown: CancellationToken,
    relay: bool,
}

impl<'a> ServiceBuilder<'a> {
    /// `service` names the process (NATS client, durable consumers); `schema` is the Postgres
    /// schema it owns (migrated by `migrator`, whose outbox its relay drains).
    pub fn new(
        service: &'static str,
        schema: &'static str,
        common: &'a CommonConfig,
        migrator: &'a Migrator,
        shutdown: CancellationToken,
    ) -> Self {
        Self {
            service,
            schema,
            common,
            migrator,
            shutdown,
            relay: true,
        }
    }

    /// No outbox relay: for a service that never writes to its outbox (the sync-streamer).
    pub fn without_relay(mut self) -> Self {
        self.relay = false;
        self
    }

    /// Connect to Postgres and migrate the schema, connect to NATS, provision the streams, and
    /// start the relay. Errors come back as the service's own error type.
    pub async fn start<E>(self) -> Result<ServiceSkeleton, E>
    where
        E: From<PlatformError> + From<BusError>,
    {
        let infra = Infra::start(self.service, self.schema, self.common, self.migrator).await?;
        let bus = Bus::start_with(
            infra.jetstream.clone(),
            &self.common.bus_namespace,
            self.service,
            self.common.streams,
        )
        .await?;
        let grace = self.common.shutdown_grace;
        let wal_relay = if self.relay {
            wal_outbox_start(&infra.db, self.schema, self.common).await?
        } else {
            None
        };
        let relay = self.relay.then(|| {
            let stop = CancellationToken::new();
            let mut config = RelayConfig::new(self.schema);
            config.final_publish = grace;
            config.wake_delay = self.common.relay_wake_delay;
            // The table relay runs in either mode: it publishes rows written before the switch
            // and by replicas of an earlier release during a rolling deploy.
            let mut tasks = vec![relay::spawn(
                bus.clone(),
                infra.db.clone(),
                config,
                stop.clone(),
            )];
            if let Some((config, target)) = wal_relay {
                tasks.push(tokio::spawn(wal_outbox::stream::run(
                    bus.clone(),
                    infra.db.clone(),
                    config,
                    target,
                    stop.clone(),
                    grace,
                )));
            }
            RelayTask {
                tasks,
                // Also stops the relays when the skeleton is dropped without serving (a
                // start-up step after this one failed).
                stop: stop.drop_guard(),
            }
        });
        Ok(ServiceSkeleton {
            service: self.service,
            infra,
            bus,
            shutdown: self.shutdown,
            grace,
            relay,
            consumers: Vec::new(),
            drains: Vec::new(),
        })
    }
}

/// With `BUS_OUTBOX=wal`: make the schema's slot (start-up fails, saying why, when Postgres
/// cannot: `wal_level` below `logical`, a role without `REPLICATION`), send this process's
/// outbox writes into the WAL, and return the WAL relay's settings and where it streams from. With `table`: the WAL
/// relay still runs while the slot exists, to publish what a WAL-emitting release left in it
/// (a rollback from `wal` to `table`); drop the slot once it is drained.
async fn wal_outbox_start(
    db: &PgPool,
    schema: &str,
    common: &CommonConfig,
) -> Result<Option<(WalOutboxConfig, ReplicationTarget)>, BusError> {
    let database: String = sqlx::query_scalar("SELECT current_database()")
        .fetch_one(db)
        .await?;
    let config = WalOutboxConfig::for_database(schema, &database);
    let target = || {
        ReplicationTarget::from_database_url(
            &common.database_url,
            common.database_password.as_ref(),
        )
    };
    match common.outbox {
        OutboxKind::Wal => {
            let target = target()?;
            wal_outbox::slot::ensure(db, &config)
                .await
                .map_err(|error| BusError::WalOutbox {
                    slot: config.slot.clone(),
                    message: error.to_string(),
                })?;
            crate::outbox::emit_into_wal(schema)?;
            tracing::info!(slot = %config.slot, "outbox messages go into the WAL");
            Ok(Some((config, target)))
        }
        OutboxKind::Table => match wal_outbox::slot::exists(db, &config).await {
            Ok(true) => match target() {
                Ok(target) => Ok(Some((config, target))),
                Err(error) => {
                    tracing::warn!(%error, slot = %config.slot, "a WAL outbox slot exists but cannot be streamed; not reading it");
                    Ok(None)
                }
            },
            Ok(false) => Ok(None),
            Err(error) => {
                tracing::warn!(%error, "could not tell whether a WAL outbox slot exists; not reading one");
                Ok(None)
            }
        },
    }
}

/// Work that must end before the relay's final publish.
type Drain = Pin<Box<dyn Future<Output = ()> + Send>>;

struct RelayTask {
    tasks: Vec<JoinHandle<()>>,
    stop: DropGuard,
}

/// A started service: connected, migrated, its relay running; consumers and background work
/// are added to it, then [`serve`](Self::serve) runs it to the end in the shutdown order.
pub struct ServiceSkeleton {
    service: &'static str,
    infra: Infra,
    bus: Bus,
    shutdown: CancellationToken,
    grace: Duration,
    relay: Option<RelayTask>,
    consumers: Vec<RunningRouter>,
    drains: Vec<Drain>,
}

impl ServiceSkeleton {
    pub fn infra(&self) -> &Infra {
        &self.infra
    }

    /// The pool of the service's schema.
    pub fn db(&self) -> &PgPool {
        &self.infra.db
    }

    pub fn bus(&self) -> &Bus {
        &self.bus
    }

    /// The process's shutdown token.
    pub fn shutdown(&self) -> &CancellationToken {
        &self.shutdown
    }

    /// `SHUTDOWN_GRACE_SECONDS`.
    pub fn grace(&self) -> Duration {
        self.grace
    }

    /// Run `router`'s consumers until shutdown; their in-flight handlers finish before the
    /// relay's final publish. Returns their readiness check.
    pub fn consume<S: Clone + Send + Sync + 'static>(
        &mut self,
        router: BusRouter<S>,
    ) -> ConsumersAttached {
        let running = router.spawn(self.shutdown.clone());
        let attached = running.readiness_check();
        self.consumers.push(running);
        attached
    }

    /// Run `work` once HTTP has stopped serving; it must end (by itself, or bounded by
    /// [`grace`](Self::grace)) before the relay's final publish. For work that writes to the
    /// outbox or must not be cut off: a scheduler's running jobs, a log writer's queue.
    pub fn drain_on_shutdown(&mut self, work: impl Future<Output = ()> + Send + 'static) {
        self.drains.push(Box::pin(work));
    }

    /// A background task that ends on the shutdown token: waited for before the relay's final
    /// publish.
    pub fn track(&mut self, task: JoinHandle<()>) {
        self.drain_on_shutdown(async move {
            let _ = task.await;
        });
    }

    /// Serve `routes` (with the health, readiness and metrics routes) on `listener` until the
    /// shutdown token is cancelled, then stop in the order of the module documentation.
    pub async fn serve<E>(
        self,
        listener: TcpListener,
        routes: axum::Router,
        readiness: Readiness,
    ) -> Result<(), E>
    where
        E: From<PlatformError>,
    {
        let app = platform::http::service_router(self.service, routes, readiness);
        let served = platform::http::serve(listener, app, self.shutdown.clone(), self.grace).await;
        // Also when serving failed: everything else stops the same way.
        self.shutdown.cancel();
        let consumers = self.consumers.into_iter().map(RunningRouter::join);
        futures::future::join(
            futures::future::join_all(consumers),
            futures::future::join_all(self.drains),
        )
        .await;
        if let Some(relay) = self.relay {
            // Everything that writes to the outbox has stopped: publish what it wrote, then stop.
            drop(relay.stop);
            futures::future::join_all(relay.tasks).await;
        }
        served?;
        Ok(())
    }
}
