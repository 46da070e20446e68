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

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures::{FutureExt, StreamExt};
use messages::definition::{BusMessage, DeliveryConfig, Destination, Event, Task};
use messages::journal::v1::RetentionPurgeDue;
use sqlx::PgPool;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::batch::{Batch, BatchFn, BatchPipeline, Batched};
use crate::consumer_gauges;
use crate::dead_letter::{self, DeadLetterStore};
use crate::pipeline::{Delivery, HandlerFn, Pipeline};
use crate::reattach::{self, Reconnects};
use crate::streams::Bus;
use crate::{BusError, HandlerError};

/// The application state, cloned into each handler call.
#[derive(Debug, Clone)]
pub struct State<S>(pub S);

/// The decoded message.
#[derive(Debug, Clone)]
pub struct Msg<M>(pub M);

/// What the bus knows about a delivery.
#[derive(Debug, Clone)]
pub struct Meta {
    /// The outbox id (or the publisher's `Nats-Msg-Id`): stable across redeliveries.
    pub message_id: String,
    /// Subject relative to the namespace, e.g. `events.journal_entry.created`.
    pub subject: String,
    /// 1 on the first delivery.
    pub attempt: u32,
    /// JetStream stream sequence (none when re-driven from the dead letters).
    pub stream_sequence: Option<u64>,
    /// When the message was emitted (epoch microseconds), if the publisher said.
    pub emitted_at_micros: Option<i64>,
    /// The consumer/handler name.
    pub handler: String,
}

/// Builds one of a handler's arguments from a delivery.
pub trait FromDelivery<M, S>: Sized {
    fn from_delivery(message: &M, meta: &Meta, state: &S) -> Self;
}

impl<M, S: Clone> FromDelivery<M, S> for State<S> {
    fn from_delivery(_: &M, _: &Meta, state: &S) -> Self {
        State(state.clone())
    }
}

impl<M: Clone, S> FromDelivery<M, S> for Msg<M> {
    fn from_delivery(message: &M, _: &Meta, _: &S) -> Self {
        Msg(message.clone())
    }
}

impl<M, S> FromDelivery<M, S> for Meta {
    fn from_delivery(_: &M, meta: &Meta, _: &S) -> Self {
        meta.clone()
    }
}

type HandlerFuture = Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>;

/// A plain async fn whose arguments are all [`FromDelivery`] extractors.
pub trait Handler<M, S, Args>: Clone + Send + Sync + 'static {
    fn call(&self, message: M, meta: Meta, state: S) -> HandlerFuture;
}

macro_rules! impl_handler {
    ($($arg:ident),*) => {
        impl<F, Fut, M, S, $($arg,)*> Handler<M, S, ($($arg,)*)> for F
        where
            F: Fn($($arg),*) -> Fut + Clone + Send + Sync + 'static,
            Fut: Future<Output = Result<(), HandlerError>> + Send + 'static,
            M: Send + 'static,
            S: Send + 'static,
            $($arg: FromDelivery<M, S> + Send,)*
        {
            #[allow(non_snake_case, unused_variables)]
            fn call(&self, message: M, meta: Meta, state: S) -> HandlerFuture {
                $(let $arg = $arg::from_delivery(&message, &meta, &state);)*
                Box::pin((self)($($arg),*))
            }
        }
    };
}

impl_handler!();
impl_handler!(A1);
impl_handler!(A1, A2);
impl_handler!(A1, A2, A3);

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

/// Handle on the running consumers.
pub struct RunningRouter {
    tasks: Vec<tokio::task::JoinHandle<()>>,
    attached: Vec<(String, Arc<AtomicBool>)>,
}

impl RunningRouter {
    /// Consumers not currently attached to JetStream (readiness).
    pub fn detached(&self) -> Vec<String> {
        self.attached
            .iter()
            .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
            .map(|(name, _)| name.clone())
            .collect()
    }

    /// A readiness check: every consumer is attached.
    pub fn readiness_check(&self) -> ConsumersAttached {
        ConsumersAttached {
            attached: self.attached.clone(),
        }
    }

    /// Wait for every consumer to finish (after shutdown was cancelled).
    pub async fn join(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

/// Readiness: the bus consumers are attached.
pub struct ConsumersAttached {
    attached: Vec<(String, Arc<AtomicBool>)>,
}

impl platform::health::ReadinessCheck for ConsumersAttached {
    fn name(&self) -> &str {
        "bus_consumers"
    }
    fn check(&self) -> Pin<Box<dyn Future<Output = Result<(), String>> + Send + '_>> {
        Box::pin(async move {
            let detached: Vec<&str> = self
                .attached
                .iter()
                .filter(|(_, flag)| !flag.load(Ordering::Relaxed))
                .map(|(name, _)| name.as_str())
                .collect();
            if detached.is_empty() {
                Ok(())
            } else {
                Err(format!("not attached: {}", detached.join(", ")))
            }
        })
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

/// How much a consumer takes at once.
#[derive(Debug, Clone, Copy)]
struct Limits {
    /// Deliveries of a single-message handler at once.
    concurrency: usize,
    /// Messages of one batch of a batch handler.
    batch_size: usize,
}

async fn ensure_consumer(
    bus: &Bus,
    registration: &Registration,
    limits: Limits,
) -> Result<consumer::Consumer<pull::Config>, BusError> {
    let stream = bus
        .jetstream()
        .get_stream(bus.stream_name(registration.stream_base))
        .await
        .map_err(|error| BusError::jetstream("getting stream", error))?;
    let config = pull::Config {
        durable_name: Some(registration.consumer_name.clone()),
        filter_subject: bus.subject(&registration.relative_subject),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: registration.config.expire_in,
        // Unlimited at the server: the pipeline counts attempts and dead-letters, so a message
        // whose last attempt crashed the process is still seen (and dead-lettered) again.
        max_deliver: -1,
        max_ack_pending: (limits.concurrency as i64)
            .saturating_mul(16)
            .max(256)
            .max((limits.batch_size as i64).saturating_mul(2)),
        deliver_policy: consumer::DeliverPolicy::All,
        ..Default::default()
    };
    let existing = stream
        .get_or_create_consumer(&registration.consumer_name, config.clone())
        .await
        .map_err(|error| BusError::jetstream("creating consumer", error))?;
    // A consumer created by an earlier release keeps its settings until told otherwise: move
    // the ones we tune (ack wait, in-flight limit) to what this release wants.
    let current = &existing.cached_info().config;
    if current.ack_wait == config.ack_wait && current.max_ack_pending == config.max_ack_pending {
        return Ok(existing);
    }
    match stream.create_consumer(config).await {
        Ok(updated) => Ok(updated),
        Err(error) => {
            tracing::warn!(consumer = %registration.consumer_name, %error, "cannot update the consumer's settings; using them as they are");
            Ok(existing)
        }
    }
}

/// Make sure `registration`'s consumer exists. Abandoned when the client connects again
/// meanwhile (the attempt may be waiting for an answer that died with the old connection):
/// `Ok(None)` then, and the caller tries again at once.
async fn attach(
    bus: &Bus,
    registration: &Registration,
    limits: Limits,
    reconnects: &Reconnects,
    seen: u64,
) -> Result<Option<consumer::Consumer<pull::Config>>, BusError> {
    tokio::select! {
        () = reconnects.after(seen) => Ok(None),
        attached = ensure_consumer(bus, registration, limits) => attached.map(Some),
    }
}

/// After a failed attach or pull: pause (longer the more failures in a row, at most
/// [`reattach::MAX_ATTACH_RETRY_DELAY`]; ended early by a reconnection). False on shutdown.
async fn pause_before_retry(
    delay: Duration,
    reconnects: &Reconnects,
    seen: u64,
    shutdown: &CancellationToken,
) -> bool {
    tokio::select! {
        () = shutdown.cancelled() => false,
        () = tokio::time::sleep(delay) => true,
        () = reconnects.after(seen) => true,
    }
}

async fn consume(
    bus: Bus,
    registration: Registration,
    pipeline: Pipeline,
    limits: Limits,
    attached: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let concurrency = limits.concurrency;
    let permits = Arc::new(Semaphore::new(concurrency));
    let reconnects = Reconnects::new(&bus);
    let mut failures = 0u32;
    'reconnect: while !shutdown.is_cancelled() {
        let seen = reconnects.current();
        let attached_consumer = tokio::select! {
            () = shutdown.cancelled() => break 'reconnect,
            attached = attach(&bus, &registration, limits, &reconnects, seen) => attached,
        };
        // Opening the pull stream subscribes and starts pulling; no round trip to wait for.
        let opened = match attached_consumer {
            Ok(Some(consumer)) => consumer
                .stream()
                .max_messages_per_batch(concurrency)
                .heartbeat(reattach::PULL_HEARTBEAT)
                .expires(Duration::from_secs(30))
                .messages()
                .await
                .map(Some)
                .map_err(|error| BusError::jetstream("pulling", error)),
            Ok(None) => Ok(None),
            Err(error) => Err(error),
        };
        let mut messages = match opened {
            Ok(Some(messages)) => messages,
            Ok(None) => continue 'reconnect,
            Err(error) => {
                attached.store(false, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                tracing::warn!(consumer = %registration.consumer_name, %error, "consumer not attached; retrying");
                let delay = reattach::attach_retry_delay(failures);
                if pause_before_retry(delay, &reconnects, seen, &shutdown).await {
                    continue 'reconnect;
                }
                break 'reconnect;
            }
        };
        attached.store(true, Ordering::Relaxed);
        failures = 0;
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break 'reconnect,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break 'reconnect,
                },
            };
            let next = tokio::select! {
                () = shutdown.cancelled() => break 'reconnect,
                () = reconnects.after(seen) => {
                    // The pull request died with the old connection (the client would find
                    // out by itself, but unboundedly late): re-attach now, after handing the
                    // pipeline what had already arrived.
                    drop(permit);
                    for message in take_arrived(&mut messages) {
                        let delivery =
                            Delivery::from_jetstream(&bus, &registration.consumer_name, message);
                        let pipeline = pipeline.clone();
                        let permits = permits.clone();
                        tokio::spawn(async move {
                            let Ok(permit) = permits.acquire_owned().await else {
                                return;
                            };
                            pipeline.process(delivery).await;
                            drop(permit);
                        });
                    }
                    tracing::info!(consumer = %registration.consumer_name, "nats connection re-established; re-attaching");
                    continue 'reconnect;
                }
                next = messages.next() => next,
            };
            match next {
                Some(Ok(message)) => {
                    let delivery =
                        Delivery::from_jetstream(&bus, &registration.consumer_name, message);
                    let pipeline = pipeline.clone();
                    tokio::spawn(async move {
                        pipeline.process(delivery).await;
                        drop(permit);
                    });
                }
                Some(Err(error)) => {
                    // Missed heartbeats or a dropped connection: re-attach, after a pause so a
                    // stream that fails at once does not spin.
                    tracing::warn!(consumer = %registration.consumer_name, %error, "pull stream error; re-attaching");
                    attached.store(false, Ordering::Relaxed);
                    if pause_before_retry(STREAM_ERROR_PAUSE, &reconnects, seen, &shutdown).await {
                        continue 'reconnect;
                    }
                    break 'reconnect;
                }
                None => {
                    attached.store(false, Ordering::Relaxed);
                    continue 'reconnect;
                }
            }
        }
    }
    attached.store(false, Ordering::Relaxed);
    // Drain: wait until every in-flight delivery has released its permit.
    let _ = permits.acquire_many(concurrency as u32).await;
    tracing::info!(consumer = %registration.consumer_name, "consumer stopped");
}

/// The pause before re-attaching after a pull stream's error.
const STREAM_ERROR_PAUSE: Duration = Duration::from_millis(250);

/// The messages a pull stream has already received and not yet yielded, without waiting.
fn take_arrived(messages: &mut pull::Stream) -> Vec<async_nats::jetstream::Message> {
    let mut arrived = Vec::new();
    while let Some(Some(Ok(message))) = messages.next().now_or_never() {
        arrived.push(message);
    }
    arrived
}

/// A batch consumer: fetch what is ready (waiting for the first message), hand it to the batch
/// pipeline, and only then fetch again — one batch at a time, so the messages of one key are
/// applied in the consumer's delivery order and nothing fetched waits out its ack wait.
async fn consume_batches(
    bus: Bus,
    registration: Registration,
    pipeline: BatchPipeline,
    limits: Limits,
    attached: Arc<AtomicBool>,
    shutdown: CancellationToken,
) {
    let reconnects = Reconnects::new(&bus);
    let mut failures = 0u32;
    'reconnect: while !shutdown.is_cancelled() {
        let seen = reconnects.current();
        let found = tokio::select! {
            () = shutdown.cancelled() => break 'reconnect,
            found = attach(&bus, &registration, limits, &reconnects, seen) => found,
        };
        let consumer = match found {
            Ok(Some(consumer)) => consumer,
            Ok(None) => continue 'reconnect,
            Err(error) => {
                attached.store(false, Ordering::Relaxed);
                failures = failures.saturating_add(1);
                tracing::warn!(consumer = %registration.consumer_name, %error, "consumer not attached; retrying");
                let delay = reattach::attach_retry_delay(failures);
                if pause_before_retry(delay, &reconnects, seen, &shutdown).await {
                    continue 'reconnect;
                }
                break 'reconnect;
            }
        };
        attached.store(true, Ordering::Relaxed);
        failures = 0;
        loop {
            let fetched = tokio::select! {
                () = shutdown.cancelled() => break 'reconnect,
                // A pull on the old connection could wait out its expiry (or, for a `no_wait`
                // fetch, its timeout): start afresh. A message that arrived in that very moment
                // is dropped with the pull and redelivered after its ack wait.
                () = reconnects.after(seen) => {
                    tracing::info!(consumer = %registration.consumer_name, "nats connection re-established; re-attaching");
                    continue 'reconnect;
                }
                fetched = fetch_batch(&consumer, limits.batch_size) => fetched,
            };
            match fetched {
                Ok(messages) if messages.is_empty() => {}
                Ok(messages) => {
                    let deliveries = messages
                        .into_iter()
                        .map(|message| {
                            Delivery::from_jetstream(&bus, &registration.consumer_name, message)
                        })
                        .collect();
                    // Not cancelled by shutdown: a started batch finishes (and is acked).
                    pipeline.process(deliveries).await;
                }
                Err(error) => {
                    tracing::warn!(consumer = %registration.consumer_name, %error, "pull failed; re-attaching");
                    attached.store(false, Ordering::Relaxed);
                    if pause_before_retry(STREAM_ERROR_PAUSE, &reconnects, seen, &shutdown).await {
                        continue 'reconnect;
                    }
                    break 'reconnect;
                }
            }
        }
    }
    attached.store(false, Ordering::Relaxed);
    tracing::info!(consumer = %registration.consumer_name, "consumer stopped");
}

/// How long one pull waits for a first message before asking again (a short wait also notices
/// a lost connection or a deleted consumer soon).
const LONG_POLL: Duration = Duration::from_secs(5);

/// The longest a `no_wait` fetch waits for the server's answer: it comes at once, unless the
/// connection died with the request (the client sets no deadline of its own then).
const FETCH_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// Up to `batch_size` messages: what the consumer has ready now; when nothing is, wait (up to
/// [`LONG_POLL`]) for one, then take what else is ready. Empty when the wait ran out.
async fn fetch_batch(
    consumer: &consumer::Consumer<pull::Config>,
    batch_size: usize,
) -> Result<Vec<async_nats::jetstream::Message>, BusError> {
    let mut messages = fetch_ready(consumer, batch_size).await?;
    if !messages.is_empty() {
        return Ok(messages);
    }
    let mut first = consumer
        .batch()
        .max_messages(1)
        .expires(LONG_POLL)
        .messages()
        .await
        .map_err(|error| BusError::jetstream("pulling", error))?;
    collect_until_error(&mut first, &mut messages, "pulling").await?;
    if messages.is_empty() || batch_size <= 1 {
        return Ok(messages);
    }
    messages.extend(fetch_ready(consumer, batch_size - 1).await?);
    Ok(messages)
}

/// The messages the consumer can deliver at once (no waiting), up to `limit`.
async fn fetch_ready(
    consumer: &consumer::Consumer<pull::Config>,
    limit: usize,
) -> Result<Vec<async_nats::jetstream::Message>, BusError> {
    let fetch = async {
        let mut ready = consumer
            .fetch()
            .max_messages(limit)
            .messages()
            .await
            .map_err(|error| BusError::jetstream("fetching", error))?;
        let mut messages = Vec::new();
        collect_until_error(&mut ready, &mut messages, "fetching").await?;
        Ok::<_, BusError>(messages)
    };
    tokio::time::timeout(FETCH_READY_TIMEOUT, fetch)
        .await
        .map_err(|_| BusError::jetstream("fetching", "no answer from the server"))?
}

/// Drain a pull into `messages`. An error after some messages arrived ends the pull but keeps
/// them (they are handled; the next pull reports the error again if it lasts).
async fn collect_until_error(
    pull: &mut pull::Batch,
    messages: &mut Vec<async_nats::jetstream::Message>,
    operation: &'static str,
) -> Result<(), BusError> {
    while let Some(message) = pull.next().await {
        match message {
            Ok(message) => messages.push(message),
            Err(error) if messages.is_empty() => return Err(BusError::jetstream(operation, error)),
            Err(error) => {
                tracing::debug!(%error, "pull ended early; handling what arrived");
                break;
            }
        }
    }
    Ok(())
}
