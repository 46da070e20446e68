//! The open API's REST endpoints against real Postgres and NATS: CRUD in the API team's team
//! scope, validation and malformed bodies as 4xx JSON, the monthly quota and the per-key rate
//! (429 with `Retry-After`), `X-RateLimit-*` headers, and one complete request log row per
//! request, refused ones included, without the key in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod openapi_document;
mod refusals;
mod request_logs;
mod resources;
