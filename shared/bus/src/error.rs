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
}

impl HandlerError {
    /// Try again later (up to the message's retry limit).
    pub fn retry(error: impl fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            permanent: false,
        }
    }

    /// Retrying cannot help (bad payload, a referenced row is gone): dead-letter now.
    pub fn permanent(error: impl fmt::Display) -> Self {
        Self {
            message: error.to_string(),
            permanent: true,
        }
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
