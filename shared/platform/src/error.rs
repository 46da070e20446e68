use std::io;

/// Failures of the shared infrastructure layer. Each variant names the dependency that
/// failed so an operator reading one log line knows where to look.
#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("migrating schema `{schema}`: {source}")]
    Migrate {
        schema: String,
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    #[error("nats: could not connect to {url}: {source}")]
    NatsConnect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    #[error("http server: {0}")]
    Serve(#[source] io::Error),
    #[error("telemetry: {0}")]
    Telemetry(String),
}
