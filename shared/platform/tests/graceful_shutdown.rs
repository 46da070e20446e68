//! Shutdown lets in-flight requests finish, refuses new connections, and is bounded.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::routing::get;
use platform::health::Readiness;
use tokio::net::TcpListener;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// An app whose `/slow` handler reports on `started` that it runs, then waits for `release`
/// (or forever), so a test knows the request is in flight before it starts the shutdown.
fn slow_app(started: mpsc::UnboundedSender<()>, release: Arc<Notify>) -> Router {
    let routes = Router::new().route(
        "/slow",
        get(move || async move {
            let _ = started.send(());
            release.notified().await;
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
    let (started, mut handler_started) = mpsc::unbounded_channel();
    let release = Arc::new(Notify::new());
    let server = tokio::spawn(platform::http::serve(
        listener,
        slow_app(started, Arc::clone(&release)),
        shutdown.clone(),
        Duration::from_secs(30),
    ));

    let request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    handler_started.recv().await.unwrap();
    shutdown.cancel();
    // The shutdown has begun while the request is in flight; now let the handler answer.
    release.notify_one();

    let response = request.await.unwrap().unwrap();
    assert_eq!(response.status(), 200);
    assert_eq!(response.text().await.unwrap(), "done");
    server.await.unwrap().unwrap();

    // The listener is closed: new connections are refused.
    assert!(reqwest::get(format!("http://{addr}/slow")).await.is_err());
}

#[tokio::test]
async fn shutdown_is_bounded_by_the_grace_period() {
    let grace = Duration::from_millis(300);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = CancellationToken::new();
    let (started, mut handler_started) = mpsc::unbounded_channel();
    // Never released: the handler would run forever.
    let release = Arc::new(Notify::new());
    let server = tokio::spawn(platform::http::serve(
        listener,
        slow_app(started, Arc::clone(&release)),
        shutdown.clone(),
        grace,
    ));
    let _request = tokio::spawn(reqwest::get(format!("http://{addr}/slow")));
    handler_started.recv().await.unwrap();
    let started = Instant::now();
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(10), server)
        .await
        .expect("serve outlived its grace period")
        .unwrap()
        .unwrap();
    // It did wait for the request in flight, for the grace period.
    assert!(
        started.elapsed() >= grace,
        "serve returned after {:?}, before the grace period",
        started.elapsed()
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
