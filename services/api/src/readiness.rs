//! The api's `/readyz` (issue 17): ready when, and only when, it can take requests.
//!
//! - **Postgres** decides: without it no request can be served. A check that fails on a
//!   pooled connection is retried once on a fresh connection before it reports red (a pooled
//!   connection can be dead while Postgres is fine, e.g. after a restart or a terminated
//!   backend; the pool drops it on release).
//! - **NATS does not**: while it is down the api still takes writes (the transactional outbox
//!   holds their events until the relay can publish them), so a load balancer must keep the
//!   replica. NATS and the bus consumers are reported in the body as `degraded: …` and NATS
//!   as the gauge `api_nats_connected` (0/1), which docs/operations.md alerts on.
//!
//! The body keeps the shape every service answers: `{"ready": bool, "checks": {name: "ok" |
//! what went wrong}}`.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::Json;
use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use platform::health::ReadinessCheck;
use serde::Serialize;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};

/// Each check's deadline (the platform's `/readyz` uses the same).
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);
/// How often `api_nats_connected` is refreshed, probed or not.
const GAUGE_EVERY: Duration = Duration::from_secs(1);

pub const NATS_CONNECTED_GAUGE: &str = "api_nats_connected";

#[derive(Clone)]
pub struct ApiReadiness {
    db: PgPool,
    jetstream: async_nats::jetstream::Context,
    consumers: std::sync::Arc<bus::router::ConsumersAttached>,
}

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    /// Check name → `ok`, what went wrong, or `degraded: …` for what does not decide.
    pub checks: BTreeMap<String, String>,
}

impl ApiReadiness {
    pub fn new(
        db: PgPool,
        jetstream: async_nats::jetstream::Context,
        consumers: bus::router::ConsumersAttached,
    ) -> Self {
        Self {
            db,
            jetstream,
            consumers: std::sync::Arc::new(consumers),
        }
    }

    pub async fn report(&self) -> ReadinessReport {
        let (postgres, nats, consumers) = tokio::join!(
            postgres_check(&self.db),
            platform::nats::ping(&self.jetstream, CHECK_TIMEOUT),
            self.consumers.check(),
        );
        set_nats_gauge(&self.jetstream);
        let ready = postgres.is_ok();
        let mut checks = BTreeMap::new();
        checks.insert("postgres".to_owned(), outcome(postgres));
        checks.insert("nats".to_owned(), degraded(nats));
        checks.insert(self.consumers.name().to_owned(), degraded(consumers));
        ReadinessReport { ready, checks }
    }

    /// `/readyz`, with the request id and request metrics the shared routes carry.
    ///
    /// The platform's router serves its own `/readyz`, where every check decides; this one is
    /// matched first and the platform's router is its fallback.
    pub fn route(self) -> Router {
        Router::new()
            .route("/readyz", get(readyz))
            .with_state(self)
            .layer(axum::middleware::from_fn(record_metrics))
            .layer(PropagateRequestIdLayer::x_request_id())
            .layer(SetRequestIdLayer::x_request_id(MakeRequestUuid))
    }

    /// Keep `api_nats_connected` current between probes.
    pub fn spawn_gauge(&self, shutdown: CancellationToken) -> JoinHandle<()> {
        let jetstream = self.jetstream.clone();
        tokio::spawn(async move {
            let mut every = tokio::time::interval(GAUGE_EVERY);
            loop {
                tokio::select! {
                    _ = every.tick() => set_nats_gauge(&jetstream),
                    () = shutdown.cancelled() => break,
                }
            }
        })
    }
}

fn set_nats_gauge(jetstream: &async_nats::jetstream::Context) {
    let connected =
        jetstream.client().connection_state() == async_nats::connection::State::Connected;
    metrics::gauge!(NATS_CONNECTED_GAUGE, "service" => crate::SERVICE).set(if connected {
        1.0
    } else {
        0.0
    });
}

fn outcome(result: Result<(), String>) -> String {
    result.err().unwrap_or_else(|| "ok".to_owned())
}

fn degraded(result: Result<(), String>) -> String {
    match result {
        Ok(()) => "ok".to_owned(),
        Err(error) => format!("degraded: {error}"),
    }
}

/// `SELECT 1` on a pooled connection; if that fails, once more on a fresh connection.
pub async fn postgres_check(db: &PgPool) -> Result<(), String> {
    let Err(pooled) = platform::db::ping(db, CHECK_TIMEOUT).await else {
        return Ok(());
    };
    let options = db.connect_options();
    let fresh = tokio::time::timeout(CHECK_TIMEOUT, async {
        let mut connection = PgConnection::connect_with(&options).await?;
        sqlx::query("SELECT 1").execute(&mut connection).await?;
        connection.close().await
    })
    .await;
    match fresh {
        Ok(Ok(())) => {
            tracing::info!(error = %pooled, "a pooled connection failed the readiness check; a fresh one passed");
            Ok(())
        }
        Ok(Err(error)) => Err(format!("{pooled}; on a fresh connection: {error}")),
        Err(_) => Err(format!(
            "{pooled}; a fresh connection did not answer within {} ms",
            CHECK_TIMEOUT.as_millis()
        )),
    }
}

async fn readyz(State(readiness): State<ApiReadiness>) -> Response {
    let report = readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        tracing::warn!(checks = ?report.checks, "not ready");
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(report)).into_response()
}

/// The shared routes' request metrics (`platform::http`), for this route.
async fn record_metrics(request: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = request.method().to_string();
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |path| path.as_str().to_owned());
    let response = next.run(request).await;
    let labels = [
        ("service", crate::SERVICE.to_owned()),
        ("method", method),
        ("route", route),
        ("status", response.status().as_u16().to_string()),
    ];
    metrics::counter!("http_requests_total", &labels).increment(1);
    metrics::histogram!("http_request_duration_seconds", &labels)
        .record(started.elapsed().as_secs_f64());
    response
}
