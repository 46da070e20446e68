//! CORS for browsers on the app's origin (issue 18): `new EventSource(".../sync/stream?token=…")`
//! and the oRPC `sync.stream` call come from the web app's origin, not the streamer's. The sync
//! token travels in the URL or the `Authorization` header, never in a cookie, so credentials
//! are not allowed: no origin can make a browser send something it holds for the streamer.

use axum::http::{HeaderName, Method, header};
use tower_http::cors::{AllowOrigin, CorsLayer};

/// How long a browser may cache a preflight answer.
const PREFLIGHT_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(600);

pub fn layer(allowed_origins: &[String]) -> CorsLayer {
    let origins: Vec<axum::http::HeaderValue> = allowed_origins
        .iter()
        .filter_map(|origin| origin.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_methods([Method::GET, Method::POST])
        .allow_headers([
            header::AUTHORIZATION,
            header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([header::RETRY_AFTER, HeaderName::from_static("x-request-id")])
        .max_age(PREFLIGHT_MAX_AGE)
}
