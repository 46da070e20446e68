//! Hostile input at the api's edge (issue 15): each case was reproduced against a running
//! system before its fix. CSRF through methods other than POST, NUL characters, timestamps
//! out of range, integers written as floats, and a Postgres outage.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod field_errors;
mod methods;
mod postgres_outage;
mod wall;
mod wall_checks;
mod wall_values;

/// The origin a cross-site attacker sends (the method tests and the wall).
const HOSTILE_ORIGIN: &str = "https://evil.example";
