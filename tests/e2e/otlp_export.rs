//! With `OTEL_EXPORTER_OTLP_ENDPOINT` set, the services export their spans over OTLP/HTTP
//! (protobuf to `<endpoint>/v1/traces`), each under its own `service.name`, and one trace
//! follows a request through the bus: an export asked of the api is built by the worker and
//! announced by the notifier, all in the api request's trace. A stand-in collector on
//! localhost receives and decodes the spans.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use e2e_tests::ServiceProcess;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use serde_json::Value;
use test_support::{TestBucket, TestDb, eventually, nats_url};

const SUPRSEND_KEY: &str = "otlp-suprsend-key";

/// One decoded span: the service that exported it, its trace, name and attributes.
#[derive(Debug, Clone)]
struct Span {
    service: String,
    trace_id: Vec<u8>,
    name: String,
    attributes: BTreeMap<String, String>,
}

type Spans = Arc<Mutex<Vec<Span>>>;

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|value| value.value.as_ref()) {
        Some(any_value::Value::StringValue(text)) => text.clone(),
        Some(any_value::Value::IntValue(number)) => number.to_string(),
        Some(any_value::Value::BoolValue(flag)) => flag.to_string(),
        other => format!("{other:?}"),
    }
}

fn attributes(pairs: &[KeyValue]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|pair| (pair.key.clone(), text(pair.value.as_ref())))
        .collect()
}

/// A collector that decodes every batch; anything but an OTLP protobuf body fails the request
/// and is recorded as a problem.
async fn collector() -> (String, Spans, Arc<Mutex<Vec<String>>>) {
    let spans = Spans::default();
    let problems: Arc<Mutex<Vec<String>>> = Arc::default();
    let app = Router::new().route(
        "/v1/traces",
        post({
            let spans = spans.clone();
            let problems = problems.clone();
            move |headers: HeaderMap, body: Bytes| async move {
                let content_type = headers
                    .get("content-type")
                    .and_then(|value| value.to_str().ok())
                    .unwrap_or("");
                if content_type != "application/x-protobuf" {
                    problems
                        .lock()
                        .unwrap()
                        .push(format!("content type {content_type:?}"));
                    return StatusCode::UNSUPPORTED_MEDIA_TYPE;
                }
                let request = match ExportTraceServiceRequest::decode(body) {
                    Ok(request) => request,
                    Err(error) => {
                        problems
                            .lock()
                            .unwrap()
                            .push(format!("undecodable: {error}"));
                        return StatusCode::BAD_REQUEST;
                    }
                };
                let mut received = spans.lock().unwrap();
                for resource_spans in request.resource_spans {
                    let resource = attributes(
                        &resource_spans
                            .resource
                            .map(|resource| resource.attributes)
                            .unwrap_or_default(),
                    );
                    let service = resource.get("service.name").cloned().unwrap_or_default();
                    for scope_spans in resource_spans.scope_spans {
                        for span in scope_spans.spans {
                            received.push(Span {
                                service: service.clone(),
                                trace_id: span.trace_id,
                                name: span.name,
                                attributes: attributes(&span.attributes),
                            });
                        }
                    }
                }
                StatusCode::OK
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, spans, problems)
}

/// A SuprSend stand-in that accepts everything with the right key.
async fn suprsend() -> (String, Arc<Mutex<Vec<(String, Value)>>>) {
    let requests: Arc<Mutex<Vec<(String, Value)>>> = Arc::default();
    let app = Router::new().fallback({
        let requests = requests.clone();
        move |uri: axum::http::Uri, headers: HeaderMap, body: String| async move {
            let authorized = headers
                .get("authorization")
                .is_some_and(|value| value == format!("Bearer {SUPRSEND_KEY}").as_str());
            if !authorized {
                return StatusCode::UNAUTHORIZED;
            }
            let body = serde_json::from_str(&body).unwrap_or(Value::Null);
            requests.lock().unwrap().push((uri.path().to_owned(), body));
            StatusCode::ACCEPTED
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, requests)
}

// Multi-threaded so the stand-in collector keeps answering on its own thread while the
// services flush their last spans on the way out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_an_export_from_the_api_through_the_worker_to_the_notifier() {
    let (collector_url, spans, problems) = collector().await;
    let (suprsend_url, notifications) = suprsend().await;
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let bucket = TestBucket::new().await;
    let otlp = ("OTEL_EXPORTER_OTLP_ENDPOINT", collector_url.clone());
    let mut api_env = bucket.env();
    api_env.push(("AUTH_DEV_LOGIN", "true".to_owned()));
    api_env.push(otlp.clone());
    let api = ServiceProcess::start("api", db.url(), &namespace, &api_env).await;
    let mut worker_env = bucket.env();
    worker_env.push(otlp.clone());
    let worker = ServiceProcess::start("worker", db.url(), &namespace, &worker_env).await;
    let notifier = ServiceProcess::start(
        "notifier",
        db.url(),
        &namespace,
        &[
            ("SUPRSEND_BASE_URL", suprsend_url),
            ("SUPRSEND_API_KEY", SUPRSEND_KEY.to_owned()),
            otlp,
        ],
    )
    .await;

    let client = reqwest::Client::new();
    let token = e2e_tests::dev_login(&client, &api.base_url, "ada@example.com", "Ada")
        .await
        .token;
    let export = test_support::rpc_ok(
        &client,
        &api.base_url,
        &token,
        "exports/create",
        Value::Null,
    )
    .await;
    let export_id = export["exportId"].as_str().unwrap().to_owned();
    let announced = eventually(Duration::from_secs(60), || async {
        notifications
            .lock()
            .unwrap()
            .iter()
            .any(|(path, body)| path == "/trigger/" && body.to_string().contains(&export_id))
    })
    .await;
    assert!(
        announced,
        "the export was never announced: {:?}",
        notifications.lock().unwrap()
    );
    for process in [api, worker, notifier] {
        // SIGTERM flushes the last batch of spans on the way out.
        process.stop().await;
    }
    assert!(
        problems.lock().unwrap().is_empty(),
        "{:?}",
        problems.lock().unwrap()
    );

    // The last batches may still be in flight to the collector.
    let all_three = eventually(Duration::from_secs(15), || async {
        let spans = spans.lock().unwrap();
        let services: BTreeSet<&str> = spans.iter().map(|span| span.service.as_str()).collect();
        ["api", "notifier", "worker"]
            .iter()
            .all(|service| services.contains(service))
    })
    .await;
    assert!(
        all_three,
        "spans from the api, the worker and the notifier arrived"
    );
    let spans = spans.lock().unwrap().clone();
    let services: BTreeSet<&str> = spans.iter().map(|span| span.service.as_str()).collect();
    assert_eq!(
        services,
        BTreeSet::from(["api", "notifier", "worker"]),
        "every span carries its service's name"
    );
    // The export request's span, with its route.
    let request = spans
        .iter()
        .find(|span| {
            span.service == "api"
                && span
                    .attributes
                    .values()
                    .any(|value| value.contains("/rpc/exports/create"))
        })
        .unwrap_or_else(|| panic!("no api span for the export request: {spans:#?}"));
    assert_eq!(request.name, "http_request", "{request:?}");
    assert_eq!(request.trace_id.len(), 16, "{request:?}");
    assert!(request.trace_id.iter().any(|byte| *byte != 0));
    // The worker's and the notifier's handling of it belong to the same trace.
    let in_trace: BTreeSet<&str> = spans
        .iter()
        .filter(|span| span.trace_id == request.trace_id)
        .map(|span| span.service.as_str())
        .collect();
    assert_eq!(
        in_trace,
        BTreeSet::from(["api", "notifier", "worker"]),
        "the trace of the export request: {:#?}",
        spans
            .iter()
            .filter(|span| span.trace_id == request.trace_id)
            .collect::<Vec<_>>()
    );
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}
