//! Subscriptions against real Postgres and NATS: the plans, a team's subscription and usage
//! history (RPC and REST), plan changes (owners only, limits followed by every replica, a
//! downgrade below usage refusing the next request, no race past a small quota), periods
//! kept when they roll over, API access disabled and restored, and the events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../common/mod.rs"]
mod common;
mod fixtures;
mod plans;
mod replicas;
mod usage_periods;
