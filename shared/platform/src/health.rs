//! Liveness and readiness. Readiness runs real checks: a query on Postgres, a JetStream API
//! round trip on NATS, plus whatever a service adds (its streams and consumers exist).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use sqlx::PgPool;

type CheckFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + Send + 'a>>;

/// One named readiness check.
pub trait ReadinessCheck: Send + Sync {
    fn name(&self) -> &str;
    fn check(&self) -> CheckFuture<'_>;
}

const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

struct PostgresCheck(PgPool);

impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &str {
        "postgres"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(crate::db::ping(&self.0, CHECK_TIMEOUT))
    }
}

struct NatsCheck(jetstream::Context);

impl ReadinessCheck for NatsCheck {
    fn name(&self) -> &str {
        "nats"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(crate::nats::ping(&self.0, CHECK_TIMEOUT))
    }
}

/// The set of checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<Arc<dyn ReadinessCheck>>,
}

impl Readiness {
    /// Postgres and NATS, the two every service depends on.
    pub fn new(pool: PgPool, jetstream: jetstream::Context) -> Self {
        Self {
            checks: vec![
                Arc::new(PostgresCheck(pool)),
                Arc::new(NatsCheck(jetstream)),
            ],
        }
    }

    pub fn with_check(mut self, check: impl ReadinessCheck + 'static) -> Self {
        self.checks.push(Arc::new(check));
        self
    }

    /// Run every check concurrently.
    pub async fn report(&self) -> ReadinessReport {
        let results = futures::future::join_all(
            self.checks
                .iter()
                .map(|check| async move { (check.name().to_owned(), check.check().await) }),
        )
        .await;
        let ready = results.iter().all(|(_, result)| result.is_ok());
        let checks = results
            .into_iter()
            .map(|(name, result)| (name, result.err().unwrap_or_else(|| "ok".to_owned())))
            .collect();
        ReadinessReport { ready, checks }
    }
}

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    /// Check name → `ok` or what went wrong.
    pub checks: BTreeMap<String, String>,
}

pub async fn healthz() -> &'static str {
    "ok"
}

pub async fn readyz(State(readiness): State<Readiness>) -> Response {
    let report = readiness.report().await;
    let status = if report.ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    if !report.ready {
        tracing::warn!(checks = ?report.checks, "not ready");
    }
    (status, Json(report)).into_response()
}

pub async fn metrics() -> Response {
    (
        [(
            axum::http::header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        crate::metrics::render(),
    )
        .into_response()
}
