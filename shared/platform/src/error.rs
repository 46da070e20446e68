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
    #[error(
        "postgres: schema `{schema}` does not exist and this database user may not create it: \
         run the roles bootstrap first (`cargo xtask db roles`, the compose init script or the \
         k8s job `postgres-roles`; see docs/operations.md)"
    )]
    SchemaMissing { schema: String },
    #[error("nats: could not connect to {url}: {source}")]
    NatsConnect {
        url: String,
        #[source]
        source: async_nats::ConnectError,
    },
    /// The server refused the credentials (or asked for some and none were configured).
    #[error(
        "nats: {url} refused the connection: authorization violation ({}); check NATS_USER and \
         NATS_PASSWORD",
        refused_user(.user)
    )]
    NatsAuth { url: String, user: Option<String> },
    #[error("http server: {0}")]
    Serve(#[source] io::Error),
    #[error("telemetry: {0}")]
    Telemetry(String),
}

/// Why NATS refused: the password (never shown) of a named user, or no user at all.
fn refused_user(user: &Option<String>) -> String {
    match user {
        Some(user) => format!("wrong password for user `{user}`, or no such user"),
        None => "the server requires a user: set NATS_USER and NATS_PASSWORD".to_owned(),
    }
}
