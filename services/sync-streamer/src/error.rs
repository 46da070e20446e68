//! Errors: [`Error`] stops the service; [`StreamError`] refuses one stream request with a
//! status and a stable code (plain JSON on `/sync/stream`, oRPC's error envelope on
//! `/rpc/sync/stream`).

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sync_protocol::TokenError;

bus::service_error! {
    /// Everything that can stop the service, each with a stable code for logs and alerts.
    pub enum Error {
        #[error("database: {0}")]
        Database(#[from] sqlx::Error) => "DATABASE",
        #[error("nats: {0}")]
        Nats(String) => "NATS",
    }
}

/// A stream request refused before the stream starts.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    #[error("a sync token is required (Authorization: Bearer <token> or ?token=)")]
    MissingToken,
    #[error("{0}")]
    Token(TokenError),
    #[error("the session this sync token was issued from was revoked")]
    SessionRevoked,
    #[error("the sync token predates a change of the user's teams; get a new one from sync.token")]
    TokenStale,
    #[error("too many open streams for this user")]
    TooManyStreams,
    #[error("`{field}` is invalid: {problem}")]
    BadInput {
        field: &'static str,
        problem: String,
    },
    #[error("the service is shutting down")]
    ShuttingDown,
    #[error("the service is not tailing the change stream yet; retry shortly")]
    NotReady,
    #[error("internal error")]
    Internal,
}

impl StreamError {
    pub fn internal(error: impl std::fmt::Display) -> Self {
        tracing::error!(%error, "stream request failed");
        Self::Internal
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::MissingToken | Self::Token(_) | Self::SessionRevoked | Self::TokenStale => {
                StatusCode::UNAUTHORIZED
            }
            Self::TooManyStreams => StatusCode::TOO_MANY_REQUESTS,
            Self::BadInput { .. } => StatusCode::BAD_REQUEST,
            Self::ShuttingDown | Self::NotReady => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn code(&self) -> &'static str {
        match self {
            Self::MissingToken => "UNAUTHORIZED",
            Self::Token(error) => error.code(),
            Self::SessionRevoked => "SESSION_REVOKED",
            Self::TokenStale => "SYNC_TOKEN_STALE",
            Self::TooManyStreams => "TOO_MANY_STREAMS",
            Self::BadInput { .. } => "BAD_REQUEST",
            Self::ShuttingDown | Self::NotReady => "SERVICE_UNAVAILABLE",
            Self::Internal => "INTERNAL_SERVER_ERROR",
        }
    }

    fn body(&self) -> ErrorBody {
        ErrorBody {
            // Generic codes are oRPC's (not declared); ours are declared errors.
            defined: !matches!(
                self,
                Self::MissingToken
                    | Self::BadInput { .. }
                    | Self::ShuttingDown
                    | Self::NotReady
                    | Self::Internal
            ),
            code: self.code(),
            status: self.status().as_u16(),
            message: self.to_string(),
            data: match self {
                Self::BadInput { field, .. } => Some(ErrorData { field }),
                _ => None,
            },
        }
    }

    /// oRPC's error envelope, for `/rpc/sync/stream`.
    pub fn into_rpc_response(self) -> Response {
        #[derive(Serialize)]
        struct Envelope {
            json: ErrorBody,
        }
        (self.status(), Json(Envelope { json: self.body() })).into_response()
    }
}

#[derive(Debug, Serialize)]
struct ErrorBody {
    defined: bool,
    code: &'static str,
    status: u16,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<ErrorData>,
}

#[derive(Debug, Serialize)]
struct ErrorData {
    field: &'static str,
}

impl IntoResponse for StreamError {
    fn into_response(self) -> Response {
        (self.status(), Json(self.body())).into_response()
    }
}

impl From<TokenError> for StreamError {
    fn from(error: TokenError) -> Self {
        Self::Token(error)
    }
}

impl From<sqlx::Error> for StreamError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}
