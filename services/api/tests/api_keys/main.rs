//! API teams and API keys against real Postgres and NATS: the procedures, roles and tiers,
//! key verification through `GET /api/v1/whoami` (cache, single flight, revocation across
//! replicas, IP allow-lists behind and without trusted proxies, failure rate limits), and the
//! key never stored or logged.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod client_ip;
#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod lifecycle;
mod permissions;
mod replica_cache;
