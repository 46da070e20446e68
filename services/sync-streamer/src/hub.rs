//! The replica's view of live changes: one ordered consumer tails CHANGES, keeps a bounded
//! ring of recent changesets by sequence, and hands each changeset to the queues of the
//! clients following its scope. A client registers before it reads its catch-up snapshot and
//! learns the tail's position at that moment: everything after it will be in its queue, and
//! what lies between the snapshot's watermark and that position comes from the ring (or from
//! JetStream when the ring no longer reaches back), so the handoff has no gap.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;

use crate::connection::{Backoff, ConnectionWatch, pause_until_connected};
use crate::frames::{CloseReason, LiveChangeset};

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
    pub user_id: uuid::Uuid,
    pub session_id: uuid::Uuid,
    limit_bytes: usize,
    state: Mutex<QueueState>,
    notify: Notify,
}

impl ClientQueue {
    fn lock(&self) -> std::sync::MutexGuard<'_, QueueState> {
        // A panic while holding this lock cannot leave the queue inconsistent (plain pushes).
        self.state
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn push(&self, changeset: &Arc<LiveChangeset>) {
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
    fn oldest_unsent(&self) -> Option<Instant> {
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

struct HubState {
    /// The sequence of the last changeset the tail handed out.
    position: u64,
    ring: VecDeque<Arc<LiveChangeset>>,
    subscribers: HashMap<String, HashMap<u64, Arc<ClientQueue>>>,
    clients: HashMap<u64, (Arc<ClientQueue>, Vec<String>)>,
    streams_per_user: HashMap<uuid::Uuid, usize>,
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
        user_id: uuid::Uuid,
        session_id: uuid::Uuid,
        scopes: Vec<String>,
        limit_bytes: usize,
        max_per_user: usize,
    ) -> Option<Registration> {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let queue = Arc::new(ClientQueue {
            id,
            user_id,
            session_id,
            limit_bytes,
            state: Mutex::new(QueueState::default()),
            notify: Notify::new(),
        });
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
    pub fn close_session(&self, session_id: uuid::Uuid, reason: CloseReason) -> usize {
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
    stream
        .create_consumer(consumer::pull::OrderedConfig {
            deliver_policy: consumer::DeliverPolicy::ByStartSequence {
                start_sequence: start.max(1),
            },
            ..Default::default()
        })
        .await
        .map_err(|error| error.to_string())?
        .messages()
        .await
        .map_err(|error| error.to_string())
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
