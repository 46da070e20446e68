//! Liveness and readiness. Readiness runs real checks: a query on Postgres, a JetStream API
//! round trip on NATS, plus whatever a service adds (its streams and consumers exist).
//!
//! Each check either **decides** readiness (it fails → `/readyz` answers 503) or is only
//! **reported**: its failure shows in the body as `degraded: …` while the service stays ready,
//! for a dependency the service can do its job without for a while (the api and NATS: the
//! outbox keeps its events). The body is the same for every service:
//! `{"ready": bool, "checks": {name: "ok" | what went wrong | "degraded: …"}}`.

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

/// Each check's deadline.
pub const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

/// Postgres answers `SELECT 1`. A failure on a pooled connection is retried once on a fresh
/// one before it counts: after a Postgres restart (or a terminated backend) a pooled
/// connection can be dead while Postgres is fine, and the pool drops it on release.
pub struct PostgresCheck(PgPool);

impl PostgresCheck {
    pub fn new(pool: PgPool) -> Self {
        Self(pool)
    }
}

impl ReadinessCheck for PostgresCheck {
    fn name(&self) -> &str {
        "postgres"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(crate::db::ping_with_fresh_retry(&self.0, CHECK_TIMEOUT))
    }
}

/// NATS is connected and JetStream answers.
pub struct NatsCheck(jetstream::Context);

impl NatsCheck {
    pub fn new(jetstream: jetstream::Context) -> Self {
        Self(jetstream)
    }
}

impl ReadinessCheck for NatsCheck {
    fn name(&self) -> &str {
        "nats"
    }
    fn check(&self) -> CheckFuture<'_> {
        Box::pin(crate::nats::ping(&self.0, CHECK_TIMEOUT))
    }
}

/// Whether a check's failure makes the service unready or is only reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    Decides,
    Reported,
}

/// The set of checks behind `/readyz`.
#[derive(Clone, Default)]
pub struct Readiness {
    checks: Vec<(Arc<dyn ReadinessCheck>, Role)>,
}

impl Readiness {
    /// Postgres and NATS, the two every service depends on, both deciding.
    pub fn new(pool: PgPool, jetstream: jetstream::Context) -> Self {
        Self::default()
            .with_check(PostgresCheck::new(pool))
            .with_check(NatsCheck::new(jetstream))
    }

    /// Postgres deciding, NATS only reported (`degraded: …` while it is down): for a service
    /// that does its job without NATS for a while.
    pub fn with_nats_reported(pool: PgPool, jetstream: jetstream::Context) -> Self {
        Self::default()
            .with_check(PostgresCheck::new(pool))
            .with_reported_check(NatsCheck::new(jetstream))
    }

    /// Add a check that decides readiness.
    pub fn with_check(mut self, check: impl ReadinessCheck + 'static) -> Self {
        self.checks.push((Arc::new(check), Role::Decides));
        self
    }

    /// Add a check that is only reported: its failure reads `degraded: …` and leaves the
    /// service ready.
    pub fn with_reported_check(mut self, check: impl ReadinessCheck + 'static) -> Self {
        self.checks.push((Arc::new(check), Role::Reported));
        self
    }

    /// Run every check concurrently.
    pub async fn report(&self) -> ReadinessReport {
        let results =
            futures::future::join_all(self.checks.iter().map(|(check, role)| async move {
                (check.name().to_owned(), *role, check.check().await)
            }))
            .await;
        let ready = results
            .iter()
            .all(|(_, role, result)| *role == Role::Reported || result.is_ok());
        let checks = results
            .into_iter()
            .map(|(name, role, result)| {
                let outcome = match (result, role) {
                    (Ok(()), _) => "ok".to_owned(),
                    (Err(error), Role::Decides) => error,
                    (Err(error), Role::Reported) => format!("degraded: {error}"),
                };
                (name, outcome)
            })
            .collect();
        ReadinessReport { ready, checks }
    }
}

#[derive(Debug, Serialize)]
pub struct ReadinessReport {
    pub ready: bool,
    /// Check name → `ok`, what went wrong, or `degraded: …` for a check that does not decide.
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

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(&'static str, Result<(), &'static str>);

    impl ReadinessCheck for Fixed {
        fn name(&self) -> &str {
            self.0
        }
        fn check(&self) -> CheckFuture<'_> {
            let result = self.1.map_err(str::to_owned);
            Box::pin(async move { result })
        }
    }

    #[tokio::test]
    async fn a_failing_reported_check_degrades_but_a_failing_deciding_one_unreadies() {
        let report = Readiness::default()
            .with_check(Fixed("postgres", Ok(())))
            .with_reported_check(Fixed("nats", Err("disconnected")))
            .report()
            .await;
        assert!(report.ready);
        assert_eq!(report.checks["postgres"], "ok");
        assert_eq!(report.checks["nats"], "degraded: disconnected");

        let report = Readiness::default()
            .with_check(Fixed("postgres", Err("refused")))
            .with_reported_check(Fixed("nats", Ok(())))
            .report()
            .await;
        assert!(!report.ready);
        assert_eq!(report.checks["postgres"], "refused");
        assert_eq!(report.checks["nats"], "ok");
    }
}
