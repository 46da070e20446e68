//! What every service shares: configuration from the environment, telemetry, the Postgres
//! pool with per-schema migrations, the NATS connection, the HTTP server with health,
//! readiness and metrics, the process-wide shutdown token, and object storage (S3).

pub mod bootstrap;
pub mod config;
pub mod db;
pub mod health;
pub mod http;
pub mod infra;
pub mod metrics;
pub mod nats;
pub mod roles;
pub mod s3;
pub mod shutdown;
pub mod telemetry;

mod error;

pub use error::PlatformError;
