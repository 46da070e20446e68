//! One client's bounded queue of live changesets, and what it hands its stream next.

use domain::ids::{SessionId, UserId};
use std::collections::VecDeque;

use std::sync::{Arc, Mutex};
use std::time::Instant;

use tokio::sync::Notify;

use crate::changesets::LiveChangeset;
use sync_protocol::frames::CloseReason;

/// What a client's queue hands its stream next.
#[derive(Debug)]
pub enum Next {
    Changesets(Vec<Arc<LiveChangeset>>),
    Closed(CloseReason),
}

#[derive(Default)]
struct QueueState {
    items: VecDeque<Arc<LiveChangeset>>,
    bytes: usize,
    closed: Option<CloseReason>,
    /// When the oldest changeset in `items` arrived.
    waiting_since: Option<Instant>,
    /// When the oldest changeset the stream took and has not finished sending arrived.
    sending_since: Option<Instant>,
}

/// One client's buffer of live changesets, bounded in bytes.
pub struct ClientQueue {
    pub id: u64,
    pub user_id: UserId,
    pub session_id: SessionId,
    limit_bytes: usize,
    state: Mutex<QueueState>,
    notify: Notify,
}

impl ClientQueue {
    pub(super) fn new(id: u64, user_id: UserId, session_id: SessionId, limit_bytes: usize) -> Self {
        Self {
            id,
            user_id,
            session_id,
            limit_bytes,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent (plain pushes).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub(super) fn push(&self, changeset: &Arc<LiveChangeset>) {
        let mut state = self.lock();
        if state.closed.is_some() {
            return;
        }
        // An empty queue takes any changeset, so one larger than the limit still goes out.
        if !state.items.is_empty() && state.bytes + changeset.bytes > self.limit_bytes {
            // Too slow: drop what waits (the client resumes from its cursor) and close.
            state.items.clear();
            state.bytes = 0;
            state.waiting_since = None;
            state.closed = Some(CloseReason::SlowClient);
            metrics::counter!("sync_slow_client_disconnects_total").increment(1);
        } else {
            state.bytes += changeset.bytes;
            if state.items.is_empty() {
                state.waiting_since = Some(Instant::now());
            }
            state.items.push_back(Arc::clone(changeset));
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Close the stream with `reason` (revocation, shutdown).
    pub fn close(&self, reason: CloseReason) {
        let mut state = self.lock();
        if state.closed.is_none() {
            state.closed = Some(reason);
        }
        drop(state);
        self.notify.notify_one();
    }

    /// Whatever waits now, or `None` when nothing does.
    pub fn try_next(&self) -> Option<Next> {
        let mut state = self.lock();
        if let Some(reason) = state.closed {
            return Some(Next::Closed(reason));
        }
        if state.items.is_empty() {
            return None;
        }
        state.bytes = 0;
        let taken_since = state.waiting_since.take();
        state.sending_since = state.sending_since.or(taken_since);
        Some(Next::Changesets(state.items.drain(..).collect()))
    }

    /// The stream has written everything it took with [`try_next`](Self::try_next) or
    /// [`next`](Self::next).
    pub fn sent(&self) {
        self.lock().sending_since = None;
    }

    /// When the oldest changeset this client has not been sent yet arrived.
    pub(super) fn oldest_unsent(&self) -> Option<Instant> {
        let state = self.lock();
        match (state.sending_since, state.waiting_since) {
            (Some(sending), Some(waiting)) => Some(sending.min(waiting)),
            (sending, waiting) => sending.or(waiting),
        }
    }

    /// Wait for changesets or a close.
    pub async fn next(&self) -> Next {
        loop {
            let notified = self.notify.notified();
            if let Some(next) = self.try_next() {
                return next;
            }
            notified.await;
        }
    }
}
