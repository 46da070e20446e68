//! Session revocation (`session.revoked`, ARCHITECTURE §5 "a revoked session's streams
//! close"). Every replica must see every revocation, so each follows the event with an
//! ordered consumer of its own (not the service's shared durable one). It starts an hour back
//! so a replica that just started still refuses tokens of sessions revoked before it did
//! (sync tokens live minutes).

use domain::ids::SessionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use messages::definition::BusMessage;
use messages::journal::v1::SessionRevoked;
use prost::Message;
use tokio_util::sync::CancellationToken;

use crate::connection::{Backoff, ConnectionWatch, pause_until_connected};
use crate::hub::Hub;
use sync_protocol::frames::CloseReason;

/// How far back revocations are remembered (longer than any sync token lives).
pub const LOOKBACK: Duration = Duration::from_secs(3600);

/// Sessions revoked recently.
#[derive(Clone, Default)]
pub struct RevokedSessions {
    sessions: Arc<Mutex<HashMap<SessionId, Instant>>>,
}

impl RevokedSessions {
    pub fn contains(&self, session_id: SessionId) -> bool {
        self.lock().contains_key(&session_id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Instant>> {
        self.sessions
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn insert(&self, session_id: SessionId) {
        let mut sessions = self.lock();
        sessions.retain(|_, at| at.elapsed() < LOOKBACK);
        sessions.insert(session_id, Instant::now());
    }
}

/// Follow `session.revoked` until `shutdown`, closing the streams of revoked sessions.
pub async fn run(
    jetstream: jetstream::Context,
    events_stream: String,
    subject: String,
    revoked: RevokedSessions,
    hub: Hub,
    shutdown: CancellationToken,
) {
    let mut backoff = Backoff::default();
    while !shutdown.is_cancelled() {
        let mut ran = false;
        if let Err(error) = follow(
            &jetstream,
            &events_stream,
            &subject,
            &revoked,
            &hub,
            &shutdown,
            &mut ran,
        )
        .await
        {
            if ran {
                backoff.reset();
            }
            tracing::warn!(%error, "session.revoked listener failed; restarting");
            if !pause_until_connected(&jetstream.client(), backoff.next_delay(), &shutdown).await {
                break;
            }
        }
    }
}

async fn follow(
    jetstream: &jetstream::Context,
    events_stream: &str,
    subject: &str,
    revoked: &RevokedSessions,
    hub: &Hub,
    shutdown: &CancellationToken,
    ran: &mut bool,
) -> Result<(), String> {
    let connection = ConnectionWatch::new(jetstream.client());
    let setup = async {
        let stream = jetstream
            .get_stream(events_stream)
            .await
            .map_err(|error| error.to_string())?;
        let start_time = time::OffsetDateTime::now_utc() - LOOKBACK;
        stream
            .create_consumer(consumer::pull::OrderedConfig {
                // named, so it is created through the subject that carries its filter
                // (what the NATS permissions allow: bus::permissions)
                name: Some(bus::permissions::ordered_consumer_name(
                    "sync-session-revoked",
                )),
                filter_subject: subject.to_owned(),
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            })
            .await
            .map_err(|error| error.to_string())?
            .messages()
            .await
            .map_err(|error| error.to_string())
    };
    // A request sent as the connection drops would wait out its whole timeout.
    let mut messages = tokio::select! {
        messages = setup => messages?,
        () = connection.lost() => return Err("the NATS connection was lost while creating the consumer".to_owned()),
        () = shutdown.cancelled() => return Ok(()),
    };
    *ran = true;
    loop {
        let message = tokio::select! {
            message = messages.next() => message,
            () = shutdown.cancelled() => return Ok(()),
            // Its consumer may be gone with the connection (see `ConnectionWatch`).
            () = connection.lost() => return Err("the NATS connection was lost".to_owned()),
        };
        let message = message
            .ok_or("the consumer ended")?
            .map_err(|error| error.to_string())?;
        let Ok(event) = SessionRevoked::decode(message.payload.as_ref()) else {
            tracing::warn!("skipping an undecodable {}", SessionRevoked::NAME);
            continue;
        };
        let Ok(session_id) = SessionId::parse_field("session_id", &event.session_id) else {
            continue;
        };
        revoked.insert(session_id);
        let closed = hub.close_session(session_id, CloseReason::SessionRevoked);
        if closed > 0 {
            tracing::info!(%session_id, closed, "closed the streams of a revoked session");
        }
    }
}
