//! The sync stream end to end: the api writes through its outbox, the relay publishes
//! CHANGES, the streamer materializes and streams; clients read SSE over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod connecting;
mod disconnects_and_failover;
mod fixtures;
mod membership;
mod waiting_transactions;
