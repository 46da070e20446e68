//! `prompts.*` against real Postgres and NATS: CRUD, validation, team permissions, changesets
//! and `prompts.today`'s choice by weekday and time zone.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod lifecycle;
mod team_prompts;
mod today;
