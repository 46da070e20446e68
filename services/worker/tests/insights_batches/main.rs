//! The insights handlers apply a fetched batch of `journal_entry.*` events in one transaction.
//! Events are published straight to JetStream (as the api's relay would), mostly before the
//! worker starts, so its consumers find full batches. What must hold:
//! - after a burst of one user's creates, updates, deletes and restores (interleaved across
//!   the four consumers, with replays and redeliveries), the insights equal an oracle computed
//!   here from the events themselves;
//! - a poison event in a batch is dead-lettered alone and the rest apply;
//! - redelivering batches that were applied changes nothing;
//! - a burst of one user's events is a handful of commits, not one per event.
//!
//! `publishing` checks how the changed insights reach clients: one changeset per user and
//! window, and the marks that make that durable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod batches;
mod events;
mod harness;
mod publishing;
