//! The replica's view of live changes: one ordered consumer tails CHANGES, keeps a bounded
//! ring of recent changesets by sequence, and hands each changeset to the queues of the
//! clients following its scope. A client registers before it reads its catch-up snapshot and
//! learns the tail's position at that moment: everything after it will be in its queue, and
//! what lies between the snapshot's watermark and that position comes from the ring (or from
//! JetStream when the ring no longer reaches back), so the handoff has no gap.

mod queue;
mod tail;

pub use queue::{ClientQueue, Next};
pub use tail::{ordered_from, read_range, run_tail};

use domain::ids::{SessionId, UserId};
use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::Notify;

use crate::changesets::LiveChangeset;
use sync_protocol::frames::CloseReason;

struct HubState {
    /// The sequence of the last changeset the tail handed out.
    position: u64,
    ring: VecDeque<Arc<LiveChangeset>>,
    subscribers: HashMap<String, HashMap<u64, Arc<ClientQueue>>>,
    clients: HashMap<u64, (Arc<ClientQueue>, Vec<String>)>,
    streams_per_user: HashMap<UserId, usize>,
}

/// The per-replica hub (cheap to clone).
#[derive(Clone)]
pub struct Hub {
    inner: Arc<HubInner>,
}

struct HubInner {
    state: Mutex<HubState>,
    ring_capacity: usize,
    next_id: AtomicU64,
    /// Whether a consumer is delivering CHANGES now (readiness).
    tailing: AtomicBool,
    /// Whether `position` is the tail's (it has run once): what a stream's handoff needs.
    positioned: AtomicBool,
    /// Wakes waiters for a position (tests, materializer waits).
    advanced: Notify,
    /// Tells the tail to replace its consumer (the lag monitor found it stalled).
    stalled: Notify,
}

/// A client's registration; dropping it unregisters the client.
pub struct Registration {
    hub: Hub,
    pub queue: Arc<ClientQueue>,
    /// The tail's position when the client registered.
    pub position: u64,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.hub.unregister(self.queue.id);
    }
}

impl Hub {
    pub fn new(ring_capacity: usize) -> Self {
        Self {
            inner: Arc::new(HubInner {
                state: Mutex::new(HubState {
                    position: 0,
                    ring: VecDeque::new(),
                    subscribers: HashMap::new(),
                    clients: HashMap::new(),
                    streams_per_user: HashMap::new(),
                }),
                ring_capacity: ring_capacity.max(1),
                next_id: AtomicU64::new(1),
                tailing: AtomicBool::new(false),
                positioned: AtomicBool::new(false),
                advanced: Notify::new(),
                stalled: Notify::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HubState> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Whether a consumer is delivering CHANGES to the hub now (readiness). False from the
    /// moment the NATS connection drops until a new consumer runs after it comes back.
    pub fn is_tailing(&self) -> bool {
        self.inner.tailing.load(Ordering::Relaxed)
    }

    /// Whether the tail has started once, so [`position`](Self::position) is where it is
    /// (a stream's handoff needs that; it stays true while NATS is away: the catch-up reads
    /// Postgres and the queue fills once the tail resumes from the position).
    pub fn has_position(&self) -> bool {
        self.inner.positioned.load(Ordering::Relaxed)
    }

    pub fn position(&self) -> u64 {
        self.lock().position
    }

    /// Open streams on this replica.
    pub fn client_count(&self) -> usize {
        self.lock().clients.len()
    }

    /// How long the oldest changeset that reached this replica's hub and is not yet written
    /// to its client has waited, over all open streams (zero when none waits).
    pub fn oldest_unsent_age(&self) -> Duration {
        let queues: Vec<Arc<ClientQueue>> = self
            .lock()
            .clients
            .values()
            .map(|(queue, _)| Arc::clone(queue))
            .collect();
        queues
            .iter()
            .filter_map(|queue| queue.oldest_unsent())
            .min()
            .map_or(Duration::ZERO, |oldest| oldest.elapsed())
    }

    /// Make the tail replace its consumer and resume after its position.
    pub(crate) fn restart_tail(&self) {
        self.inner.stalled.notify_waiters();
    }

    /// Register a client for `scopes`, unless the user already has `max_per_user` streams.
    pub fn register(
        &self,
        user_id: UserId,
        session_id: SessionId,
        scopes: Vec<String>,
        limit_bytes: usize,
        max_per_user: usize,
    ) -> Option<Registration> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ClientQueue::new(id, user_id, session_id, limit_bytes));
        let mut state = self.lock();
        let open = state.streams_per_user.entry(user_id).or_default();
        if *open >= max_per_user {
            return None;
        }
        *open += 1;
        for scope in &scopes {
            state
                .subscribers
                .entry(scope.clone())
                .or_default()
                .insert(id, Arc::clone(&queue));
        }
        state.clients.insert(id, (Arc::clone(&queue), scopes));
        let position = state.position;
        drop(state);
        metrics::gauge!("sync_open_streams").increment(1.0);
        Some(Registration {
            hub: self.clone(),
            queue,
            position,
        })
    }

    fn unregister(&self, id: u64) {
        let mut state = self.lock();
        let Some((queue, scopes)) = state.clients.remove(&id) else {
            return;
        };
        for scope in scopes {
            if let Some(subscribers) = state.subscribers.get_mut(&scope) {
                subscribers.remove(&id);
                if subscribers.is_empty() {
                    state.subscribers.remove(&scope);
                }
            }
        }
        if let Some(open) = state.streams_per_user.get_mut(&queue.user_id) {
            *open = open.saturating_sub(1);
            if *open == 0 {
                state.streams_per_user.remove(&queue.user_id);
            }
        }
        metrics::gauge!("sync_open_streams").decrement(1.0);
    }

    /// Close every stream of `session_id` (revocation).
    pub fn close_session(&self, session_id: SessionId, reason: CloseReason) -> usize {
        let state = self.lock();
        let mut closed = 0;
        for (queue, _) in state.clients.values() {
            if queue.session_id == session_id {
                queue.close(reason);
                closed += 1;
            }
        }
        closed
    }

    /// Close every stream (shutdown).
    pub fn close_all(&self, reason: CloseReason) {
        let state = self.lock();
        for (queue, _) in state.clients.values() {
            queue.close(reason);
        }
    }

    /// The changesets with sequences in `from..=to` from the ring, or `None` when the ring
    /// does not reach back to `from`.
    pub fn range(&self, from: u64, to: u64) -> Option<Vec<Arc<LiveChangeset>>> {
        if from > to {
            return Some(Vec::new());
        }
        let state = self.lock();
        // The ring holds every changeset after `ring_start` up to `position`.
        let ring_start = state
            .ring
            .front()
            .map_or(state.position, |first| first.seq.saturating_sub(1));
        if from <= ring_start || to > state.position {
            return None;
        }
        Some(
            state
                .ring
                .iter()
                .filter(|changeset| changeset.seq >= from && changeset.seq <= to)
                .cloned()
                .collect(),
        )
    }

    /// Hand a changeset from the tail to its scope's clients.
    fn publish(&self, changeset: LiveChangeset) {
        let changeset = Arc::new(changeset);
        let mut state = self.lock();
        if changeset.seq <= state.position {
            return;
        }
        state.position = changeset.seq;
        if state.ring.len() >= self.inner.ring_capacity {
            state.ring.pop_front();
        }
        state.ring.push_back(Arc::clone(&changeset));
        if let Some(subscribers) = state.subscribers.get(&changeset.scope) {
            for queue in subscribers.values() {
                queue.push(&changeset);
            }
        }
        drop(state);
        self.inner.advanced.notify_waiters();
    }

    /// Skip to `position` (a message that is not a changeset still moves the tail).
    fn advance_to(&self, position: u64) {
        let mut state = self.lock();
        if position > state.position {
            state.position = position;
            // The ring must stay contiguous: a hole means it no longer answers older ranges.
            state.ring.clear();
        }
    }

    /// Wait until the tail has reached `seq` (or the timeout passes); returns whether it did.
    pub async fn wait_for(&self, seq: u64, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let notified = self.inner.advanced.notified();
            if self.position() >= seq {
                return true;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                return self.position() >= seq;
            }
        }
    }
}
