//! Session revocation (`session.revoked`, ARCHITECTURE §5 "a revoked session's streams
//! close"). Every replica must see every revocation, so each follows the event with an
//! ordered consumer of its own (not the service's shared durable one). It starts an hour back
//! so a replica that just started still refuses tokens of sessions revoked before it did
//! (sync tokens live minutes).

use domain::ids::SessionId;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bus::Bus;
use bus::every_replica::EveryReplica;
use messages::journal::v1::SessionRevoked;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

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

/// Follow `session.revoked` on this replica's own consumer until `shutdown`, closing the
/// streams of revoked sessions and refusing their tokens from then on.
pub fn follow(
    bus: Bus,
    revoked: RevokedSessions,
    hub: Hub,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    EveryReplica::<SessionRevoked>::new(bus, "sync-session-revoked", LOOKBACK).follow(
        None,
        shutdown,
        move |event: SessionRevoked| {
            let Ok(session_id) = event.parse_session_id() else {
                return;
            };
            revoked.insert(session_id);
            let closed = hub.close_session(session_id, CloseReason::SessionRevoked);
            if closed > 0 {
                tracing::info!(%session_id, closed, "closed the streams of a revoked session");
            }
        },
        // The lookback (longer than any token lives) covers an outage of the consumer.
        || {},
    )
}
