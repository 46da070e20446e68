//! Events every replica must see. The service's durable consumer hands each event to one
//! replica; state that each replica keeps in memory (which sessions are revoked: the api's
//! session cache, the sync-streamer's open streams) needs every event on every replica, so
//! each follows it on an ordered consumer of its own.
//!
//! The consumer starts `lookback` back, so events published while it was being (re)created
//! are not missed; the callback must therefore take a replayed event calmly. It is restarted
//! after any failure with a short [`Backoff`], and at once when the NATS connection is
//! replaced ([`ConnectionWatch`]: the ordered consumer lives on the server and may be gone
//! with it).
//!
//! ```ignore
//! let revocations = EveryReplica::<SessionRevoked>::new(bus, "api-session-revoked", REPLAY);
//! let first = revocations.subscribe().await?; // before serving: nothing later is missed
//! revocations.follow(Some(first), shutdown, move |event| cache.heard(&event), || cache.forget_all());
//! ```

use std::marker::PhantomData;
use std::time::Duration;

use async_nats::jetstream::consumer;
use futures::StreamExt;
use messages::definition::BusMessage;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::Bus;
use crate::connection::{Backoff, ConnectionWatch, ordered_messages, pause_until_connected};

/// Follows the event `M` on this replica's own ordered consumer.
pub struct EveryReplica<M> {
    bus: Bus,
    /// The consumer's name prefix (`api-session-revoked`): what an operator sees in
    /// `nats consumer ls`.
    purpose: &'static str,
    lookback: Duration,
    message: PhantomData<fn() -> M>,
}

/// A consumer created and not yet followed ([`EveryReplica::subscribe`]).
pub struct Subscription {
    connection: ConnectionWatch,
    messages: consumer::pull::Ordered,
}

impl<M: BusMessage> EveryReplica<M> {
    pub fn new(bus: Bus, purpose: &'static str, lookback: Duration) -> Self {
        Self {
            bus,
            purpose,
            lookback,
            message: PhantomData,
        }
    }

    /// Create this replica's consumer now: an event published after this returns is seen.
    pub async fn subscribe(&self) -> Result<Subscription, String> {
        // Watched from before the consumer exists: a reconnection in between restarts it once
        // more, never too few times.
        let connection = ConnectionWatch::new(self.bus.jetstream().client());
        let setup = async {
            let stream = self
                .bus
                .jetstream()
                .get_stream(self.bus.stream_name("EVENTS"))
                .await
                .map_err(|error| error.to_string())?;
            let start_time = time::OffsetDateTime::now_utc() - self.lookback;
            let config = consumer::pull::OrderedConfig {
                // named, so it is created through the subject that carries its filter
                // (what the NATS permissions allow: crate::permissions)
                name: Some(crate::permissions::ordered_consumer_name(self.purpose)),
                filter_subject: self.bus.subject(&M::subject()),
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            };
            ordered_messages(&stream, config).await
        };
        // A request sent as the connection drops would wait out its whole timeout.
        let messages = tokio::select! {
            messages = setup => messages?,
            () = connection.lost() => {
                return Err("the NATS connection was lost while creating the consumer".to_owned());
            }
        };
        Ok(Subscription {
            connection,
            messages,
        })
    }

    /// Follow `M` until `shutdown`, from `first` when given (see [`subscribe`](Self::subscribe)),
    /// calling `on_event` with each event and `on_resubscribe` each time a new consumer
    /// replaces a failed one (events published while none ran may be unknown beyond the
    /// lookback).
    pub fn follow(
        self,
        first: Option<Subscription>,
        shutdown: CancellationToken,
        mut on_event: impl FnMut(M) + Send + 'static,
        mut on_resubscribe: impl FnMut() + Send + 'static,
    ) -> JoinHandle<()> {
        tokio::spawn(async move {
            let mut backoff = Backoff::default();
            let mut subscription = first;
            while !shutdown.is_cancelled() {
                let subscribed = match subscription.take() {
                    Some(first) => Ok(first),
                    None => self.subscribe().await.inspect(|_| on_resubscribe()),
                };
                let outcome = match subscribed {
                    Ok(subscription) => {
                        // A consumer that was created ran: the next failure retries at once.
                        backoff.reset();
                        read(subscription, &mut on_event, &shutdown).await
                    }
                    Err(error) => Err(error),
                };
                if let Err(error) = outcome {
                    tracing::warn!(%error, event = M::NAME, "every-replica listener failed; restarting");
                    let client = self.bus.jetstream().client();
                    if !pause_until_connected(&client, backoff.next_delay(), &shutdown).await {
                        break;
                    }
                }
            }
        })
    }
}

/// Hand each event to `on_event` until `shutdown` (`Ok`) or the consumer or its connection
/// fails (`Err`).
async fn read<M: BusMessage>(
    subscription: Subscription,
    on_event: &mut impl FnMut(M),
    shutdown: &CancellationToken,
) -> Result<(), String> {
    let Subscription {
        connection,
        mut messages,
    } = subscription;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            () = shutdown.cancelled() => return Ok(()),
            () = connection.lost() => return Err("the NATS connection was lost".to_owned()),
        };
        let message = message
            .ok_or("the consumer ended")?
            .map_err(|error| error.to_string())?;
        match M::decode(message.payload.as_ref()) {
            Ok(event) => on_event(event),
            Err(error) => tracing::warn!(%error, event = M::NAME, "skipping an undecodable event"),
        }
    }
}
