//! The api's one error type. Every error has a stable code and an HTTP status, and is sent in
//! oRPC's error shape (`{"json":{"defined","code","status","message","data"}}`), which
//! `@orpc/client` turns into a typed `ORPCError` (the client rejects a body with any other
//! key, so there are none). Procedure-specific errors (`EDIT_CONFLICT`, `LAST_OWNER`, ...)
//! are `defined: true`, like oRPC's `.errors({...})`. Internal errors are logged with their
//! cause and answered with an opaque 500.

use axum::Json;
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use platform::s3::StorageError;
use serde::Serialize;

use crate::http::issues::Issue;

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Input validation failed")]
    Validation(Vec<Issue>),
    #[error(
        "Malformed request. Ensure the request body is properly formatted and the 'Content-Type' header is set correctly."
    )]
    Malformed,
    /// No credentials, or credentials that are not (or no longer) a session.
    #[error("{0}")]
    Unauthorized(&'static str),
    #[error("{0}")]
    Forbidden(String),
    /// A row that does not exist or that the caller may not see (the same answer for both,
    /// so ids cannot be probed).
    #[error("{0}")]
    NotFound(String),
    #[error("No procedure matched")]
    ProcedureNotFound,
    #[error("Method Not Supported")]
    MethodNotSupported,
    #[error("Payload Too Large")]
    PayloadTooLarge,
    #[error("Too many requests, retry in {retry_after_seconds} s")]
    TooManyRequests { retry_after_seconds: u64 },
    /// A request refused for its origin (CSRF protection of cookie sessions).
    #[error("{0}")]
    CrossSiteRequest(&'static str),
    /// A procedure's declared error (`defined: true`).
    #[error("{message}")]
    Defined {
        code: &'static str,
        status: StatusCode,
        message: String,
        data: Option<ErrorData>,
    },
    /// A dependency the request needs (Postgres) is down or overloaded: `503
    /// SERVICE_UNAVAILABLE` with `Retry-After`, so clients and load balancers can tell a
    /// transient outage from a bug. The cause is logged, never sent.
    #[error("Service temporarily unavailable, retry shortly")]
    Unavailable(String),
    #[error("internal: {0}")]
    Internal(String),
}

/// The `Retry-After` of a [`ApiError::Unavailable`]: long enough for a pool to reconnect or a
/// failover to finish, short enough that a retrying client notices the recovery.
pub const UNAVAILABLE_RETRY_AFTER_SECONDS: u64 = 5;

/// Whether a database error means "Postgres is unreachable or going away" (retry later)
/// rather than a bug: the pool timed out or is closed, the connection broke (I/O, TLS), the
/// server is shutting down or starting (`57P01`..`57P03`), refuses connections (class `08`),
/// or has no connection slot left (`53300`).
pub fn is_database_unavailable(error: &sqlx::Error) -> bool {
    match error {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(database) => database.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "57P01" | "57P02" | "57P03" | "53300")
        }),
        _ => false,
    }
}

/// The typed `data` of declared errors.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(untagged)]
pub enum ErrorData {
    /// `EDIT_CONFLICT`: the row changed since the client read it.
    #[serde(rename_all = "camelCase")]
    EditConflict {
        current_version: i64,
        current_updated_at: i64,
    },
}

/// Object storage failing is not the client's fault: `503 STORAGE_UNAVAILABLE` (logged).
pub fn storage_unavailable(error: StorageError) -> ApiError {
    tracing::error!(%error, "object storage");
    ApiError::defined(
        "STORAGE_UNAVAILABLE",
        StatusCode::SERVICE_UNAVAILABLE,
        "File storage is unavailable; try again shortly",
    )
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) | Self::Malformed => "BAD_REQUEST",
            Self::Unauthorized(_) => "UNAUTHORIZED",
            Self::Forbidden(_) | Self::CrossSiteRequest(_) => "FORBIDDEN",
            Self::NotFound(_) | Self::ProcedureNotFound => "NOT_FOUND",
            Self::MethodNotSupported => "METHOD_NOT_SUPPORTED",
            Self::PayloadTooLarge => "PAYLOAD_TOO_LARGE",
            Self::TooManyRequests { .. } => "TOO_MANY_REQUESTS",
            Self::Defined { code, .. } => code,
            Self::Unavailable(_) => "SERVICE_UNAVAILABLE",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) | Self::CrossSiteRequest(_) => StatusCode::FORBIDDEN,
            Self::NotFound(_) | Self::ProcedureNotFound => StatusCode::NOT_FOUND,
            Self::MethodNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Self::TooManyRequests { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Defined { status, .. } => *status,
            Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    /// How many seconds a client should wait before retrying, for the answers that say so.
    pub fn retry_after_seconds(&self) -> Option<u64> {
        match self {
            Self::TooManyRequests {
                retry_after_seconds,
            } => Some(*retry_after_seconds),
            Self::Unavailable(_) => Some(UNAVAILABLE_RETRY_AFTER_SECONDS),
            _ => None,
        }
    }

    /// The message sent to the client; an internal or unavailable cause is logged instead.
    pub fn public_message(&self) -> String {
        match self {
            Self::Internal(cause) => {
                tracing::error!(code = self.code(), %cause, "internal error");
                "Internal server error".to_owned()
            }
            Self::Unavailable(cause) => {
                tracing::warn!(code = self.code(), %cause, "dependency unavailable");
                self.to_string()
            }
            other => other.to_string(),
        }
    }

    pub fn not_found(what: &str) -> Self {
        Self::NotFound(format!("{what} not found"))
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::Forbidden(message.into())
    }

    /// A declared error without data.
    pub fn defined(code: &'static str, status: StatusCode, message: impl Into<String>) -> Self {
        Self::Defined {
            code,
            status,
            message: message.into(),
            data: None,
        }
    }

    /// One invalid field.
    pub fn field(path: &str, code: &'static str, message: impl Into<String>) -> Self {
        Self::Validation(vec![Issue::new(code, path, message)])
    }

    fn body(&self) -> ErrorBody<'_> {
        let message = self.public_message();
        let data = match self {
            Self::Validation(issues) => Some(Data::Issues { issues }),
            Self::Defined {
                data: Some(data), ..
            } => Some(Data::Defined(data)),
            _ => None,
        };
        ErrorBody {
            defined: matches!(self, Self::Defined { .. }),
            code: self.code(),
            status: self.status().as_u16(),
            message,
            data,
        }
    }

    fn respond<T: Serialize>(&self, body: T) -> Response {
        let mut response = (self.status(), Json(body)).into_response();
        if let Some(seconds) = self.retry_after_seconds() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        response
    }

    /// The RPC error body (`{"json": {...}}`) with another message: for a batch item refused
    /// for a reason the variant's own message does not say.
    pub fn envelope_with_message(&self, message: String) -> serde_json::Result<serde_json::Value> {
        let mut body = self.body();
        body.message = message;
        serde_json::to_value(Envelope { json: body })
    }

    /// The error as a plain JSON body (no RPC envelope): for `/auth/*` and other non-RPC routes.
    pub fn into_plain_response(self) -> Response {
        let body = self.body();
        self.respond(body)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        if is_database_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::internal(error)
        }
    }
}

impl From<sync_protocol::changes::RowNotSerializable> for ApiError {
    /// A synced row that does not serialize is a bug in its type, never the client's input.
    fn from(error: sync_protocol::changes::RowNotSerializable) -> Self {
        Self::internal(error)
    }
}

impl From<bus::BusError> for ApiError {
    /// A Postgres error writing the outbox is judged like any other database error: an
    /// outage mid-transaction (the connection terminated while the event is written) is 503,
    /// not a bug.
    fn from(error: bus::BusError) -> Self {
        match error {
            bus::BusError::Postgres(error) => Self::from(error),
            other => Self::internal(other),
        }
    }
}

#[derive(Serialize)]
#[serde(untagged)]
enum Data<'a> {
    Issues { issues: &'a [Issue] },
    Defined(&'a ErrorData),
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    defined: bool,
    code: &'static str,
    status: u16,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<Data<'a>>,
}

#[derive(Serialize)]
struct Envelope<T> {
    json: T,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = Envelope { json: self.body() };
        self.respond(body)
    }
}

/// An [`ApiError`] answered without the RPC envelope.
#[derive(Debug)]
pub struct PlainError(pub ApiError);

impl<E: Into<ApiError>> From<E> for PlainError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

impl IntoResponse for PlainError {
    fn into_response(self) -> Response {
        self.0.into_plain_response()
    }
}
