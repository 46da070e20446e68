//! Per-consumer gauges from JetStream's consumer info, so an operator sees a stalled or
//! struggling consumer: labelled `consumer` (the durable name) and `service`.
//!
//! - `bus_consumer_pending`: messages in the stream the consumer has not been handed yet
//!   (`num_pending`): a backlog;
//! - `bus_consumer_ack_pending`: messages handed out and not yet acked (`num_ack_pending`):
//!   handlers running, or deliveries waiting for a retry or for their ack wait to run out;
//! - `bus_consumer_redelivered`: of those, the ones delivered more than once
//!   (`num_redelivered`): failing handlers, or replicas that died mid-message.
//!
//! Refreshed every [`REFRESH_EVERY`] for each durable consumer a router owns. While NATS
//! cannot answer, the gauges keep their last values (a lost connection is what the readiness
//! check and `bus_consumers` report).

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::streams::Bus;

/// How often the gauges are refreshed.
pub const REFRESH_EVERY: Duration = Duration::from_secs(5);

/// One durable consumer: its stream and its name.
pub(crate) struct Watched {
    pub(crate) stream: String,
    pub(crate) consumer: String,
}

/// Refresh the gauges of `watched` every [`REFRESH_EVERY`] until `shutdown`.
pub(crate) async fn refresh(bus: Bus, watched: Vec<Watched>, shutdown: CancellationToken) {
    let mut every = tokio::time::interval(REFRESH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = every.tick() => {}
        }
        for one in &watched {
            let info = async {
                let stream = bus.jetstream().get_stream_no_info(&one.stream).await?;
                Ok::<_, Box<dyn std::error::Error + Send + Sync>>(
                    stream.consumer_info(&one.consumer).await?,
                )
            };
            let info = tokio::select! {
                () = shutdown.cancelled() => return,
                info = info => info,
            };
            match info {
                Ok(info) => {
                    let labels = [
                        ("consumer", one.consumer.clone()),
                        ("service", bus.service().to_owned()),
                    ];
                    metrics::gauge!("bus_consumer_pending", &labels).set(info.num_pending as f64);
                    metrics::gauge!("bus_consumer_ack_pending", &labels)
                        .set(info.num_ack_pending as f64);
                    metrics::gauge!("bus_consumer_redelivered", &labels)
                        .set(info.num_redelivered as f64);
                }
                // Not attached yet, or NATS away: the next round tries again.
                Err(error) => {
                    tracing::debug!(consumer = %one.consumer, %error, "consumer info unavailable")
                }
            }
        }
    }
}
