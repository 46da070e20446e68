use std::fmt;

/// Failures of the bus machinery (not of handlers).
#[derive(Debug, thiserror::Error)]
pub enum BusError {
    #[error("postgres: {0}")]
    Postgres(#[from] sqlx::Error),
    #[error("jetstream {operation}: {message}")]
    JetStream {
        operation: &'static str,
        message: String,
    },
    #[error("message encoding: {0}")]
    Encode(String),
    #[error("query {name}: {message}")]
    Query { name: &'static str, message: String },
    #[error(
        "the WAL outbox (BUS_OUTBOX=wal) needs replication slot `{slot}`, which Postgres could \
         not make (it needs wal_level=logical and a role with REPLICATION): {message}"
    )]
    WalOutbox { slot: String, message: String },
    #[error("the WAL outbox's replication stream of slot `{slot}`: {message}")]
    WalStream { slot: String, message: String },
    #[error("DATABASE_URL cannot be used for the WAL outbox's replication stream: {0}")]
    ReplicationUrl(String),
}

impl BusError {
    pub(crate) fn jetstream(operation: &'static str, error: impl fmt::Display) -> Self {
        Self::JetStream {
            operation,
            message: error.to_string(),
        }
    }
}

/// What a handler returns when it fails. Any error converts into a retryable one with `?`;
/// [`HandlerError::permanent`] sends the message straight to the dead letters.
#[derive(Debug)]
pub struct HandlerError {
    message: String,
    permanent: bool,
    retry_after: Option<std::time::Duration>,
}

impl HandlerError {
    /// Try again later (up to the message's retry limit).
    pub fn retry(error: impl fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            permanent: false,
            retry_after: None,
        }
    }

    /// Try again, but not before `delay` (e.g. a server's `Retry-After`): the retry waits
    /// for the longer of `delay` and the message's own backoff.
    pub fn retry_after(error: impl fmt::Display, delay: std::time::Duration) -> Self {
        Self {
            message: error.to_string(),
            permanent: false,
            retry_after: Some(delay),
        }
    }

    /// Retrying cannot help (bad payload, a referenced row is gone): dead-letter now.
    pub fn permanent(error: impl fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            permanent: true,
            retry_after: None,
        }
    }

    /// The shortest wait before the next attempt the handler asked for, if any.
    pub fn min_retry_delay(&self) -> Option<std::time::Duration> {
        self.retry_after
    }

    pub fn is_permanent(&self) -> bool {
        self.permanent
    }

    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl<E: std::error::Error> From<E> for HandlerError {
    fn from(error: E) -> Self {
        Self::retry(error)
    }
}
