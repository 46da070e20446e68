//! The five services in-process against real Postgres and NATS: health, readiness, metrics,
//! per-schema migrations, shutdown, and readiness that recovers by itself when Postgres or
//! NATS restarts underneath.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use e2e_tests::{delete_namespace, start_all, unique_namespace, wait_ready_status};
use test_support::{PrivateNats, PrivatePostgres, TestDb, get, nats_url};

#[tokio::test]
async fn every_service_serves_health_readiness_and_metrics() {
    let db = TestDb::new().await;
    let namespace = unique_namespace();
    let services = start_all(db.url(), &nats_url(), &namespace).await;
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;

    let pool = db.pool().await;
    for service in &services {
        let (status, body) = get(&format!("{}/healthz", service.base_url)).await;
        assert_eq!(
            (status, body.as_str()),
            (200, "ok"),
            "{} /healthz",
            service.name
        );

        let (status, body) = get(&format!("{}/readyz", service.base_url)).await;
        assert_eq!(status, 200, "{} /readyz: {body}", service.name);
        let report: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(
            report["checks"]["postgres"], "ok",
            "{}: {body}",
            service.name
        );
        assert_eq!(report["checks"]["nats"], "ok", "{}: {body}", service.name);

        // Every response carries a request id.
        let response = reqwest::get(format!("{}/healthz", service.base_url))
            .await
            .unwrap();
        let request_id = response
            .headers()
            .get("x-request-id")
            .expect("x-request-id header");
        assert!(!request_id.is_empty());

        let (status, metrics) = get(&format!("{}/metrics", service.base_url)).await;
        assert_eq!(status, 200);
        let readyz_series = format!(
            "http_requests_total{{service=\"{}\",method=\"GET\",route=\"/readyz\",status=\"200\"}}",
            service.name
        );
        assert!(
            metrics.contains(&readyz_series),
            "{}: no {readyz_series} in\n{metrics}",
            service.name
        );
        assert!(
            metrics.contains("http_request_duration_seconds_bucket"),
            "{}: no latency histogram",
            service.name
        );

        // Each service keeps its own migration history inside its own schema.
        let history: Option<String> = sqlx::query_scalar(&format!(
            "SELECT to_regclass('{}._sqlx_migrations')::text",
            service.schema
        ))
        .fetch_one(&pool)
        .await
        .unwrap();
        assert!(
            history.is_some(),
            "{}: no migration history in schema {}",
            service.name,
            service.schema
        );
    }
    pool.close().await;

    for service in services {
        let name = service.name;
        service
            .stop()
            .await
            .unwrap_or_else(|error| panic!("{name} did not stop cleanly: {error}"));
    }
    delete_namespace(&nats_url(), &namespace).await;
}

#[tokio::test]
async fn unknown_routes_are_404_and_counted_without_raw_paths() {
    let db = TestDb::new().await;
    let namespace = unique_namespace();
    let services = start_all(db.url(), &nats_url(), &namespace).await;
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;
    let api = &services[0];
    let (status, _) = get(&format!("{}/no/such/path/12345", api.base_url)).await;
    assert_eq!(status, 404);
    let (_, metrics) = get(&format!("{}/metrics", api.base_url)).await;
    assert!(metrics.contains("route=\"unmatched\""), "{metrics}");
    assert!(
        !metrics.contains("12345"),
        "raw paths must not become metric labels"
    );
    for service in services {
        service.stop().await.unwrap();
    }
    delete_namespace(&nats_url(), &namespace).await;
}

#[tokio::test]
async fn readiness_recovers_after_postgres_and_nats_restart() {
    let mut postgres = PrivatePostgres::start();
    let mut nats = PrivateNats::start();
    let db = TestDb::on_server(&postgres.admin_url()).await;
    let services = start_all(db.url(), &nats.url(), &unique_namespace()).await;
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;

    // Postgres goes away: every service reports it, then recovers with no restart.
    postgres.stop();
    wait_ready_status(&services, 503, Duration::from_secs(15)).await;
    let (_, body) = get(&format!("{}/readyz", services[0].base_url)).await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(report["checks"]["postgres"], "ok", "{body}");
    assert_eq!(report["checks"]["nats"], "ok", "{body}");
    postgres.resume();
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;

    // Same for NATS, except the api: it still takes writes (the outbox holds their events),
    // so it stays ready and reports NATS as degraded (issue 17).
    nats.stop();
    assert_eq!(services[0].name, "api");
    wait_ready_status(&services[1..], 503, Duration::from_secs(15)).await;
    let (_, body) = get(&format!("{}/readyz", services[1].base_url)).await;
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_ne!(report["checks"]["nats"], "ok", "{body}");
    let (status, body) = get(&format!("{}/readyz", services[0].base_url)).await;
    assert_eq!(status, 200, "the api stays ready without NATS: {body}");
    let report: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(
        report["checks"]["nats"]
            .as_str()
            .is_some_and(|nats| nats.starts_with("degraded: ")),
        "{body}"
    );
    nats.resume();
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;

    for service in services {
        service.stop().await.unwrap();
    }
    drop(db);
}

/// The one-folder layout every schema had before the bus's tables moved to
/// `shared/bus/migrations`: the bus's files and the schema's own in `migrations/<schema>/`.
/// The moved files are byte-identical to the old copies (`bus::tables` checks their checksum),
/// so this is what an older release applied.
fn one_folder_layout(root: &std::path::Path, schema: &str, into: &std::path::Path) {
    for dir in [
        root.join("shared/bus/migrations"),
        root.join("migrations").join(schema),
    ] {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            std::fs::copy(&path, into.join(path.file_name().unwrap())).unwrap();
        }
    }
}

/// A database migrated by a release from before the move (one folder per schema, the bus's
/// migration copied into each) is started by this one: every service accepts the recorded
/// history (same versions, same checksums), applies nothing, and becomes ready.
#[tokio::test]
async fn a_database_migrated_before_the_bus_tables_moved_starts_every_service() {
    let db = TestDb::new().await;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let secret = secrecy::SecretString::from(db.url().to_owned());
    let mut applied = Vec::new();
    for schema in ["api", "sync", "worker", "cron", "notifier"] {
        let folder = tempfile::tempdir().unwrap();
        one_folder_layout(&root, schema, folder.path());
        let old = sqlx::migrate::Migrator::new(folder.path().to_path_buf())
            .await
            .unwrap();
        let pool = platform::db::connect_and_migrate(&secret, schema, 2, &old)
            .await
            .unwrap();
        let history: Vec<(i64, Vec<u8>)> =
            sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations ORDER BY version")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert!(
            history
                .iter()
                .any(|(version, _)| *version == 20261124080000)
        );
        applied.push((schema, history));
        pool.close().await;
    }

    let namespace = unique_namespace();
    let services = start_all(db.url(), &nats_url(), &namespace).await;
    wait_ready_status(&services, 200, Duration::from_secs(30)).await;
    let pool = db.pool().await;
    for (schema, before) in &applied {
        let after: Vec<(i64, Vec<u8>)> = sqlx::query_as(&format!(
            "SELECT version, checksum FROM {schema}._sqlx_migrations ORDER BY version"
        ))
        .fetch_all(&pool)
        .await
        .unwrap();
        assert_eq!(&after, before, "{schema}: the history changed");
    }
    pool.close().await;
    for service in services {
        service.stop().await.unwrap();
    }
    delete_namespace(&nats_url(), &namespace).await;
}
