//! Typed NATS request/reply between services: one service asks a question
//! ([`Query`]), the service that owns the data answers it from its own schema.
//!
//! ```ignore
//! // the owner (every replica subscribes in one queue group; one of them answers):
//! let answering = bus::query::serve::<ExportDataRequest, _, _>(&bus, 16, answer, shutdown).await?;
//! async fn answer(request: ExportDataRequest) -> ExportDataReply { ... }
//! // the asker:
//! let reply = bus.request(&ExportDataRequest { .. }, Duration::from_secs(10)).await?;
//! ```
//!
//! Subjects are `queries.<name>` under the bus namespace. Not JetStream: a question nobody
//! answers right now fails fast (no responders) or times out, and the asker retries (a bus
//! handler that asks fails its delivery and is redelivered later). The caller's trace context
//! travels in the headers. A request the answering side cannot decode is answered with an
//! empty body and the header `Bus-Query-Error`, which the asker turns into an error.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use messages::definition::Query;
use prost::Message;
use tokio::sync::Semaphore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::{Bus, BusError};

/// Header of a reply that carries a transport-level failure instead of an answer.
pub const QUERY_ERROR_HEADER: &str = "Bus-Query-Error";

impl Bus {
    /// Ask `query` and wait up to `timeout` for the answer.
    pub async fn request<Q: Query>(
        &self,
        query: &Q,
        timeout: Duration,
    ) -> Result<Q::Reply, BusError> {
        let client = self.jetstream().client();
        let mut headers = async_nats::HeaderMap::new();
        for (key, value) in platform::telemetry::current_trace_headers() {
            headers.insert(key.as_str(), value.as_str());
        }
        let request = async_nats::Request::new()
            .headers(headers)
            .payload(query.encode_to_vec().into())
            .timeout(Some(timeout));
        let reply = client
            .send_request(self.subject(&Q::subject()), request)
            .await
            .map_err(|error| BusError::Query {
                name: Q::NAME,
                message: error.to_string(),
            })?;
        if let Some(problem) = reply
            .headers
            .as_ref()
            .and_then(|headers| headers.get(QUERY_ERROR_HEADER))
        {
            return Err(BusError::Query {
                name: Q::NAME,
                message: problem.as_str().to_owned(),
            });
        }
        <Q::Reply as prost::Message>::decode(reply.payload).map_err(|error| BusError::Query {
            name: Q::NAME,
            message: format!("undecodable reply: {error}"),
        })
    }
}

/// Answer `Q` with `answer` until `shutdown`, at most `concurrency` at once per process. Every
/// replica of the service joins the queue group named after the service, so each question
/// is answered once. Subscribed when this returns; on shutdown it stops taking questions and
/// finishes the ones in hand.
pub async fn serve<Q, H, Fut>(
    bus: &Bus,
    concurrency: usize,
    answer: H,
    shutdown: CancellationToken,
) -> Result<JoinHandle<()>, BusError>
where
    Q: Query,
    H: Fn(Q) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Q::Reply> + Send + 'static,
{
    let client = bus.jetstream().client();
    let subject = bus.subject(&Q::subject());
    let mut subscriber = client
        .queue_subscribe(subject.clone(), bus.service().to_owned())
        .await
        .map_err(|error| BusError::Query {
            name: Q::NAME,
            message: format!("subscribing to {subject}: {error}"),
        })?;
    // The subscription exists at the server once this returns: no question sent after
    // readiness finds nobody.
    server_round_trip(&client)
        .await
        .map_err(|error| BusError::Query {
            name: Q::NAME,
            message: format!("confirming the subscription: {error}"),
        })?;
    let answer = Arc::new(answer);
    let concurrency = concurrency.max(1);
    let permits = Arc::new(Semaphore::new(concurrency));
    Ok(tokio::spawn(async move {
        loop {
            let permit = tokio::select! {
                () = shutdown.cancelled() => break,
                permit = permits.clone().acquire_owned() => match permit {
                    Ok(permit) => permit,
                    Err(_) => break,
                },
            };
            let message = tokio::select! {
                () = shutdown.cancelled() => break,
                message = subscriber.next() => match message {
                    Some(message) => message,
                    None => break,
                },
            };
            let Some(reply_to) = message.reply.clone() else {
                continue;
            };
            let client = client.clone();
            let answer = Arc::clone(&answer);
            let span = tracing::info_span!("bus.query", query = Q::NAME, otel.kind = "server");
            let pairs: Vec<(String, String)> = message
                .headers
                .as_ref()
                .map(|headers| {
                    headers
                        .iter()
                        .filter_map(|(name, values)| {
                            values
                                .first()
                                .map(|value| (name.to_string(), value.as_str().to_owned()))
                        })
                        .collect()
                })
                .unwrap_or_default();
            platform::telemetry::set_parent_from_pairs(
                &span,
                pairs
                    .iter()
                    .map(|(key, value)| (key.as_str(), value.as_str())),
            );
            tokio::spawn(
                async move {
                    let published = match <Q as prost::Message>::decode(message.payload) {
                        Ok(question) => {
                            let reply = (*answer)(question).await;
                            client.publish(reply_to, reply.encode_to_vec().into()).await
                        }
                        Err(error) => {
                            tracing::warn!(%error, "undecodable query");
                            let mut headers = async_nats::HeaderMap::new();
                            headers.insert(
                                QUERY_ERROR_HEADER,
                                format!("undecodable request: {error}").as_str(),
                            );
                            client
                                .publish_with_headers(reply_to, headers, bytes::Bytes::new())
                                .await
                        }
                    };
                    if let Err(error) = published {
                        tracing::warn!(%error, "could not send the answer");
                    }
                    drop(permit);
                }
                .instrument(span),
            );
        }
        let _ = subscriber.unsubscribe().await;
        // Once the server has the unsubscribe, askers get "no responders" at once rather than
        // waiting out their timeout on a replica that stopped listening (a question routed
        // here before it would be dropped unanswered).
        if let Err(error) = server_round_trip(&client).await {
            tracing::warn!(query = Q::NAME, %error, "could not confirm the unsubscribe");
        }
        // Finish the questions in hand.
        let _ = permits.acquire_many(concurrency as u32).await;
        tracing::info!(query = Q::NAME, "stopped answering");
    }))
}

/// Wait until the NATS server has processed everything this connection sent so far.
/// `Client::flush` only writes the buffer to the socket; the server handles one connection's
/// operations in order, so a message to a private inbox coming back proves it handled the
/// earlier `SUB`/`UNSUB`.
async fn server_round_trip(client: &async_nats::Client) -> Result<(), String> {
    let inbox = client.new_inbox();
    let mut echo = client
        .subscribe(inbox.clone())
        .await
        .map_err(|error| error.to_string())?;
    client
        .publish(inbox, bytes::Bytes::new())
        .await
        .map_err(|error| error.to_string())?;
    let returned = tokio::time::timeout(ROUND_TRIP_TIMEOUT, echo.next())
        .await
        .map_err(|_| format!("no answer from the server within {ROUND_TRIP_TIMEOUT:?}"))?;
    let _ = echo.unsubscribe().await;
    match returned {
        Some(_) => Ok(()),
        None => Err("the connection closed".to_owned()),
    }
}

const ROUND_TRIP_TIMEOUT: Duration = Duration::from_secs(5);
