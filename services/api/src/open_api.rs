//! The open API's `open_api_public` tier (ARCHITECTURE §6): REST under `/api/v1`, callers
//! authenticated by an API key in `x-api-key`.
//!
//! Only the tier and a probe exist so far: [`ApiKeyAuth`] (an extractor that verifies the key
//! for the trusted-proxy-aware client IP) and `GET /api/v1/whoami`. The REST endpoints,
//! OpenAPI document, request log and metering build on them.
//!
//! Errors are plain JSON `{code, message}` (REST clients, not oRPC):
//! `401 INVALID_API_KEY`, `403 IP_NOT_ALLOWED`, `429 RATE_LIMITED` (with `Retry-After`),
//! `500 INTERNAL_SERVER_ERROR` (cause logged, never sent).

use axum::extract::FromRequestParts;
use axum::http::header::RETRY_AFTER;
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::Serialize;
use uuid::Uuid;

use crate::AppState;
use crate::api_keys::VerifiedKey;
use crate::api_keys::verifier::invalid_key;
use crate::client_ip::ClientIp;
use crate::error::ApiError;

pub const API_KEY_HEADER: &str = "x-api-key";

pub fn routes() -> Router<AppState> {
    Router::new().route("/api/v1/whoami", get(whoami))
}

/// An open-API error: `{code, message}` with the error's status.
#[derive(Debug)]
pub struct RestError(pub ApiError);

impl<E: Into<ApiError>> From<E> for RestError {
    fn from(error: E) -> Self {
        Self(error.into())
    }
}

#[derive(Serialize)]
struct RestErrorBody {
    code: &'static str,
    message: String,
}

impl IntoResponse for RestError {
    fn into_response(self) -> Response {
        let error = self.0;
        let (code, message) = match &error {
            ApiError::TooManyRequests { .. } => ("RATE_LIMITED", error.to_string()),
            ApiError::Internal(cause) => {
                tracing::error!(%cause, "internal error");
                ("INTERNAL_SERVER_ERROR", "Internal server error".to_owned())
            }
            other => (other.code(), other.to_string()),
        };
        let mut response = (error.status(), Json(RestErrorBody { code, message })).into_response();
        if let ApiError::TooManyRequests {
            retry_after_seconds,
        } = error
            && let Ok(value) = HeaderValue::from_str(&retry_after_seconds.to_string())
        {
            response.headers_mut().insert(RETRY_AFTER, value);
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

/// The `open_api_public` tier: a verified API key, allowed from the caller's IP.
#[derive(Debug, Clone)]
pub struct ApiKeyAuth(pub VerifiedKey);

impl FromRequestParts<AppState> for ApiKeyAuth {
    type Rejection = RestError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, RestError> {
        let Ok(ClientIp(client_ip)) = ClientIp::from_request_parts(parts, state).await;
        let Some(presented) = parts
            .headers
            .get(API_KEY_HEADER)
            .and_then(|value| value.to_str().ok())
        else {
            return Err(RestError(invalid_key()));
        };
        state
            .api_keys
            .verify(presented.trim(), client_ip)
            .await
            .map(ApiKeyAuth)
            .map_err(RestError)
    }
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub api_key_id: Uuid,
    pub api_team_id: Uuid,
    pub team_id: Uuid,
    pub key_prefix: String,
}

/// `GET /api/v1/whoami` → which key, API team and team the request authenticated as.
async fn whoami(ApiKeyAuth(key): ApiKeyAuth) -> Json<WhoAmI> {
    Json(WhoAmI {
        api_key_id: key.api_key_id,
        api_team_id: key.api_team_id,
        team_id: key.team_id,
        key_prefix: key.prefix,
    })
}
