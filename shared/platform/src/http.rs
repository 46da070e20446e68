//! The HTTP side every service shares: health routes, request ids, a span per request that
//! continues the caller's trace, request metrics, panic containment and graceful shutdown.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request};
use axum::middleware::{self, Next};
use axum::response::Response;
use axum::routing::get;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tower::ServiceBuilder;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::trace::{DefaultOnFailure, TraceLayer};
use tracing::Span;

use crate::PlatformError;
use crate::health::{self, Readiness};

pub const REQUEST_ID_HEADER: &str = "x-request-id";

/// Add `/healthz`, `/readyz` and `/metrics` to a service's routes and wrap everything in the
/// shared layers.
pub fn service_router(service: &'static str, routes: Router, readiness: Readiness) -> Router {
    // Install the recorder before the first request so no sample is lost.
    let _ = crate::metrics::handle();
    let health_routes = Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/metrics", get(health::metrics))
        .with_state(readiness);
    routes
        .merge(health_routes)
        // `Router::layer` runs these after routing, so the matched route is known for the
        // span and the metric labels (the raw path would explode label cardinality).
        .layer(middleware::from_fn(move |request: Request, next: Next| {
            record_metrics(service, request, next)
        }))
        .layer(
            TraceLayer::new_for_http()
                .make_span_with(make_span)
                .on_failure(DefaultOnFailure::new().level(tracing::Level::WARN)),
        )
        .layer(
            ServiceBuilder::new()
                .layer(middleware::map_request(drop_unsafe_request_id))
                .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
                .layer(PropagateRequestIdLayer::x_request_id())
                .layer(CatchPanicLayer::custom(panic_response)),
        )
}

/// The longest client-supplied request id kept (a UUID is 36 characters).
const MAX_CLIENT_REQUEST_ID_LEN: usize = 64;

/// A caller's `x-request-id` is echoed and logged, so only a plain correlation id is kept:
/// letters, digits and `-` up to 64 characters. Anything else (a pasted API key or token,
/// junk, control characters) is dropped and a fresh UUID takes its place, so no secret a
/// client puts there reaches the logs.
async fn drop_unsafe_request_id(mut request: Request) -> Request {
    let unsafe_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .is_some_and(|value| !is_plain_request_id(value.as_bytes()));
    if unsafe_id {
        request.headers_mut().remove(REQUEST_ID_HEADER);
    }
    request
}

fn is_plain_request_id(value: &[u8]) -> bool {
    !value.is_empty()
        && value.len() <= MAX_CLIENT_REQUEST_ID_LEN
        // No `_`: our API keys (`jk_live_<id>_<secret>`) always contain one.
        && value.iter().all(|byte| byte.is_ascii_alphanumeric() || *byte == b'-')
}

fn route_of(request: &Request) -> String {
    request
        .extensions()
        .get::<MatchedPath>()
        .map(|path| path.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned())
}

fn make_span(request: &Request) -> Span {
    let request_id = request
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let span = tracing::info_span!(
        "http_request",
        method = %request.method(),
        route = %route_of(request),
        request_id = %request_id,
        otel.kind = "server",
    );
    crate::telemetry::set_parent_from_headers(&span, request.headers());
    span
}

async fn record_metrics(service: &'static str, request: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = request.method().to_string();
    let route = route_of(&request);
    let response = next.run(request).await;
    let status = response.status().as_u16().to_string();
    let labels = [
        ("service", service.to_owned()),
        ("method", method),
        ("route", route),
        ("status", status),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}

fn panic_response(_panic: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("request handler panicked");
    let mut response = Response::new(axum::body::Body::from(
        r#"{"code":"INTERNAL_SERVER_ERROR","message":"Internal server error"}"#,
    ));
    *response.status_mut() = axum::http::StatusCode::INTERNAL_SERVER_ERROR;
    response.headers_mut().insert(
        axum::http::header::CONTENT_TYPE,
        axum::http::HeaderValue::from_static("application/json"),
    );
    response
}

/// Serve until `shutdown` is cancelled, then stop accepting connections and let in-flight
/// requests finish for at most `grace`. Returns Ok on a clean (or grace-expired) stop.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: CancellationToken,
    grace: Duration,
) -> Result<(), PlatformError> {
    let server = axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown.clone().cancelled_owned())
    .into_future();
    let grace_expired = async {
        shutdown.cancelled().await;
        tokio::time::sleep(grace).await;
    };
    tokio::select! {
        result = server => result.map_err(PlatformError::Serve),
        () = grace_expired => {
            tracing::warn!(grace_seconds = grace.as_secs(), "in-flight requests outlived the shutdown grace; closing them");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::body::Body;
    use tower::ServiceExt;

    async fn echoed_request_id(sent: &str) -> String {
        let app = service_router("test", Router::new(), Readiness::default());
        let request = axum::http::Request::builder()
            .uri("/healthz")
            .header(REQUEST_ID_HEADER, sent)
            .body(Body::empty());
        let Ok(request) = request else {
            panic!("request builds");
        };
        let response = match app.oneshot(request).await {
            Ok(response) => response,
            Err(infallible) => match infallible {},
        };
        response
            .headers()
            .get(REQUEST_ID_HEADER)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    #[tokio::test]
    async fn a_plain_request_id_is_kept_and_anything_else_replaced() {
        assert_eq!(echoed_request_id("trace-42-abc").await, "trace-42-abc");
        let key = "jk_live_AbCdEf12_0123456789abcdefghijklmnopqrstuvwxyzABCDEFG";
        let replaced = echoed_request_id(key).await;
        assert_ne!(replaced, key);
        assert!(uuid_like(&replaced), "{replaced}");
        let long = "a".repeat(65);
        assert!(uuid_like(&echoed_request_id(&long).await));
        assert!(uuid_like(&echoed_request_id("Bearer abc").await));
    }

    fn uuid_like(value: &str) -> bool {
        value.len() == 36 && value.bytes().filter(|byte| *byte == b'-').count() == 4
    }
}
