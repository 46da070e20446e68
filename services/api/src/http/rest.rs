//! The open API's REST codec: errors as plain JSON `{code, message}` (REST clients, not oRPC),
//! with `issues` (code, path, message) on `400 BAD_REQUEST` validation errors; JSON object bodies
//! of at most [`MAX_BODY_BYTES`]; and the documented shape of the error body.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Request};
use axum::http::header::RETRY_AFTER;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

use crate::http::error::ApiError;
use crate::http::validation::{Input, Issue, PathSegment, checked, typed};

/// Bodies over this size answer 413 (entries hold at most 100,000 characters).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// The error code a response carries, for the request log.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ErrorCode(pub(crate) &'static str);

/// An open-API error: `{code, message}` (and `issues` for validation) with the error's status.
#[derive(Debug)]
pub struct RestError(pub ApiError);

impl<E: Into<ApiError>> From<E> for RestError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

#[derive(Serialize)]
pub(crate) struct RestErrorBody<'a> {
    pub(crate) code: &'static str,
    pub(crate) message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) issues: Option<&'a [Issue]>,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let error = self.0;
        let (code, message) = match &error {
            ApiError::TooManyRequests { .. } => ("RATE_LIMITED", error.to_string()),
            other => (other.code(), other.public_message()),
        };
        let issues = match &error {
            ApiError::Validation(issues) => Some(issues.as_slice()),
            _ => None,
        };
        let mut response = (
            error.status(),
            Json(RestErrorBody {
                code,
                message,
                issues,
            }),
        )
            .into_response();
        response.extensions_mut().insert(ErrorCode(code));
        if let Some(seconds) = error.retry_after_seconds() {
            response
                .headers_mut()
                .insert(RETRY_AFTER, HeaderValue::from(seconds));
        }
        if response.status() == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                HeaderValue::from_static("ApiKey header=\"x-api-key\""),
            );
        }
        response
    }
}

/// A JSON object body: at most [`MAX_BODY_BYTES`] (else 413), valid JSON (else 400
/// `BAD_REQUEST`), an object (else 400 with the root path).
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        let body =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                    _ => ApiError::Malformed,
                })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(RestError(ApiError::PayloadTooLarge));
        }
        match serde_json::from_slice(&body) {
            Ok(Value::Object(object)) => Ok(Self(object)),
            Ok(_) => Err(RestError(ApiError::Validation(vec![Issue::new(
                "invalid_type",
                Vec::<PathSegment>::new(),
                "Expected a JSON object",
            )]))),
            Err(_) => Err(RestError(ApiError::Malformed)),
        }
    }
}

impl JsonObject {
    /// Type the body as the endpoint's own body type `B` (which has no field the server
    /// decides, so a client sending one gets `unrecognized_keys`), make it the procedure's
    /// input with `into_input` (adding what the server decides: the key's team, the path's
    /// id) and run that input's checks: the typing and checks an RPC input gets, without the
    /// RPC envelope.
    pub(crate) fn decode<B: DeserializeOwned, T: Input>(
        self,
        into_input: impl FnOnce(B) -> T,
    ) -> Result<T, ApiError> {
        let body: B = typed(Value::Object(self.0))?;
        checked(into_input(body))
    }
}

/// The error body of every open API error.
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)] // Documents `RestErrorBody`, which borrows its issues.
pub struct ErrorBody {
    /// Stable: `BAD_REQUEST`, `INVALID_API_KEY`, `IP_NOT_ALLOWED`, `API_ACCESS_DISABLED`,
    /// `FORBIDDEN`, `NOT_FOUND`, `PAYLOAD_TOO_LARGE`, `EDIT_CONFLICT`, `RATE_LIMITED`,
    /// `USAGE_EXCEEDED`, `INTERNAL_SERVER_ERROR`.
    pub(crate) code: String,
    pub(crate) message: String,
    /// On `BAD_REQUEST` validation errors: one per invalid field.
    pub(crate) issues: Option<Vec<ValidationIssue>>,
}

/// One invalid field (zod's issue shape).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
pub struct ValidationIssue {
    /// e.g. `too_small`, `invalid_type`, `unrecognized_keys`.
    pub(crate) code: String,
    /// Object keys (strings) and array indexes (integers) to the field, e.g. `["tags", 1]`.
    pub(crate) path: Vec<IssuePathSegment>,
    pub(crate) message: String,
}

/// One step of an issue's path (the wire form of `validation::PathSegment`).
#[derive(Debug, utoipa::ToSchema)]
#[allow(dead_code)]
#[serde(untagged)]
pub enum IssuePathSegment {
    Key(String),
    Index(u64),
}
