//! The notifier against real Postgres and NATS and a local SuprSend stand-in that checks
//! auth and the request shape and fails on request: delivery and request shape, idempotency
//! (a redelivery never sends twice), retries of 429/5xx/timeouts honouring `Retry-After`,
//! dead letters for other client errors, user identification.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod delivery;
mod fixtures;
mod purge;
mod recipients;
#[path = "../support/mod.rs"]
mod support;
