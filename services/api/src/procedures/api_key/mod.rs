//! The open API's `open_api_public` tier (ARCHITECTURE §6): callers authenticated by an API
//! key in `x-api-key`.
//!
//! Every `/api/v1/*` request goes through [`meter`]: key verification ([`ApiKeyAuth`]), the
//! key's per-second rate (per plan), the API team's monthly quota (`metering`), the
//! `X-RateLimit-*` headers and one request log row, refused requests included. The handlers
//! then act as the [`Caller`] in the API team's team scope.
//!
//! Refusals: `401 INVALID_API_KEY`, `403 IP_NOT_ALLOWED`, `403 API_ACCESS_DISABLED`, `403
//! FORBIDDEN` (no subscription), `429 RATE_LIMITED` / `429 USAGE_EXCEEDED` (with `Retry-After`),
//! `503 SERVICE_UNAVAILABLE` (Postgres unreachable; with `Retry-After`).

pub mod state;

use self::state::KeyContext;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::http::rest::{ErrorCode, RestError};
use crate::modules::logs::types::{RedactedHeaders, RequestLog};
use crate::modules::subscriptions::api_keys::verifier::types::VerifiedKey;
use crate::modules::subscriptions::api_keys::verifier::types::invalid_key;
use crate::state::AppState;
use axum::body::{Body, HttpBody};
use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{CONTENT_LENGTH, RETRY_AFTER, USER_AGENT};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use chrono::Utc;
use domain::ids::UserId;
use http_body_util::BodyExt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;
use uuid::Uuid;

pub const API_KEY_HEADER: &str = "x-api-key";
/// What the REST handlers act as: the verified key and its creator (the author of what it
/// creates).
#[derive(Debug, Clone)]
pub struct Caller {
    pub key: VerifiedKey,
    pub user_id: UserId,
}

pub(crate) async fn key_context(
    state: &AppState,
    key: &VerifiedKey,
) -> Result<KeyContext, ApiError> {
    if let Some((context, loaded_at)) = state.open_api.contexts.get(&key.api_key_id).await
        && !state
            .api_keys
            .subscription_changed_since(key.api_team_id, loaded_at)
    {
        return Ok(context);
    }
    // Taken before the query: a plan change committed while it runs marks this load stale.
    let loaded_at = Instant::now();
    let context: Option<KeyContext> = sqlx::query_as(
        "SELECT k.created_by_user_id, p.requests_per_second
           FROM api_keys k
           JOIN subscriptions s ON s.api_team_id = k.api_team_id
           JOIN plans p ON p.plan_id = s.plan_id
          WHERE k.api_key_id = $1",
    )
    .bind(key.api_key_id)
    .fetch_optional(&state.db)
    .await?;
    let Some(context) = context else {
        return Err(ApiError::forbidden("This team has no API subscription"));
    };
    state
        .open_api
        .contexts
        .insert(key.api_key_id, (context, loaded_at))
        .await;
    Ok(context)
}

/// Authenticate, rate-limit, count and log one `/api/v1` request.
pub(crate) async fn meter(State(state): State<AppState>, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let (mut parts, body) = request.into_parts();
    let Ok(ClientIp(client_ip)) = ClientIp::from_request_parts(&mut parts, &state).await;
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|value: &HeaderValue| value.to_str().ok())
            .map(str::to_owned)
    };
    let user_agent = header(USER_AGENT);
    let request_id = header(axum::http::HeaderName::from_static("x-request-id"));
    // The bytes the handler reads (chunked bodies included); for a body nobody read (a
    // refused request), its declared `Content-Length`.
    let declared_bytes: u64 = header(CONTENT_LENGTH)
        .and_then(|length| length.parse().ok())
        .unwrap_or(0);
    let read_bytes = Arc::new(AtomicU64::new(0));
    let body = {
        let read_bytes = Arc::clone(&read_bytes);
        Body::new(body.map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                read_bytes.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        }))
    };
    let method = parts.method.to_string();
    let path = parts.uri.path().to_owned();

    let authenticated = ApiKeyAuth::from_request_parts(&mut parts, &state).await;
    let key = authenticated
        .as_ref()
        .ok()
        .map(|ApiKeyAuth(key)| key.clone());
    let request_headers =
        RedactedHeaders::from_headers(&parts.headers, key.as_ref().map(|key| key.prefix.as_str()));
    let response = match authenticated {
        Err(refused) => refused.into_response(),
        Ok(ApiKeyAuth(key)) => admit(&state, key, parts, body, next).await,
    };

    let status = response.status().as_u16();
    let error_code = response
        .extensions()
        .get::<ErrorCode>()
        .map(|ErrorCode(code)| (*code).to_owned());
    let response_bytes = response.body().size_hint().exact().unwrap_or(0);
    let request_bytes = match read_bytes.load(Ordering::Relaxed) {
        0 => declared_bytes,
        read => read,
    };
    state
        .request_logs
        .record(RequestLog {
            request_log_id: Uuid::now_v7(),
            created_at: Utc::now(),
            team_id: key.as_ref().map(|key| key.team_id),
            api_team_id: key.as_ref().map(|key| key.api_team_id),
            api_key_prefix: key.map(|key| key.prefix),
            method,
            path,
            status,
            duration: started.elapsed(),
            client_ip,
            user_agent,
            request_id,
            request_bytes,
            response_bytes,
            error_code,
            request_headers,
        })
        .await;
    response
}

/// An authenticated request: the key's rate, the team's quota, then the handler.
pub(crate) async fn admit(
    state: &AppState,
    key: VerifiedKey,
    mut parts: Parts,
    body: Body,
    next: Next,
) -> Response {
    let context = match key_context(state, &key).await {
        Ok(context) => context,
        Err(error) => return RestError(error).into_response(),
    };
    let rate = u32::try_from(context.requests_per_second).unwrap_or(1);
    if let Err(retry_after_seconds) = state.open_api.key_rates.check(key.api_key_id, rate) {
        return RestError(ApiError::TooManyRequests {
            retry_after_seconds,
        })
        .into_response();
    }
    let usage = match state.open_api.quota.count(&state.db, key.api_team_id).await {
        Ok(usage) => usage,
        Err(error) => return RestError(error).into_response(),
    };
    let mut response = if usage.exceeded {
        let retry_after = usage.retry_after_seconds(Utc::now());
        let mut refused = RestError(ApiError::defined(
            "USAGE_EXCEEDED",
            StatusCode::TOO_MANY_REQUESTS,
            "The monthly request quota of this API team is used up",
        ))
        .into_response();
        refused
            .headers_mut()
            .insert(RETRY_AFTER, HeaderValue::from(retry_after));
        refused
    } else {
        parts.extensions.insert(Caller {
            key,
            user_id: context.created_by_user_id,
        });
        next.run(Request::from_parts(parts, body)).await
    };
    usage.write_headers(response.headers_mut());
    response
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

/// The answers every API-key endpoint can give before its handler runs (the key, the caller's
/// IP and the team's access, its rate and quota), documented once for all of them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents responses: the handlers answer with `ApiError`
pub(crate) enum KeyRefusals {
    #[response(
        status = 401,
        description = "Missing or invalid API key (`INVALID_API_KEY`)"
    )]
    InvalidKey(crate::http::rest::ErrorBody),
    #[response(
        status = 403,
        description = "Caller IP not allowed (`IP_NOT_ALLOWED`), API access disabled (`API_ACCESS_DISABLED`) or no subscription (`FORBIDDEN`)"
    )]
    Forbidden(crate::http::rest::ErrorBody),
    #[response(
        status = 429,
        description = "Over the key's rate (`RATE_LIMITED`) or the monthly quota (`USAGE_EXCEEDED`), with `Retry-After`"
    )]
    Limited(crate::http::rest::ErrorBody),
}

// ---------------------------------------------------------------------------------------------
// journal entries
