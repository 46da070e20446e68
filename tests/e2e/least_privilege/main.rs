//! Issue 19: least privilege. Each service logs in to PostgreSQL as a role owning its schema
//! and nothing else, and to NATS as a user allowed only its own subjects; the NATS streams
//! get their replicas and storage from configuration.
//!
//! The NATS tests run a private `nats-server` with the checked-in
//! `deploy/k8s/nats/accounts.conf` (the file production uses), the database tests a fresh
//! database per test on the shared server. Roles are cluster-wide: the bootstrap is
//! idempotent and safe when parallel tests run it at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;
mod jetstream;
mod nats_server;
mod nats_users;
mod postgres_roles;
mod whole_system;
