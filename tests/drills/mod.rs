//! The pieces of the fault drills (`e2e/drills.rs`, issue 17): a cluster of the five real
//! binaries on a private NATS and a private Postgres whose processes a drill may kill and
//! restart, a steady load of creates that records every acknowledged one, SSE clients that
//! follow their users' rows as an offline-first app does, and the checks a drill ends with.

pub mod client;
mod cluster;
pub mod load;
mod node;
mod verdict;

use std::time::Duration;

use uuid::Uuid;

pub use client::SseClient;
pub use cluster::{Cluster, Shape, User};
pub use load::{Load, LoadReport};
pub use node::Node;
pub use verdict::{Bounds, Verdict};

/// How long every eventual condition of a drill may take (a busy 2-core machine).
pub const WAIT: Duration = Duration::from_secs(60);

/// The recovery bounds of issue 17.
pub const NATS_RECOVERY_BOUND: Duration = Duration::from_secs(2);
pub const POSTGRES_RECOVERY_BOUND: Duration = Duration::from_secs(1);
pub const WORKER_REDO_BOUND: Duration = Duration::from_secs(10);

/// The random timing of a drill, from a seed (`DRILL_SEED`, printed so a failure can be
/// replayed; the processes' own timing still varies). A splitmix64 generator: the sequence
/// for a seed must not change with a dependency's version.
pub struct Timing {
    pub seed: u64,
    state: u64,
}

impl Timing {
    /// The seed from `DRILL_SEED`, or a fresh one; printed either way.
    pub fn from_env(drill: &str) -> Self {
        let seed = match std::env::var("DRILL_SEED") {
            Ok(text) => text
                .parse()
                .unwrap_or_else(|_| panic!("DRILL_SEED must be a number, not {text:?}")),
            Err(_) => Uuid::new_v4().as_u64_pair().0,
        };
        eprintln!("drill {drill}: seed {seed} (replay with DRILL_SEED={seed})");
        Self { seed, state: seed }
    }

    fn next(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }

    /// A duration between `from` and `to` (milliseconds).
    pub fn millis(&mut self, from: u64, to: u64) -> Duration {
        Duration::from_millis(from + self.below(to.saturating_sub(from) + 1))
    }
}

/// Rounds per drill: `DRILL_ROUNDS`, default 2.
pub fn rounds() -> usize {
    std::env::var("DRILL_ROUNDS")
        .ok()
        .and_then(|text| text.parse().ok())
        .unwrap_or(2)
}
