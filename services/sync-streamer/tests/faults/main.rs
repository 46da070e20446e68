//! Faults under the streamer (issue 20 item 11): NATS stops and comes back while SSE clients
//! follow a user's rows. Writes made before, during (they commit in Postgres; the api's
//! outbox relay publishes them once NATS is back) and after the outage all reach the clients
//! exactly as the database has them, with no gap in the cursor, and the service recovers on
//! its own: unready while NATS is down, ready again after (with a consumer on CHANGES), never
//! exiting.
//!
//! Before the fix these failed: the tail kept reporting `changes_tail: ok` with NATS down, and
//! after a restart it waited ~15 s on the ordered consumer the server had lost while `/readyz`
//! said ready; a replica that had tailed nothing yet restarted "from the end" and skipped the
//! changesets written during the outage (its clients never got them).
//!
//! The tests own their NATS server (`PrivateNats`); Postgres is the shared one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client;
#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod nats_restart;
mod recovery_bounds;
mod recovery_probes;
