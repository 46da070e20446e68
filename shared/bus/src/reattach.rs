//! Getting consumers back after NATS went away (issue 17: live again within 2 s).
//!
//! Three things made the router's consumers come back an unbounded time after NATS did:
//! - the NATS client's reconnection pause grows to 4 s (now at most 250 ms,
//!   `platform::nats::MAX_RECONNECT_DELAY`);
//! - an attach attempt or pull begun on the old connection waited out its own timeout (5 s
//!   for a JetStream request, 5 s + the expiry for a long poll, none at all for a `no_wait`
//!   fetch whose answer died with the server), and the pause between failed attempts grew to
//!   6.4 s;
//! - a pull stream noticed a dead pull request only by missed heartbeats (5 s apart, so 10 s).
//!
//! So the attach loops watch the client's connection count ([`Reconnects`]): an attempt or a
//! pull in progress when the client connects again is abandoned and the consumer re-attached
//! at once; the pause between failed attempts is at most [`MAX_ATTACH_RETRY_DELAY`] and also
//! ends on a reconnection; and pull streams ask for a heartbeat every [`PULL_HEARTBEAT`].

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::streams::Bus;

/// How often a waiting attach loop looks whether the client connected again.
const RECONNECT_POLL: Duration = Duration::from_millis(50);

/// The longest pause between two failed attach attempts.
pub(crate) const MAX_ATTACH_RETRY_DELAY: Duration = Duration::from_secs(1);

/// The idle heartbeat a pull stream asks for: one that hears nothing (no message, no
/// heartbeat) for twice this long reports an error and is re-attached.
pub(crate) const PULL_HEARTBEAT: Duration = Duration::from_secs(1);

/// The client's successful connections so far (the first one and every reconnection).
#[derive(Clone)]
pub(crate) struct Reconnects {
    statistics: Arc<async_nats::Statistics>,
}

impl Reconnects {
    pub(crate) fn new(bus: &Bus) -> Self {
        Self {
            statistics: bus.jetstream().client().statistics(),
        }
    }

    /// The number of connections so far: remember it before an attempt.
    pub(crate) fn current(&self) -> u64 {
        self.statistics.connects.load(Ordering::Relaxed)
    }

    /// Whether the client connected again since `seen` was taken.
    pub(crate) fn since(&self, seen: u64) -> bool {
        self.current() != seen
    }

    /// Resolves once the client has connected again since `seen` was taken.
    pub(crate) async fn after(&self, seen: u64) {
        while !self.since(seen) {
            tokio::time::sleep(RECONNECT_POLL).await;
        }
    }
}

/// The pause after the `failures`-th failed attach attempt in a row: 100 ms, doubling, at
/// most [`MAX_ATTACH_RETRY_DELAY`].
pub(crate) fn attach_retry_delay(failures: u32) -> Duration {
    let doublings = failures.saturating_sub(1).min(10);
    (Duration::from_millis(100) * 2u32.pow(doublings)).min(MAX_ATTACH_RETRY_DELAY)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attach_retries_are_at_most_a_second_apart() {
        assert_eq!(attach_retry_delay(1), Duration::from_millis(100));
        assert_eq!(attach_retry_delay(2), Duration::from_millis(200));
        assert_eq!(attach_retry_delay(5), MAX_ATTACH_RETRY_DELAY);
        assert_eq!(attach_retry_delay(u32::MAX), MAX_ATTACH_RETRY_DELAY);
    }
}
