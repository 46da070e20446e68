//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, a service exports its request spans over OTLP/HTTP
//! (protobuf to `<endpoint>/v1/traces`); the spans carry the service name. A stand-in
//! collector on localhost receives them.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::HeaderMap;
use axum::routing::post;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::{TestDb, binary, eventually, free_port, get, nats_url};

type Received = Arc<Mutex<Vec<(String, Vec<u8>)>>>;

#[tokio::test]
async fn request_spans_are_exported_over_otlp_http() {
    let received: Received = Arc::default();
    let collector = Router::new().route(
        "/v1/traces",
        post({
            let received = received.clone();
            move |headers: HeaderMap, body: Bytes| async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned();
                received.lock().unwrap().push((content_type, body.to_vec()));
                ""
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let collector_url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, collector).await });

    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let port = free_port();
    let mut child = Command::new(binary("api"))
        .env("PORT", port.to_string())
        .env("HOST", "127.0.0.1")
        .env("DATABASE_URL", db.url())
        .env("NATS_URL", nats_url())
        .env("BUS_NAMESPACE", &namespace)
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", &collector_url)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let base = format!("http://127.0.0.1:{port}");
    assert!(
        eventually(Duration::from_secs(30), || {
            let url = format!("{base}/readyz");
            async move { get(&url).await.0 == 200 }
        })
        .await
    );
    for _ in 0..3 {
        assert_eq!(get(&format!("{base}/healthz")).await.0, 200);
    }
    // SIGTERM flushes the batch of spans on the way out.
    kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM).unwrap();
    assert_eq!(child.wait().unwrap().code(), Some(0));

    assert!(
        eventually(Duration::from_secs(10), || async {
            !received.lock().unwrap().is_empty()
        })
        .await,
        "no spans exported"
    );
    let batches = received.lock().unwrap().clone();
    let all_bytes: Vec<u8> = batches.iter().flat_map(|(_, body)| body.clone()).collect();
    assert!(
        batches
            .iter()
            .all(|(content_type, _)| content_type == "application/x-protobuf"),
        "{batches:?}"
    );
    let contains = |needle: &str| {
        all_bytes
            .windows(needle.len())
            .any(|window| window == needle.as_bytes())
    };
    assert!(contains("http_request"), "the request span is exported");
    assert!(contains("/healthz"), "with its route");
    assert!(contains("api"), "under the service name");
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}
