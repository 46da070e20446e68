//! An export whose upload the server refuses is retried and completes once.

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use test_support::eventually;

use crate::common::System;
use crate::fixtures::{count, deliveries};

const EXPORT_CONSUMER: &str = "exports--export_user_data";

/// `bus_deliveries_total` of one handler and outcome in the worker's `/metrics`. The
/// recorder is process-wide: only one test in this file runs the export handler.
async fn delivery_outcomes(system: &System, handler: &str, outcome: &str) -> u64 {
    let body = test_support::metrics_text(&system.worker_url).await;
    let handler = format!("handler=\"{handler}\"");
    let outcome = format!("outcome=\"{outcome}\"");
    body.lines()
        .filter(|line| {
            line.starts_with("bus_deliveries_total{")
                && line.contains(&handler)
                && line.contains(&outcome)
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum::<f64>() as u64
}

/// The server refuses the archive's upload while the worker builds an export (`500`): no
/// `data_exports` row, no `export.ready`, nothing dead; the task waits for its retry (30 s,
/// not at once) and, the server taking the upload again, completes exactly once.
#[tokio::test]
async fn an_export_whose_upload_the_server_refuses_is_retried_and_completes_once() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "Kept", "content": "safe and sound"}),
        )
        .await;
    let blocker = format!("exports/{}", ada.user_id);
    let store = system.bucket.store();
    store
        .put_bytes(&blocker, b"in the way".to_vec(), "text/plain")
        .await
        .unwrap();

    let export = system.ok(&ada, "exports/create", Value::Null).await;
    let export_id = export["exportId"].as_str().unwrap().to_owned();
    let failed = eventually(Duration::from_secs(60), || async {
        delivery_outcomes(&system, EXPORT_CONSUMER, "retrying").await >= 1
    })
    .await;
    assert!(failed, "the export's upload never failed");
    let failed_at = Instant::now();

    // Nothing claims success, no one is told, nothing is dead.
    for (table, sql) in [
        ("data_exports", "SELECT count(*) FROM data_exports"),
        (
            "processed_messages",
            "SELECT count(*) FROM processed_messages WHERE handler = 'exports--export_user_data'",
        ),
        ("dead_letters", "SELECT count(*) FROM dead_letters"),
    ] {
        assert_eq!(count(&system.worker_pool, sql).await, 0, "{table}");
    }
    // Published messages leave the outbox: look in both.
    assert_eq!(
        system
            .worker_emitted("EVENTS", "events.export.ready")
            .await
            .len(),
        0,
        "export.ready"
    );
    let pending = system
        .ok(&ada, "exports/get", json!({"exportId": export_id}))
        .await;
    assert_eq!(pending["status"], "pending", "{pending}");
    assert!(pending["downloadUrl"].is_null(), "{pending}");

    assert_eq!(system.bucket.keys().await, vec![blocker.clone()]);

    // The server takes the upload again: the retry builds the export.
    store.delete(&blocker).await.unwrap();
    let deadline = Instant::now() + Duration::from_secs(90);
    let ready = loop {
        let export = system
            .ok(&ada, "exports/get", json!({"exportId": export_id}))
            .await;
        if export["status"] == "ready" {
            break export;
        }
        assert!(Instant::now() < deadline, "never ready: {export}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        failed_at.elapsed() >= Duration::from_secs(15),
        "retried after {:?}: no backoff (the first retry waits 30 s ± 20 %)",
        failed_at.elapsed()
    );
    let archive = test_support::get_json(ready["downloadUrl"].as_str().unwrap()).await;
    assert_eq!(archive["exportId"], export_id);
    assert_eq!(archive["journalEntries"][0]["content"], "safe and sound");

    // Exactly once: one failed attempt, one that completed; one of everything.
    assert_eq!(deliveries(&system, EXPORT_CONSUMER).await, 2);
    assert_eq!(
        delivery_outcomes(&system, EXPORT_CONSUMER, "retrying").await,
        1
    );
    assert_eq!(
        delivery_outcomes(&system, EXPORT_CONSUMER, "acked").await,
        1
    );
    for (table, sql) in [
        ("data_exports", "SELECT count(*) FROM data_exports"),
        (
            "processed_messages",
            "SELECT count(*) FROM processed_messages WHERE handler = 'exports--export_user_data'",
        ),
    ] {
        assert_eq!(count(&system.worker_pool, sql).await, 1, "{table}");
    }
    assert_eq!(
        system
            .worker_emitted("EVENTS", "events.export.ready")
            .await
            .len(),
        1,
        "export.ready"
    );
    assert_eq!(
        count(&system.worker_pool, "SELECT count(*) FROM dead_letters").await,
        0
    );
    assert_eq!(
        system.bucket.keys().await,
        vec![format!("exports/{}/{export_id}.json", ada.user_id)]
    );
    system.stop().await;
}
