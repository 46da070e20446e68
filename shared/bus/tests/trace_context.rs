//! W3C trace context survives the hop: request span → outbox row → relay → NATS headers →
//! handler span, which belongs to the same trace. (Its own test binary: it installs a global
//! tracing subscriber.)

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bus::{BusRouter, HandlerError, Meta, Msg, State};
use messages::journal::v1::BusProbe;
use opentelemetry::trace::{TraceContextExt, TraceId, TracerProvider as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::layer::SubscriberExt;

#[derive(Default)]
struct Seen {
    trace_ids: Mutex<Vec<TraceId>>,
}

async fn capture_trace(
    State(seen): State<Arc<Seen>>,
    Msg(_): Msg<BusProbe>,
    _meta: Meta,
) -> Result<(), HandlerError> {
    let trace_id = tracing::Span::current()
        .context()
        .span()
        .span_context()
        .trace_id();
    seen.trace_ids.lock().unwrap().push(trace_id);
    Ok(())
}

#[tokio::test]
async fn handler_span_continues_the_emitters_trace() {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    let provider = SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("trace-test")));
    tracing::subscriber::set_global_default(subscriber).unwrap();

    let fixture = common::Fixture::new(&test_support::nats_url()).await;
    let shutdown = CancellationToken::new();
    let seen = Arc::new(Seen::default());
    let router = BusRouter::new(fixture.bus.clone(), fixture.pool.clone(), seen.clone())
        .task::<BusProbe, _, _>(capture_trace)
        .spawn(shutdown.clone());
    let relay = fixture.spawn_relay(&shutdown);

    // The "HTTP request": a root span in which the state change and its message commit.
    let request_span = tracing::info_span!("http_request");
    let request_trace_id = request_span.context().span().span_context().trace_id();
    assert_ne!(request_trace_id, TraceId::INVALID);
    let pool = fixture.pool.clone();
    async move {
        let mut tx = pool.begin().await.unwrap();
        bus::outbox::emit(&mut tx, &common::probe(1, ""))
            .await
            .unwrap();
        tx.commit().await.unwrap();
    }
    .instrument(request_span)
    .await;

    assert!(
        test_support::eventually(Duration::from_secs(20), || async {
            !seen.trace_ids.lock().unwrap().is_empty()
        })
        .await
    );
    let handler_trace_id = seen.trace_ids.lock().unwrap()[0];
    assert_eq!(
        handler_trace_id, request_trace_id,
        "the handler's span is in the request's trace"
    );

    shutdown.cancel();
    relay.await.unwrap();
    router.join().await;
    fixture.cleanup().await;
}
