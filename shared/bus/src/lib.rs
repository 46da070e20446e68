//! The bus (replaces pg-tbus): typed events, tasks and sync changes on NATS JetStream.
//!
//! - [`streams`]: the EVENTS, TASKS and CHANGES streams, provisioned idempotently, under an
//!   optional namespace (tests use one each, so they can share a NATS server).
//! - [`outbox`]: write messages in the caller's transaction; [`relay`] publishes committed
//!   rows with `Nats-Msg-Id` = outbox id, woken in process by the writes.
//! - [`router`]: `BusRouter::new(bus, state).on::<E>(handler).task::<T>(handler)` — plain
//!   async fns with extractors ([`State`], [`Msg`], [`Meta`]), run through tower layers that
//!   trace, ack, retry with backoff and dead-letter.
//! - [`batch`]: `on_batch::<E>(handler)` — one call (one transaction) per fetched batch, with
//!   the same per-message acks, retries and dead letters (a failed batch is retried one by one).
//! - [`consumer_gauges`]: per-consumer pending, ack-pending and redelivered gauges.
//! - [`dead_letter`]: the dead-letter store, in-service re-drive, and the operator command.
//! - [`query`]: typed NATS request/reply (`queries.<name>`), for synchronous questions to the
//!   service that owns the data.
//! - [`idempotency`]: record a message id in the same transaction as a handler's effect.
//! - [`every_replica`]: events every replica must see (each on an ordered consumer of its own),
//!   e.g. session revocations; [`connection`] restarts such consumers at once when the NATS
//!   connection is replaced.
//! - [`maintenance`]: the daily retention purge of the bus's own tables.
//! - [`tables`]: the bus's tables' migrations, applied with every service's own.
//! - [`wal_outbox`]: the outbox in the write-ahead log (`pg_logical_emit_message`), read back
//!   from a logical replication slot in commit order.
//! - [`service`]: the one service skeleton (start-up, consumers, relay, HTTP) and its
//!   shutdown order: handlers drain, then the relay publishes what they wrote, then exit.

pub mod batch;
pub mod connection;
pub mod consumer_gauges;
pub mod dead_letter;
pub mod every_replica;
pub mod headers;
pub mod idempotency;
pub mod maintenance;
pub mod outbox;
pub mod permissions;
pub mod query;
pub mod relay;
pub mod router;
pub mod service;
pub mod streams;
pub mod tables;
pub mod wal_outbox;

mod error;
mod pipeline;
mod reattach;

pub use batch::{Batch, Batched};
pub use error::{BusError, HandlerError};
pub use router::{BusRouter, Meta, Msg, State};
pub use streams::Bus;
