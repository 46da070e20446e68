//! `journalEntries.*` against real Postgres and NATS: the procedures, validation, who may see
//! and change what, soft delete, keyset pagination, filters, edit conflicts, changesets and
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod lifecycle;
mod listing;
mod visibility;
