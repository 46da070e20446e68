//! What happens to one delivery, as tower layers around the handler:
//!
//! `TraceLayer` (a span that continues the emitter's trace) →
//! `AckLayer` (progress acks while running; ack, NAK with backoff, or dead-letter) →
//! the handler.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_nats::jetstream;
use messages::definition::DeliveryConfig;
use tower::util::BoxCloneSyncService;
use tower::{Layer, Service, ServiceBuilder, ServiceExt};
use tracing::Instrument;

use crate::HandlerError;
use crate::dead_letter::{DeadLetter, DeadLetterStore};
use crate::headers;
use crate::router::Meta;
use crate::streams::Bus;

pub(crate) type HandlerFn = Arc<
    dyn Fn(bytes::Bytes, Meta) -> Pin<Box<dyn Future<Output = Result<(), HandlerError>> + Send>>
        + Send
        + Sync,
>;

type BoxFuture<T> = Pin<Box<dyn Future<Output = T> + Send>>;

/// How a delivery is acknowledged.
#[derive(Clone)]
pub(crate) enum Acker {
    JetStream(Arc<jetstream::Message>),
    /// Re-driven from the dead letters by an operator: the caller records the outcome.
    Redrive,
}

#[derive(Clone)]
pub(crate) struct Delivery {
    pub(crate) meta: Meta,
    pub(crate) payload: bytes::Bytes,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) acker: Acker,
}

impl Delivery {
    pub(crate) fn from_jetstream(bus: &Bus, handler: &str, message: jetstream::Message) -> Self {
        let attempt = message
            .info()
            .map(|info| info.delivered.max(1) as u32)
            .unwrap_or(1);
        let stream_sequence = message.info().ok().map(|info| info.stream_sequence);
        let headers: Vec<(String, String)> = message
            .headers
            .as_ref()
            .map(|map| {
                map.iter()
                    .filter_map(|(name, values)| {
                        values
                            .first()
                            .map(|value| (name.to_string(), value.as_str().to_owned()))
                    })
                    .collect()
            })
            .unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(key, _)| key.eq_ignore_ascii_case(name))
                .map(|(_, value)| value.clone())
        };
        let message_id = header(headers::MESSAGE_ID).unwrap_or_else(|| {
            stream_sequence
                .map(|seq| format!("seq-{seq}"))
                .unwrap_or_default()
        });
        let meta = Meta {
            message_id,
            subject: bus.relative_subject(message.subject.as_str()).to_owned(),
            attempt,
            stream_sequence,
            emitted_at_micros: header(headers::EMITTED_AT_MICROS)
                .and_then(|value| value.parse().ok()),
            handler: handler.to_owned(),
        };
        Self {
            meta,
            payload: message.payload.clone(),
            headers,
            acker: Acker::JetStream(Arc::new(message)),
        }
    }
}

/// What became of a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Outcome {
    Acked,
    Retrying(Duration),
    DeadLettered,
    /// A re-driven delivery that failed again (the dead letter stays).
    RedriveFailed(String),
    /// The ack itself could not be sent; JetStream will redeliver after the ack wait.
    AckLost,
}

/// The composed pipeline for one handler.
#[derive(Clone)]
pub(crate) struct Pipeline {
    service: BoxCloneSyncService<Delivery, Outcome, std::convert::Infallible>,
}

impl Pipeline {
    pub(crate) fn new(
        handler_name: String,
        config: DeliveryConfig,
        handler: HandlerFn,
        store: DeadLetterStore,
    ) -> Self {
        let service = ServiceBuilder::new()
            .layer(TraceLayer {
                handler: handler_name.clone(),
            })
            .layer(AckLayer {
                config,
                store,
                handler: handler_name,
            })
            .service(HandlerService { handler });
        Self {
            service: BoxCloneSyncService::new(service),
        }
    }

    pub(crate) async fn process(&self, delivery: Delivery) -> Outcome {
        match self.service.clone().oneshot(delivery).await {
            Ok(outcome) => outcome,
            Err(never) => match never {},
        }
    }
}

/// Innermost: decode and call the handler.
#[derive(Clone)]
struct HandlerService {
    handler: HandlerFn,
}

impl Service<Delivery> for HandlerService {
    type Response = ();
    type Error = HandlerError;
    type Future = BoxFuture<Result<(), HandlerError>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        (self.handler)(delivery.payload, delivery.meta)
    }
}

/// Retry delay before attempt `attempt + 1`: constant, or doubling with ±20 % jitter.
pub(crate) fn retry_delay(config: &DeliveryConfig, attempt: u32) -> Duration {
    if !config.retry_backoff {
        return config.retry_delay;
    }
    let factor = 2f64.powi(attempt.saturating_sub(1).min(20) as i32);
    let jitter = 0.8 + rand::random::<f64>() * 0.4;
    let delay = config.retry_delay.as_secs_f64() * factor * jitter;
    Duration::from_secs_f64(delay.min(3600.0))
}

#[derive(Clone)]
struct AckLayer {
    config: DeliveryConfig,
    store: DeadLetterStore,
    handler: String,
}

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        AckService {
            inner,
            config: self.config,
            store: self.store.clone(),
            handler: self.handler.clone(),
        }
    }
}

#[derive(Clone)]
struct AckService<S> {
    inner: S,
    config: DeliveryConfig,
    store: DeadLetterStore,
    handler: String,
}

impl<S> Service<Delivery> for AckService<S>
where
    S: Service<Delivery, Response = (), Error = HandlerError> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Outcome;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Outcome, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let mut inner = self.inner.clone();
        let config = self.config;
        let store = self.store.clone();
        let handler = self.handler.clone();
        Box::pin(async move {
            let max_attempts = config.retry_limit.saturating_add(1);
            let attempt = delivery.meta.attempt;
            let acker = delivery.acker.clone();
            let message = match &acker {
                Acker::Redrive => {
                    let result = match inner.ready().await {
                        Ok(ready) => ready.call(delivery).await,
                        Err(error) => Err(error),
                    };
                    return Ok(match result {
                        Ok(()) => Outcome::Acked,
                        Err(error) => Outcome::RedriveFailed(error.to_string()),
                    });
                }
                Acker::JetStream(message) => message.clone(),
            };
            // Earlier attempts ran out without an answer (the process died or overran its
            // ack wait): the attempts are spent, so dead-letter without running again.
            if attempt > max_attempts {
                let error = format!(
                    "{} deliveries without completing (crash or timeout)",
                    attempt - 1
                );
                return Ok(
                    dead_letter(&store, &handler, &delivery, &message, attempt - 1, &error).await,
                );
            }
            let started = Instant::now();
            let progress = spawn_progress_acks(message.clone(), config.expire_in);
            let result = match inner.ready().await {
                Ok(ready) => ready.call(delivery.clone()).await,
                Err(error) => Err(error),
            };
            progress.abort();
            metrics::histogram!("bus_handle_duration_seconds", "handler" => handler.clone())
                .record(started.elapsed().as_secs_f64());
            let outcome = match result {
                // A plain ack: delivery is at least once, so waiting for the server to confirm
                // it buys nothing but a round trip per message.
                Ok(()) => match message.ack().await {
                    Ok(()) => {
                        if let Some(emitted) = delivery.meta.emitted_at_micros {
                            let latency = (headers::now_micros() - emitted).max(0) as f64 / 1e6;
                            metrics::histogram!("bus_end_to_end_seconds", "handler" => handler.clone()).record(latency);
                        }
                        Outcome::Acked
                    }
                    Err(error) => {
                        tracing::warn!(%error, "ack failed; the message will be redelivered");
                        Outcome::AckLost
                    }
                },
                Err(error) if error.is_permanent() || attempt >= max_attempts => {
                    tracing::warn!(%error, attempt, "handler failed for the last time; dead-lettering");
                    dead_letter(
                        &store,
                        &handler,
                        &delivery,
                        &message,
                        attempt,
                        error.message(),
                    )
                    .await
                }
                Err(error) => {
                    let delay = retry_delay(&config, attempt)
                        .max(error.min_retry_delay().unwrap_or_default());
                    tracing::info!(%error, attempt, retry_in_ms = delay.as_millis() as u64, "handler failed; will retry");
                    match message.ack_with(jetstream::AckKind::Nak(Some(delay))).await {
                        Ok(()) => Outcome::Retrying(delay),
                        Err(_) => Outcome::AckLost,
                    }
                }
            };
            let label = match &outcome {
                Outcome::Acked => "acked",
                Outcome::Retrying(_) => "retrying",
                Outcome::DeadLettered => "dead_lettered",
                Outcome::RedriveFailed(_) => "redrive_failed",
                Outcome::AckLost => "ack_lost",
            };
            metrics::counter!("bus_deliveries_total", "handler" => handler, "outcome" => label)
                .increment(1);
            Ok(outcome)
        })
    }
}

async fn dead_letter(
    store: &DeadLetterStore,
    handler: &str,
    delivery: &Delivery,
    message: &jetstream::Message,
    attempts: u32,
    error: &str,
) -> Outcome {
    let letter = DeadLetter {
        handler: handler.to_owned(),
        subject: delivery.meta.subject.clone(),
        message_id: delivery.meta.message_id.clone(),
        payload: delivery.payload.to_vec(),
        headers: delivery.headers.iter().cloned().collect(),
        attempts: attempts as i32,
        last_error: error.to_owned(),
    };
    match store.store(&letter).await {
        // Kept in Postgres now: ack so the stream stops redelivering (and a work queue drops it).
        Ok(()) => match message.ack().await {
            Ok(()) => Outcome::DeadLettered,
            Err(_) => Outcome::AckLost,
        },
        Err(store_error) => {
            // Never drop it: try again later.
            tracing::error!(%store_error, "cannot store dead letter; redelivering later");
            let _ = message
                .ack_with(jetstream::AckKind::Nak(Some(Duration::from_secs(10))))
                .await;
            Outcome::AckLost
        }
    }
}

/// Keep a long handler's delivery from timing out: `+WPI` every third of the ack wait.
fn spawn_progress_acks(
    message: Arc<jetstream::Message>,
    ack_wait: Duration,
) -> tokio::task::JoinHandle<()> {
    let interval = (ack_wait / 3).max(Duration::from_millis(100));
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(interval);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            if message
                .ack_with(jetstream::AckKind::Progress)
                .await
                .is_err()
            {
                return;
            }
        }
    })
}

#[derive(Clone)]
struct TraceLayer {
    handler: String,
}

impl<S> Layer<S> for TraceLayer {
    type Service = TraceService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        TraceService {
            inner,
            handler: self.handler.clone(),
        }
    }
}

#[derive(Clone)]
struct TraceService<S> {
    inner: S,
    handler: String,
}

impl<S> Service<Delivery> for TraceService<S>
where
    S: Service<Delivery, Response = Outcome, Error = std::convert::Infallible>
        + Clone
        + Send
        + 'static,
    S::Future: Send,
{
    type Response = Outcome;
    type Error = std::convert::Infallible;
    type Future = BoxFuture<Result<Outcome, Self::Error>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, delivery: Delivery) -> Self::Future {
        let span = tracing::info_span!(
            "bus.handle",
            handler = %self.handler,
            subject = %delivery.meta.subject,
            message_id = %delivery.meta.message_id,
            attempt = delivery.meta.attempt,
            otel.kind = "consumer",
        );
        platform::telemetry::set_parent_from_pairs(
            &span,
            delivery
                .headers
                .iter()
                .map(|(key, value)| (key.as_str(), value.as_str())),
        );
        let mut inner = self.inner.clone();
        Box::pin(async move { inner.call(delivery).await }.instrument(span))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let config = DeliveryConfig {
            retry_limit: 5,
            retry_delay: Duration::from_secs(1),
            retry_backoff: true,
            expire_in: Duration::from_secs(30),
        };
        for attempt in 1..=5u32 {
            let base = 2f64.powi(attempt as i32 - 1);
            let delay = retry_delay(&config, attempt).as_secs_f64();
            assert!(
                delay >= base * 0.8 - 1e-9 && delay <= base * 1.2 + 1e-9,
                "attempt {attempt}: {delay}"
            );
        }
        let constant = DeliveryConfig {
            retry_backoff: false,
            ..config
        };
        assert_eq!(retry_delay(&constant, 4), Duration::from_secs(1));
    }
}
