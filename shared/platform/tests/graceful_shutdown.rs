//! Shutdown lets in-flight requests finish, refuses new connections, and is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use platform::health::Readiness;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn slow_app(delay: Duration) -> Router {
    let routes = Router::new().route(
        "/slow",
        get(move || async move {
            tokio::time::sleep(delay).await;
            "done"
        }),
    );
    platform::http::service_router("test", routes, Readiness::default())
}

#[tokio::test]
async fn in_flight_request_finishes_after_shutdown_starts() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(platform::http::serve(
        listener,
        slow_app(Duration::from_millis(500)),
        shutdown.clone(),
        Duration::from_secs(5),
    ));

    let request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(150)).await;
    shutdown.cancel();

    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    server.await.unwrap().unwrap();

    // The listener is closed: new connections are refused.
    assert!(reqwest::get(format!("http://{addr}/slow")).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(platform::http::serve(
        listener,
        slow_app(Duration::from_secs(60)),
        shutdown.clone(),
        Duration::from_millis(300),
    ));
    let _request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    tokio::time::sleep(Duration::from_millis(100)).await;
    let started = Instant::now();
    shutdown.cancel();
    server.await.unwrap().unwrap();
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "serve outlived its grace period"
    );
}

#[tokio::test]
async fn readiness_without_checks_is_ready_and_panics_become_500() {
    async fn boom() -> &'static str {
        panic!("handler bug")
    }
    let routes = Router::new().route("/boom", get(boom));
    let app = platform::http::service_router("test", routes, Readiness::default());
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let server = tokio::spawn(platform::http::serve(
        listener,
        app,
        shutdown.clone(),
        Duration::from_secs(1),
    ));
    let boom = reqwest::get(format!("http://{addr}/boom")).await.unwrap();
    assert_eq!(boom.status(), 500);
    let ready = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
    assert_eq!(ready.status(), 200);
    shutdown.cancel();
    server.await.unwrap().unwrap();
}
