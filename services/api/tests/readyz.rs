//! The api's readiness (issue 17): NATS down leaves it ready (reported as degraded, and as
//! the `api_nats_connected` gauge); a dead pooled Postgres connection is retried on a fresh
//! one before the check reports red. Real servers: a private NATS the test kills, and the
//! shared Postgres whose backends the test terminates.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::TestApi;
use serde_json::{Value, json};
use test_support::PrivateNats;

const BOUND: Duration = Duration::from_secs(30);

async fn readyz(api: &TestApi) -> (u16, Value) {
    let response = api
        .client
        .get(format!("{}/readyz", api.base_url))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap())
}

/// The value of `api_nats_connected` in `/metrics`.
async fn nats_gauge(api: &TestApi) -> Option<f64> {
    test_support::metrics_text(&api.base_url)
        .await
        .lines()
        .find(|line| {
            line.starts_with("api_nats_connected{") || line.starts_with("api_nats_connected ")
        })
        .and_then(|line| line.rsplit(' ').next())
        .map(|value| value.parse().unwrap())
}

/// NATS killed: `/readyz` stays 200 with `nats: degraded: …`, the gauge drops to 0, writes
/// still succeed (the outbox keeps their events); NATS back: `ok` and 1 again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_stays_ready_and_reports_nats_degraded_while_nats_is_down() {
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let api = TestApi::start_with(move |config| config.common.nats_url = nats_url).await;
    let user = api.login("readyz@example.com").await;
    let (status, report) = readyz(&api).await;
    assert_eq!(status, 200, "{report}");
    assert_eq!(report["checks"]["nats"], "ok", "{report}");
    assert_eq!(report["checks"]["postgres"], "ok", "{report}");
    assert_eq!(nats_gauge(&api).await, Some(1.0));

    nats.stop();
    let degraded = test_support::eventually(BOUND, || async {
        let (_, report) = readyz(&api).await;
        report["checks"]["nats"]
            .as_str()
            .is_some_and(|nats| nats.starts_with("degraded: "))
    })
    .await;
    assert!(degraded, "NATS never reported as degraded");
    let (status, report) = readyz(&api).await;
    assert_eq!(status, 200, "NATS down must not take the api out: {report}");
    assert_eq!(report["ready"], true, "{report}");
    assert_eq!(report["checks"]["postgres"], "ok", "{report}");
    let gauge_dropped =
        test_support::eventually(BOUND, || async { nats_gauge(&api).await == Some(0.0) }).await;
    assert!(
        gauge_dropped,
        "api_nats_connected stayed {:?}",
        nats_gauge(&api).await
    );
    let written = api
        .call(
            Some(&user),
            "journalEntries/create",
            json!({"title": "While NATS is down", "content": "kept by the outbox"}),
        )
        .await;
    assert_eq!(written.status, 200, "{}", written.json);

    nats.resume();
    let back = test_support::eventually(BOUND, || async {
        let (status, report) = readyz(&api).await;
        status == 200 && report["checks"]["nats"] == "ok"
    })
    .await;
    assert!(back, "NATS never reported ok again");
    let gauge_back =
        test_support::eventually(BOUND, || async { nats_gauge(&api).await == Some(1.0) }).await;
    assert!(gauge_back, "api_nats_connected never went back to 1");
    api.stop().await;
}

/// Every backend of the api's pool terminated right after use (so the pool hands one out
/// without pinging it): the readiness check's query fails on it, is retried on a fresh
/// connection, and `/readyz` stays 200.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_retries_a_dead_pooled_connection_on_a_fresh_one() {
    let api = TestApi::start().await;
    for round in 0..3 {
        // Several checks at once: several pooled connections were used a moment ago. Right
        // after the previous round, the checks may meet only its dead pooled connections
        // (idle for less than the checkout ping's second) and pass on detached fresh ones,
        // leaving the pool empty: warm again until the pool holds a live connection.
        let deadline = tokio::time::Instant::now() + BOUND;
        let terminated = loop {
            let warm: Vec<_> = (0..4).map(|_| readyz(&api)).collect();
            for (status, report) in futures::future::join_all(warm).await {
                assert_eq!(status, 200, "{report}");
            }
            // In the select list, so only this database's api backends are terminated.
            let terminated: Vec<(i32, bool)> = sqlx::query_as(
                "SELECT pid, pg_terminate_backend(pid) FROM pg_stat_activity
                  WHERE datname = current_database() AND application_name = 'api'",
            )
            .fetch_all(&api.pool)
            .await
            .unwrap();
            if !terminated.is_empty() || tokio::time::Instant::now() >= deadline {
                break terminated;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let terminated: Vec<i32> = terminated.into_iter().map(|(pid, _)| pid).collect();
        assert!(!terminated.is_empty(), "no pooled connection to terminate");
        let gone = test_support::eventually(BOUND, || async {
            let left: i64 =
                sqlx::query_scalar("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY($1)")
                    .bind(&terminated)
                    .fetch_one(&api.pool)
                    .await
                    .unwrap();
            left == 0
        })
        .await;
        assert!(gone, "the terminated backends did not exit");
        let (status, report) = readyz(&api).await;
        assert_eq!(status, 200, "round {round}: {report}");
        assert_eq!(
            report["checks"]["postgres"], "ok",
            "round {round}: {report}"
        );
    }
    api.stop().await;
}
