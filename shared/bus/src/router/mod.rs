//! Handler registration that reads like axum:
//!
//! ```ignore
//! BusRouter::new(bus, pool, state)
//!     .on::<JournalEntryCreated, _, _>(record_entry)      // async fn(State<AppState>, Msg<JournalEntryCreated>) -> Result<(), HandlerError>
//!     .task::<VerifyAttachment, _, _>(verify_attachment)
//!     .run(shutdown)
//!     .await;
//! ```
//! Each registration gets one durable consumer (`<service>--<event>` for events, shared by
//! the service's replicas; `<queue>--<task>` for tasks), a bounded number of concurrent
//! deliveries, and the tower pipeline in [`crate::pipeline`]. `on_batch` registers a handler
//! that gets every message of a fetched batch at once ([`crate::batch`]).

mod consume;
mod extract;
mod running;

pub use extract::{FromDelivery, Handler, Meta, Msg, State};
pub use running::{ConsumersAttached, RunningRouter};

use std::future::Future;

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use messages::definition::{BusMessage, DeliveryConfig, Destination, Event, Task};
use messages::journal::v1::RetentionPurgeDue;
use sqlx::PgPool;

use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchFn, BatchPipeline, Batched};
use crate::consumer_gauges;
use crate::dead_letter::{self, DeadLetterStore};
use crate::pipeline::{HandlerFn, Pipeline};

use crate::HandlerError;
use crate::streams::Bus;
use consume::{Limits, consume, consume_batches};

/// One registered handler, ready to consume.
pub(crate) struct Registration {
    pub(crate) consumer_name: String,
    pub(crate) stream_base: &'static str,
    pub(crate) relative_subject: String,
    pub(crate) config: DeliveryConfig,
    pub(crate) handler: HandlerFn,
    /// Set for `on_batch` registrations: the handler of a whole fetched batch (`handler` is
    /// the same handler on a batch of one, for the fallback and re-drives).
    pub(crate) batch: Option<BatchFn>,
}

/// Registers handlers and runs their consumers.
pub struct BusRouter<S> {
    bus: Bus,
    pool: PgPool,
    state: S,
    concurrency: usize,
    batch_size: usize,
    max_ack_wait: Option<Duration>,
    registrations: Vec<Registration>,
}

/// Messages a batch handler gets at most at once, unless [`BusRouter::batch_size`] says.
pub const DEFAULT_BATCH_SIZE: usize = 256;

impl<S: Clone + Send + Sync + 'static> BusRouter<S> {
    /// `pool` is the service's own pool: its schema holds the dead letters.
    pub fn new(bus: Bus, pool: PgPool, state: S) -> Self {
        Self {
            bus,
            pool,
            state,
            concurrency: 32,
            batch_size: DEFAULT_BATCH_SIZE,
            max_ack_wait: None,
            registrations: Vec::new(),
        }
    }

    /// Deliveries handled at once per handler in this process (default 32).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// Cap every consumer's ack wait (a message's `expire_in`): a delivery whose process died
    /// is redelivered after at most this long. Running handlers send progress acks every
    /// third of it, so a long one is not redelivered while it runs.
    pub fn max_ack_wait(mut self, max_ack_wait: Duration) -> Self {
        self.max_ack_wait = Some(max_ack_wait.max(Duration::from_secs(1)));
        self
    }

    /// Messages a batch handler ([`Self::on_batch`]) gets at most at once (default 256).
    pub fn batch_size(mut self, batch_size: usize) -> Self {
        self.batch_size = batch_size.max(1);
        self
    }

    /// Handle an event a fetched batch at a time: `handler(State<S>, Batch<E>)` gets every
    /// message the consumer had ready (up to the batch size, in delivery order) and should
    /// apply them in one transaction. If it fails, the messages are handled again one by one
    /// (each a batch of one), so a poison message is retried or dead-lettered alone. Messages
    /// are acked only after it returned `Ok`. One batch runs at a time per process.
    pub fn on_batch<E, H, Fut>(mut self, handler: H) -> Self
    where
        E: Event + Clone,
        H: Fn(State<S>, Batch<E>) -> Fut + Clone + Send + Sync + 'static,
        Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
    {
        let consumer_name = event_consumer_name(self.bus.service(), E::NAME);
        let state = self.state.clone();
        let batch_fn: BatchFn = Arc::new(move |items: Vec<(bytes::Bytes, Meta)>| {
            let decoded: Result<Vec<Batched<E>>, HandlerError> = items
                .into_iter()
                .map(|(payload, meta)| {
                    <E as prost::Message>::decode(payload)
                        .map(|message| Batched { message, meta })
                        .map_err(|error| {
                            HandlerError::permanent(format!("undecodable payload: {error}"))
                        })
                })
                .collect();
            let handler = handler.clone();
            let state = state.clone();
            Box::pin(async move {
                let messages = decoded?;
                handler(State(state), Batch { messages }).await
            })
        });
        let single = batch_fn.clone();
        let handler_fn: HandlerFn =
            Arc::new(move |payload: bytes::Bytes, meta: Meta| single(vec![(payload, meta)]));
        self.registrations.push(Registration {
            consumer_name,
            stream_base: "EVENTS",
            relative_subject: E::subject(),
            config: E::CONFIG,
            handler: handler_fn,
            batch: Some(batch_fn),
        });
        self
    }

    /// Handle an event. Every service that registers one gets every event.
    pub fn on<E, H, Args>(self, handler: H) -> Self
    where
        E: Event + Clone,
        H: Handler<E, S, Args>,
        Args: 'static,
    {
        let consumer_name = event_consumer_name(self.bus.service(), E::NAME);
        self.register::<E, H, Args>(consumer_name, "EVENTS", handler)
    }

    /// Handle a task. One consumer per task; replicas compete.
    pub fn task<T, H, Args>(self, handler: H) -> Self
    where
        T: Task + Clone,
        H: Handler<T, S, Args>,
        Args: 'static,
    {
        let consumer_name = task_consumer_name::<T>();
        self.register::<T, H, Args>(consumer_name, "TASKS", handler)
    }

    /// Purge this service's bus tables (sent outbox rows, old idempotency records) on the
    /// cron service's daily `retention.purge_due`. For services with nothing else to purge;
    /// one with more registers its own handler and calls [`crate::maintenance::purge`].
    pub fn purge_bus_tables_daily(self) -> Self {
        let pool = self.pool.clone();
        self.on::<RetentionPurgeDue, _, _>(move |Msg(due): Msg<RetentionPurgeDue>| {
            let pool = pool.clone();
            async move {
                let purged =
                    crate::maintenance::purge(&pool, crate::maintenance::BusRetention::default())
                        .await?;
                tracing::info!(
                    cron_run_id = %due.cron_run_id,
                    outbox_rows = purged.outbox_rows,
                    processed_messages = purged.processed_messages,
                    "retention purge done"
                );
                Ok(())
            }
        })
    }

    fn register<M, H, Args>(
        mut self,
        consumer_name: String,
        stream_base: &'static str,
        handler: H,
    ) -> Self
    where
        M: BusMessage + Clone,
        H: Handler<M, S, Args>,
        Args: 'static,
    {
        let state = self.state.clone();
        let handler_fn: HandlerFn = Arc::new(move |payload: bytes::Bytes, meta: Meta| {
            let decoded = <M as prost::Message>::decode(payload);
            let handler = handler.clone();
            let state = state.clone();
            Box::pin(async move {
                let message = decoded.map_err(|error| {
                    HandlerError::permanent(format!("undecodable payload: {error}"))
                })?;
                handler.call(message, meta, state).await
            })
        });
        self.registrations.push(Registration {
            consumer_name,
            stream_base,
            relative_subject: M::subject(),
            config: M::CONFIG,
            handler: handler_fn,
            batch: None,
        });
        self
    }

    /// Consume until `shutdown`; then stop pulling and let in-flight deliveries finish.
    /// Also serves re-drive requests for this router's dead letters.
    pub fn spawn(self, shutdown: CancellationToken) -> RunningRouter {
        let store = DeadLetterStore::new(self.pool.clone());
        let mut tasks = Vec::new();
        let mut attached = Vec::new();
        let mut handlers = Vec::new();
        let mut watched = Vec::new();
        for mut registration in self.registrations {
            watched.push(consumer_gauges::Watched {
                stream: self.bus.stream_name(registration.stream_base),
                consumer: registration.consumer_name.clone(),
            });
            if let Some(max) = self.max_ack_wait {
                registration.config.expire_in = registration.config.expire_in.min(max);
            }
            let pipeline = Pipeline::new(
                registration.consumer_name.clone(),
                registration.config,
                registration.handler.clone(),
                store.clone(),
            );
            handlers.push((registration.consumer_name.clone(), pipeline.clone()));
            let flag = Arc::new(AtomicBool::new(false));
            attached.push((registration.consumer_name.clone(), flag.clone()));
            let limits = Limits {
                concurrency: self.concurrency,
                batch_size: self.batch_size,
            };
            match registration.batch.clone() {
                Some(batch) => {
                    let batches = BatchPipeline {
                        handler_name: registration.consumer_name.clone(),
                        config: registration.config,
                        batch,
                        single: pipeline,
                    };
                    tasks.push(tokio::spawn(consume_batches(
                        self.bus.clone(),
                        registration,
                        batches,
                        limits,
                        flag,
                        shutdown.clone(),
                    )));
                }
                None => tasks.push(tokio::spawn(consume(
                    self.bus.clone(),
                    registration,
                    pipeline,
                    limits,
                    flag,
                    shutdown.clone(),
                ))),
            }
        }
        tasks.push(tokio::spawn(consumer_gauges::refresh(
            self.bus.clone(),
            watched,
            shutdown.clone(),
        )));
        tasks.push(tokio::spawn(dead_letter::serve_redrives(
            self.pool.clone(),
            handlers,
            shutdown.clone(),
        )));
        RunningRouter { tasks, attached }
    }
}

/// The durable consumer through which `service` receives the event named `event_name`
/// (`worker--journal_entry_created`): one per service and event, since every service that
/// handles an event gets every copy. The NATS permissions name it too.
pub(crate) fn event_consumer_name(service: &str, event_name: &str) -> String {
    format!("{service}--{}", event_name.replace('.', "_"))
}

/// The durable consumer of task `T` (`worker--export_user_data`): one per task, shared by
/// the replicas of the service whose queue it is.
pub(crate) fn task_consumer_name<T: Task>() -> String {
    let queue = match T::DESTINATION {
        Destination::Task { queue } => queue,
        Destination::Event => "events",
    };
    format!("{queue}--{}", T::NAME.replace('.', "_"))
}
