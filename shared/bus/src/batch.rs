//! Batched handlers: one call, and one transaction, for every message of a fetched pull batch.
//!
//! ```ignore
//! BusRouter::new(bus, pool, state)
//!     .batch_size(256)
//!     .on_batch::<JournalEntryCreated, _, _>(record_entries)   // async fn(State<S>, Batch<E>) -> Result<(), HandlerError>
//! ```
//!
//! A batch consumer runs one batch at a time per process: it waits for a message, takes what
//! else the consumer has ready (up to the batch size, in the consumer's delivery order), and
//! hands them to the handler at once. The guarantees of single-message handlers stay, per
//! message:
//! - every message is acked only after the handler returned `Ok` (it commits first);
//! - if the handler fails, the batch's messages are handled again one by one, in order, each
//!   through the single-message pipeline (a batch of one): a poison message is retried with
//!   backoff or dead-lettered alone while the others proceed;
//! - a message whose attempts are spent (its earlier deliveries crashed or timed out) is
//!   dead-lettered without running, as today;
//! - progress acks keep every message of a long batch alive;
//! - re-drive runs the handler on one stored message (a batch of one).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use messages::definition::DeliveryConfig;
use tracing::Instrument;

use crate::HandlerError;
use crate::headers;
use crate::pipeline::{Acker, Delivery, Pipeline};
use crate::router::Meta;

/// The messages of one fetched batch, in the consumer's delivery order.
#[derive(Debug, Clone)]
pub struct Batch<M> {
    pub messages: Vec<Batched<M>>,
}

/// One message of a [`Batch`] and what the bus knows about its delivery.
#[derive(Debug, Clone)]
pub struct Batched<M> {
    pub message: M,
    pub meta: Meta,
}

impl<M> Batch<M> {
    pub fn len(&self) -> usize {
        self.messages.len()
    }

    pub fn is_empty(&self) -> bool {
        self.messages.is_empty()
    }
}

impl<M> IntoIterator for Batch<M> {
    type Item = Batched<M>;
    type IntoIter = std::vec::IntoIter<Batched<M>>;
    fn into_iter(self) -> Self::IntoIter {
        self.messages.into_iter()
    }
}

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// The type-erased batch handler: raw payloads in, one result for the whole batch. An
/// undecodable payload fails the batch with a permanent error (the one-by-one fallback then
/// dead-letters just that message).
pub(crate) type BatchFn =
    Arc<dyn Fn(Vec<(bytes::Bytes, Meta)>) -> BoxFuture<Result<(), HandlerError>> + Send + Sync>;

/// How a batch consumer handles what it fetched.
#[derive(Clone)]
pub(crate) struct BatchPipeline {
    pub(crate) handler_name: String,
    pub(crate) config: DeliveryConfig,
    pub(crate) batch: BatchFn,
    /// The single-message pipeline: the fallback, and the way spent messages are dead-lettered.
    pub(crate) single: Pipeline,
}

impl BatchPipeline {
    pub(crate) async fn process(&self, deliveries: Vec<Delivery>) {
        let max_attempts = self.config.retry_limit.saturating_add(1);
        let (runnable, spent): (Vec<Delivery>, Vec<Delivery>) = deliveries
            .into_iter()
            .partition(|delivery| delivery.meta.attempt <= max_attempts);
        for delivery in spent {
            self.single.process(delivery).await;
        }
        if runnable.len() < 2 {
            for delivery in runnable {
                self.single.process(delivery).await;
            }
            return;
        }
        let Some(first) = runnable.first() else {
            return;
        };
        let messages: Vec<Arc<jetstream::Message>> = runnable
            .iter()
            .filter_map(|delivery| match &delivery.acker {
                Acker::JetStream(message) => Some(message.clone()),
                Acker::Redrive => None,
            })
            .collect();
        let span = tracing::info_span!(
            "bus.handle_batch",
            handler = %self.handler_name,
            messages = runnable.len(),
            first_message_id = %first.meta.message_id,
            otel.kind = "consumer",
        );
        // One span for the batch, continuing the trace of its first message (a span has one
        // parent; the others' ids are in the logs when the batch falls back).
        platform::telemetry::set_parent_from_pairs(
            &span,
            first
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        let waiting = Arc::new(Mutex::new(messages.clone()));
        let progress = spawn_progress_acks(waiting.clone(), self.config.expire_in);
        let started = Instant::now();
        let items: Vec<(bytes::Bytes, Meta)> = runnable
            .iter()
            .map(|delivery| (delivery.payload.clone(), delivery.meta.clone()))
            .collect();
        let result = (self.batch)(items).instrument(span.clone()).await;
        let handler = self.handler_name.clone();
        metrics::histogram!("bus_handle_duration_seconds", "handler" => handler.clone())
            .record(started.elapsed().as_secs_f64());
        metrics::histogram!("bus_batch_size", "handler" => handler.clone())
            .record(runnable.len() as f64);
        match result {
            Ok(()) => {
                // Committed: ack every message (a lost ack means one redelivery, which the
                // handler's idempotency absorbs).
                let mut acked = 0u64;
                let mut lost = 0u64;
                for (delivery, message) in runnable.iter().zip(&messages) {
                    match message.ack().await {
                        Ok(()) => {
                            acked += 1;
                            if let Some(emitted) = delivery.meta.emitted_at_micros {
                                let latency = (headers::now_micros() - emitted).max(0) as f64 / 1e6;
                                metrics::histogram!("bus_end_to_end_seconds", "handler" => handler.clone())
                                    .record(latency);
                            }
                        }
                        Err(error) => {
                            lost += 1;
                            tracing::warn!(parent: &span, %error, message_id = %delivery.meta.message_id, "ack failed; the message will be redelivered");
                        }
                    }
                }
                progress.abort();
                metrics::counter!("bus_deliveries_total", "handler" => handler.clone(), "outcome" => "acked")
                    .increment(acked);
                if lost > 0 {
                    metrics::counter!("bus_deliveries_total", "handler" => handler, "outcome" => "ack_lost")
                        .increment(lost);
                }
            }
            Err(error) => {
                tracing::warn!(parent: &span, %error, messages = runnable.len(), "batch failed; handling its messages one by one");
                metrics::counter!("bus_batch_fallbacks_total", "handler" => handler).increment(1);
                // The progress acks go on for the messages still waiting their turn.
                for delivery in runnable {
                    self.single.process(delivery).await;
                    let mut waiting = waiting.lock().unwrap_or_else(PoisonError::into_inner);
                    if !waiting.is_empty() {
                        waiting.remove(0);
                    }
                }
                progress.abort();
            }
        }
    }
}

/// Keep a long batch's deliveries from timing out: `+WPI` for each message still `waiting`
/// every third of the ack wait.
fn spawn_progress_acks(
    waiting: Arc<Mutex<Vec<Arc<jetstream::Message>>>>,
    ack_wait: Duration,
) -> tokio::task::JoinHandle<()> {
    let interval = (ack_wait / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let messages = waiting
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            for message in &messages {
                if message
                    .ack_with(jetstream::AckKind::Progress)
                    .await
                    .is_err()
                {
                    return;
                }
            }
        }
    })
}
