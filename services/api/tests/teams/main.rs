//! App teams against real Postgres and NATS: procedures, roles, invitations, the last-owner
//! rule under concurrency, changesets and events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod invitations;
mod lifecycle;
mod ownership;
mod roles;
