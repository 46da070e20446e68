//! In-process wake-ups: every outbox write of this process wakes this process's relay.
//!
//! Why not LISTEN/NOTIFY: Postgres 15 signals *every* backend that listens anywhere in the
//! database on each NOTIFY, whatever its channel, and each signalled backend runs a
//! transaction to read the queue. With five services' relays (and their re-drive listeners)
//! in one database, one NOTIFY cost about ten commits, most of the ~10 commits per create
//! `system-create` measured at 500/s. NOTIFY also serializes the commits of notifying
//! transactions on one lock. A service's outbox rows are written by that service, whose
//! process runs the relay, so the process itself knows when to look.
//!
//! The wake-up comes when the row is *written*, before its transaction commits, so the relay
//! cannot know when the row becomes visible. It counts: rows written here minus rows a relay
//! here has claimed since is the number it still expects. While rows are expected and the
//! outbox looks empty, it looks again after 1, 2, 4 … 512 ms (about 1 s in all); a row that
//! never shows up (its transaction rolled back, or a relay of another replica took it) is then
//! written off, and the relay's slow poll remains the safety net for rows no wake-up announces
//! (written by another process, or before this relay started).

use std::sync::LazyLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::watch;

/// Rows this process has written to any outbox, ever. A watch channel, so every relay of the
/// process (tests run several) sees a write that happened while it was busy publishing.
static WRITTEN: LazyLock<watch::Sender<u64>> = LazyLock::new(|| watch::Sender::new(0));
/// Of [`WRITTEN`], the rows a relay of this process has claimed or written off. Never above it.
static SETTLED: AtomicU64 = AtomicU64::new(0);

/// How long a relay waits for expected rows to commit before looking again, in turn; after
/// the last it writes them off.
const RECHECK_DELAYS: [Duration; 10] = [
    Duration::from_millis(1),
    Duration::from_millis(2),
    Duration::from_millis(4),
    Duration::from_millis(8),
    Duration::from_millis(16),
    Duration::from_millis(32),
    Duration::from_millis(64),
    Duration::from_millis(128),
    Duration::from_millis(256),
    Duration::from_millis(512),
];

/// Announce `rows` outbox rows written in a transaction of this process.
pub(crate) fn rows_written(rows: usize) {
    if rows == 0 {
        return;
    }
    WRITTEN.send_modify(|written| *written = written.saturating_add(rows as u64));
}

/// One relay's view of the wake-ups.
pub(super) struct Wakeups {
    writes: watch::Receiver<u64>,
    /// How many re-checks in a row found the expected rows missing.
    rechecks: usize,
}

impl Wakeups {
    pub(super) fn new() -> Self {
        Self {
            writes: WRITTEN.subscribe(),
            rechecks: 0,
        }
    }

    /// Rows written here that no relay here has claimed yet (nor written off).
    pub(super) fn expected(&self) -> u64 {
        WRITTEN
            .borrow()
            .saturating_sub(SETTLED.load(Ordering::Acquire))
    }

    /// A drain claimed `rows` rows: they are no longer expected. Rows written by another
    /// process count too (they cannot be told apart), which at worst ends a re-check early;
    /// the slow poll then finds what is left.
    pub(super) fn claimed(&mut self, rows: u64) {
        if rows == 0 {
            return;
        }
        self.rechecks = 0;
        let written = *WRITTEN.borrow();
        let _ = SETTLED.fetch_update(Ordering::AcqRel, Ordering::Acquire, |settled| {
            Some(settled.saturating_add(rows).min(written))
        });
    }

    /// After a drain that left the outbox empty: how long to wait before looking again for
    /// rows still expected, or `None` to wait for the next write (or the slow poll).
    pub(super) fn recheck_delay(&mut self) -> Option<Duration> {
        if self.expected() == 0 {
            self.rechecks = 0;
            return None;
        }
        match RECHECK_DELAYS.get(self.rechecks) {
            Some(delay) => {
                self.rechecks += 1;
                Some(*delay)
            }
            None => {
                // Rolled back, or published by another replica's relay: stop expecting them.
                let written = *WRITTEN.borrow();
                SETTLED.fetch_max(written, Ordering::AcqRel);
                self.rechecks = 0;
                None
            }
        }
    }

    /// Resolves at the next write of this process (at once if one happened since the last
    /// call). Never resolves if wake-ups are off.
    pub(super) async fn next_write(&mut self) {
        // The sender is a static and never dropped, so `changed` cannot fail; if it did, the
        // slow poll would still run.
        if self.writes.changed().await.is_err() {
            std::future::pending::<()>().await;
        }
        self.rechecks = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The counters are process-wide; this is the only unit test that writes them.
    #[tokio::test]
    async fn written_rows_wake_and_are_expected_until_claimed_or_written_off() {
        let mut wakeups = Wakeups::new();
        let before = wakeups.expected();
        rows_written(3);
        tokio::time::timeout(Duration::from_secs(5), wakeups.next_write())
            .await
            .unwrap_or_else(|_| panic!("a write must wake the relay"));
        assert_eq!(wakeups.expected(), before + 3);

        wakeups.claimed(before + 2);
        assert_eq!(wakeups.expected(), 1);
        // One row still expected: re-check with growing delays, then write it off.
        let delays: Vec<Duration> = std::iter::from_fn(|| wakeups.recheck_delay()).collect();
        assert_eq!(delays, RECHECK_DELAYS.to_vec());
        assert_eq!(wakeups.expected(), 0);
        assert_eq!(wakeups.recheck_delay(), None);

        // Claims never push the settled count past what was written.
        wakeups.claimed(1_000);
        rows_written(1);
        assert_eq!(wakeups.expected(), 1);
    }
}
