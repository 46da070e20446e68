//! The api's one error type. Every error has a stable code and an HTTP status, and is sent in
//! oRPC's error shape (`{"json":{"defined","code","status","message","data"}}`), which
//! `@orpc/client` turns into a typed `ORPCError`. Internal errors are logged with their cause
//! and answered with an opaque 500.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

/// One failed check of an input field.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct Issue {
    /// Path to the field, e.g. `["title"]`.
    pub path: Vec<String>,
    pub message: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error("Input validation failed")]
    Validation(Vec<Issue>),
    #[error(
        "Malformed request. Ensure the request body is properly formatted and the 'Content-Type' header is set correctly."
    )]
    Malformed,
    #[error("Unauthorized")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(&'static str),
    #[error("No procedure matched")]
    NotFound,
    #[error("Method not supported")]
    MethodNotSupported,
    #[error("internal: {0}")]
    Internal(String),
}

impl ApiError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Validation(_) | Self::Malformed => "BAD_REQUEST",
            Self::Unauthorized => "UNAUTHORIZED",
            Self::Forbidden(_) => "FORBIDDEN",
            Self::NotFound => "NOT_FOUND",
            Self::MethodNotSupported => "METHOD_NOT_SUPPORTED",
            Self::Internal(_) => "INTERNAL_SERVER_ERROR",
        }
    }

    pub fn status(&self) -> StatusCode {
        match self {
            Self::Validation(_) | Self::Malformed => StatusCode::BAD_REQUEST,
            Self::Unauthorized => StatusCode::UNAUTHORIZED,
            Self::Forbidden(_) => StatusCode::FORBIDDEN,
            Self::NotFound => StatusCode::NOT_FOUND,
            Self::MethodNotSupported => StatusCode::METHOD_NOT_ALLOWED,
            Self::Internal(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    pub fn internal(error: impl std::fmt::Display) -> Self {
        Self::Internal(error.to_string())
    }

    pub fn field(path: &str, message: impl Into<String>) -> Self {
        Self::Validation(vec![Issue {
            path: vec![path.to_owned()],
            message: message.into(),
        }])
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(error: sqlx::Error) -> Self {
        Self::internal(error)
    }
}

impl From<bus::BusError> for ApiError {
    fn from(error: bus::BusError) -> Self {
        Self::internal(error)
    }
}

#[derive(Serialize)]
struct IssuesData<'a> {
    issues: &'a [Issue],
}

#[derive(Serialize)]
struct ErrorBody<'a> {
    defined: bool,
    code: &'static str,
    status: u16,
    message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    data: Option<IssuesData<'a>>,
}

#[derive(Serialize)]
struct Envelope<T> {
    json: T,
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let message = match &self {
            Self::Internal(cause) => {
                tracing::error!(code = self.code(), %cause, "internal error");
                "Internal server error".to_owned()
            }
            other => other.to_string(),
        };
        let data = match &self {
            Self::Validation(issues) => Some(IssuesData { issues }),
            _ => None,
        };
        let body = ErrorBody {
            defined: false,
            code: self.code(),
            status: self.status().as_u16(),
            message,
            data,
        };
        (self.status(), Json(Envelope { json: body })).into_response()
    }
}
