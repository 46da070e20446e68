//! The tail: one ordered consumer on CHANGES feeding the hub, and reads of a range from JetStream.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;

use tokio_util::sync::CancellationToken;

use crate::changesets::LiveChangeset;
use bus::connection::{Backoff, ConnectionWatch, ordered_messages, pause_until_connected};

use super::Hub;

/// Tail CHANGES from its end into the hub until `shutdown`; restarts after errors, when the
/// connection is replaced, and when the lag monitor finds it stalled.
pub async fn run_tail(
    hub: Hub,
    jetstream: jetstream::Context,
    stream_name: String,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let mut ran = false;
        match tail_once(&hub, &jetstream, &stream_name, &shutdown, &mut ran).await {
            Ok(()) => break,
            Err(error) => {
                hub.inner.tailing.store(false, Ordering::Relaxed);
                // A tail that ran (then lost its connection) restarts at once.
                if ran {
                    backoff.reset();
                }
                tracing::warn!(%error, "CHANGES tail failed; restarting");
                let delay = backoff.next_delay();
                if !pause_until_connected(&jetstream.client(), delay, &shutdown).await {
                    break;
                }
            }
        }
    }
    hub.inner.tailing.store(false, Ordering::Relaxed);
}

async fn tail_once(
    hub: &Hub,
    jetstream: &jetstream::Context,
    stream_name: &str,
    shutdown: &CancellationToken,
    ran: &mut bool,
) -> Result<(), String> {
    let connection = ConnectionWatch::new(jetstream.client());
    // A restart requested before this consumer exists is already served by it.
    let stalled = hub.inner.stalled.notified();
    tokio::pin!(stalled);
    stalled.as_mut().enable();
    let setup = async {
        let stream = jetstream
            .get_stream(stream_name)
            .await
            .map_err(|error| error.to_string())?;
        let start = if !hub.has_position() {
            // First start: from the stream's end (older changesets are in the read model).
            let info = stream.get_info().await.map_err(|error| error.to_string())?;
            hub.advance_to(info.state.last_sequence);
            info.state.last_sequence + 1
        } else {
            hub.position() + 1
        };
        ordered_from(&stream, start)
            .await
            .map(|messages| (messages, start))
    };
    // A request sent as the connection drops would wait out its whole timeout.
    let (mut messages, start) = tokio::select! {
        consumer = setup => consumer?,
        () = connection.lost() => return Err("the NATS connection was lost while creating the consumer".to_owned()),
        () = shutdown.cancelled() => return Ok(()),
    };
    hub.inner.positioned.store(true, Ordering::Relaxed);
    hub.inner.tailing.store(true, Ordering::Relaxed);
    *ran = true;
    tracing::info!(start, "tailing CHANGES");
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            () = shutdown.cancelled() => return Ok(()),
            () = &mut stalled => {
                return Err(format!(
                    "no progress past {} while the stream head is ahead; a new consumer resumes after it",
                    hub.position()
                ));
            }
            () = connection.lost() => {
                // Not tailing until a new consumer runs (readiness says so meanwhile).
                hub.inner.tailing.store(false, Ordering::Relaxed);
                return Err(format!(
                    "the NATS connection was lost (tailed up to {}); a new consumer resumes after it",
                    hub.position()
                ));
            }
        };
        let Some(message) = message else {
            return Err("the CHANGES consumer ended".to_owned());
        };
        let message = message.map_err(|error| error.to_string())?;
        let seq = message
            .info()
            .map_err(|error| error.to_string())?
            .stream_sequence;
        match LiveChangeset::decode(seq, &message.payload) {
            Ok(changeset) => hub.publish(changeset),
            Err(error) => {
                tracing::warn!(seq, %error, "skipping a CHANGES message that is not a changeset");
                hub.advance_to(seq);
            }
        }
    }
}

/// An ordered consumer over the whole stream from `start`.
pub async fn ordered_from(
    stream: &jetstream::stream::Stream,
    start: u64,
) -> Result<consumer::pull::Ordered, String> {
    let config = consumer::pull::OrderedConfig {
        deliver_policy: consumer::DeliverPolicy::ByStartSequence {
            start_sequence: start.max(1),
        },
        ..Default::default()
    };
    ordered_messages(stream, config).await
}

/// The changesets in `from..=to` read from JetStream (when the ring no longer has them).
pub async fn read_range(
    jetstream: &jetstream::Context,
    stream_name: &str,
    from: u64,
    to: u64,
) -> Result<Vec<Arc<LiveChangeset>>, String> {
    if from > to {
        return Ok(Vec::new());
    }
    let stream = jetstream
        .get_stream(stream_name)
        .await
        .map_err(|error| error.to_string())?;
    let mut messages = ordered_from(&stream, from).await?;
    let mut changesets = Vec::new();
    while let Some(message) = tokio::time::timeout(Duration::from_secs(10), messages.next())
        .await
        .map_err(|_| format!("timed out reading CHANGES {from}..={to}"))?
    {
        let message = message.map_err(|error| error.to_string())?;
        let seq = message
            .info()
            .map_err(|error| error.to_string())?
            .stream_sequence;
        if seq > to {
            break;
        }
        if let Ok(changeset) = LiveChangeset::decode(seq, &message.payload) {
            changesets.push(Arc::new(changeset));
        }
        if seq == to {
            break;
        }
    }
    Ok(changesets)
}
