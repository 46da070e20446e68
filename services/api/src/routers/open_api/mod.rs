//! The open API (REST under `/api/v1`, ARCHITECTURE §6): the operations ([`operations`], declared
//! once for the routes and the document), `whoami`, the answers for unknown paths and
//! methods, all behind the API-key tier's metering (`procedures::api_key::meter`); and, free
//! and keyless, the OpenAPI document and its reference page ([`docs`]).
//!
//! Errors are plain JSON `{code, message}` (`http::rest`), with `issues` (code, path, message)
//! on `400 BAD_REQUEST` validation errors:
//! `400 BAD_REQUEST`, `401 INVALID_API_KEY`, `403 IP_NOT_ALLOWED`, `403 API_ACCESS_DISABLED`,
//! `404 NOT_FOUND`,
//! `413 PAYLOAD_TOO_LARGE`, `429 RATE_LIMITED` / `429 USAGE_EXCEEDED` (with `Retry-After`),
//! `500 INTERNAL_SERVER_ERROR` (cause logged, never sent), `503 SERVICE_UNAVAILABLE` (Postgres
//! unreachable; with `Retry-After`).

pub mod docs;
pub mod operations;

use axum::Router;
use axum::middleware::from_fn_with_state;
use axum::routing::{any, get};

use crate::http::error::ApiError;
use crate::http::rest::{MAX_BODY_BYTES, RestError};
use crate::modules::subscriptions::rest::whoami;
use crate::procedures::api_key::meter;
use crate::state::AppState;

pub fn routes(state: &AppState) -> Router<AppState> {
    Router::new()
        .route("/api/v1/whoami", get(whoami))
        .merge(operations::routes())
        // An unknown `/api/v1` path is metered and logged like any other request.
        .route(
            "/api/v1/{*path}",
            any(|| async { RestError(ApiError::not_found("Route")) }),
        )
        // The wildcard needs a segment: `/api/v1` and `/api/v1/` (a client's `..`) too.
        .route(
            "/api/v1",
            any(|| async { RestError(ApiError::not_found("Route")) }),
        )
        .route(
            "/api/v1/",
            any(|| async { RestError(ApiError::not_found("Route")) }),
        )
        // A known path with another method: the error shape, metered and logged too.
        .method_not_allowed_fallback(|| async { RestError(ApiError::MethodNotSupported) })
        .route_layer(from_fn_with_state(state.clone(), meter))
        // The contract and its reference page are free and need no key.
        .route("/api/v1/openapi.json", get(docs::openapi_json))
        .route("/api/docs", get(docs::reference_page))
        .route(docs::SCALAR_BUNDLE_PATH, get(docs::scalar_bundle))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY_BYTES))
}
