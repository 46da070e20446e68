//! The consumer loops: ensure the durable consumer, attach, pull and run the pipeline.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_nats::jetstream::consumer::{self, pull};
use futures::{FutureExt, StreamExt};

use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::batch::BatchPipeline;

use super::Registration;
use crate::BusError;
use crate::pipeline::{Delivery, Pipeline};
use crate::reattach::{self, Reconnects};
use crate::streams::Bus;

/// How much a consumer takes at once.
#[derive(Debug, Clone, Copy)]
pub(super) struct Limits {
    /// Deliveries of a single-message handler at once.
    pub(super) concurrency: usize,
    /// Messages of one batch of a batch handler.
    pub(super) batch_size: usize,
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

/// After a failed attach: count the failure, say so, and pause before the next attempt (see
/// [`pause_before_retry`]). False on shutdown.
async fn retry_attach(
    registration: &Registration,
    error: &BusError,
    failures: &mut u32,
    reconnects: &Reconnects,
    seen: u64,
    shutdown: &CancellationToken,
) -> bool {
    *failures = failures.saturating_add(1);
    tracing::warn!(consumer = %registration.consumer_name, %error, "consumer not attached; retrying");
    let delay = reattach::attach_retry_delay(*failures);
    pause_before_retry(delay, reconnects, seen, shutdown).await
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

pub(super) async fn consume(
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
                if retry_attach(
                    &registration,
                    &error,
                    &mut failures,
                    &reconnects,
                    seen,
                    &shutdown,
                )
                .await
                {
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
pub(super) async fn consume_batches(
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
                if retry_attach(
                    &registration,
                    &error,
                    &mut failures,
                    &reconnects,
                    seen,
                    &shutdown,
                )
                .await
                {
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
