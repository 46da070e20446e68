//! The api's `/readyz` (issue 17): ready when, and only when, it can take requests.
//!
//! - **Postgres** decides: without it no request can be served. The platform's check retries
//!   a failed pooled connection once on a fresh one before it reports red.
//! - **NATS does not**: while it is down the api still takes writes (the transactional outbox
//!   holds their events until the relay can publish them), so a load balancer must keep the
//!   replica. NATS and the bus consumers are reported in the body as `degraded: …`, and NATS
//!   as the gauge `api_nats_connected` (0/1), which docs/operations.md alerts on.

use platform::health::Readiness;
use platform::infra::Infra;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub const NATS_CONNECTED_GAUGE: &str = "api_nats_connected";

/// Postgres decides; NATS and the bus consumers are only reported.
pub fn readiness(infra: &Infra, consumers: bus::router::ConsumersAttached) -> Readiness {
    infra
        .readiness_with_nats_reported()
        .with_reported_check(consumers)
}

/// Keep `api_nats_connected` current (every second) until `shutdown`.
pub fn spawn_nats_gauge(infra: &Infra, shutdown: CancellationToken) -> JoinHandle<()> {
    platform::nats::spawn_connected_gauge(
        infra.nats.clone(),
        NATS_CONNECTED_GAUGE,
        crate::SERVICE,
        shutdown,
    )
}
