//! Open API request logs: one row per request with a valid key, refused ones included, written
//! off the request path by a background writer in batches; app-team admins read them with
//! `logs.list`. Rows are bounded whatever the client sends: an allow-list of headers, each
//! value cut, credentials redacted by name and by value. Requests without a valid key belong
//! to no team: they are counted, and only a sample per client IP is written. The daily
//! `purge-retention` job deletes rows past `REQUEST_LOG_RETENTION_DAYS`.
//!
//! Backpressure, not loss: the queue to the writer is bounded, and [`RequestLogSink::record`]
//! waits for room, so when Postgres falls behind the open API slows down instead of dropping
//! log rows. On shutdown the writer drains the queue before the process exits
//! ([`RequestLogWriter::finish`]).

pub mod procedures;
#[cfg(test)]
mod tests;
pub mod types;
pub mod writer;

// What the start-up and the open API use.
pub use self::writer::{DEFAULT_QUEUE_CAPACITY, RequestLogSink, RequestLogWriter, spawn_writer};

use self::procedures::list;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new().query("logs.list", list)
}
