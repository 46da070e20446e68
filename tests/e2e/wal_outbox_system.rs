//! `BUS_OUTBOX=wal` with the real `api` and `worker` binaries (docs/bus.md, "The WAL outbox"):
//! on a PostgreSQL at `wal_level=logical` an entry's event reaches the worker with no outbox
//! row written; on one without logical decoding the service refuses to start and says why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use e2e_tests::ServiceProcess;
use serde_json::json;
use test_support::{PrivatePostgres, binary, eventually, free_port, nats_url};

const WAIT: Duration = Duration::from_secs(30);

#[tokio::test]
async fn with_the_wal_outbox_entries_reach_the_worker_and_no_outbox_row_is_written() {
    let postgres = PrivatePostgres::start_with(&["wal_level=logical"]);
    let database_url = postgres.admin_url();
    let namespace = e2e_tests::unique_namespace();
    let wal = ("BUS_OUTBOX", "wal".to_owned());
    let api = ServiceProcess::start(
        "api",
        &database_url,
        &namespace,
        &[wal.clone(), ("AUTH_DEV_LOGIN", "true".to_owned())],
    )
    .await;
    let worker = ServiceProcess::start("worker", &database_url, &namespace, &[wal]).await;
    let client = reqwest::Client::new();
    let login = e2e_tests::dev_login(&client, &api.base_url, "ada@example.com", "Ada").await;

    let mut created = BTreeSet::new();
    for title in ["one", "two", "three"] {
        let response = client
            .post(format!("{}/rpc/journalEntries/create", api.base_url))
            .bearer_auth(&login.token)
            .json(&json!({"json": {"title": title, "content": "written into the WAL"}}))
            .send()
            .await
            .unwrap();
        assert_eq!(response.status(), 200);
        let body: serde_json::Value = response.json().await.unwrap();
        created.insert(body["json"]["journalEntryId"].as_str().unwrap().to_owned());
    }

    let pool = sqlx::PgPool::connect(&database_url).await.unwrap();
    let recorded = eventually(WAIT, || async {
        let ids: Vec<String> =
            sqlx::query_scalar("SELECT journal_entry_id::text FROM worker.journal_entry_activity")
                .fetch_all(&pool)
                .await
                .unwrap();
        ids.into_iter().collect::<BTreeSet<_>>() == created
    })
    .await;
    assert!(recorded, "the worker did not record each entry once");

    // The api's slot exists and its relay moved it past what it published.
    let slot: Option<(bool, i64)> = sqlx::query_as(
        "SELECT active, (pg_current_wal_lsn() - confirmed_flush_lsn)::bigint
           FROM pg_replication_slots WHERE slot_name = 'bus_outbox_postgres_api'",
    )
    .fetch_optional(&pool)
    .await
    .unwrap();
    assert!(slot.is_some(), "the api made no slot");

    // The entries and their outbox writes are one statement, so their table statistics reach
    // the cumulative view together: once the entries show, a table outbox row would too.
    let counted = eventually(WAIT, || async {
        inserts(&pool, "api", "journal_entries").await >= 3
    })
    .await;
    assert!(
        counted,
        "the entries' inserts never reached pg_stat_user_tables"
    );
    assert_eq!(
        inserts(&pool, "api", "outbox").await,
        0,
        "the api wrote outbox rows with BUS_OUTBOX=wal"
    );

    api.stop().await;
    worker.stop().await;
    pool.close().await;
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}

async fn inserts(pool: &sqlx::PgPool, schema: &str, table: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT coalesce(sum(n_tup_ins), 0)::bigint FROM pg_stat_user_tables
          WHERE schemaname = $1 AND relname = $2",
    )
    .bind(schema)
    .bind(table)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[test]
fn the_wal_outbox_without_logical_decoding_fails_start_with_exit_1_and_says_why() {
    // `wal_level=replica`, PostgreSQL's default.
    let postgres = PrivatePostgres::start();
    let output = Command::new(binary("api"))
        .env("PORT", free_port().to_string())
        .env("DATABASE_URL", postgres.admin_url())
        .env("NATS_URL", nats_url())
        .env("BUS_NAMESPACE", e2e_tests::unique_namespace())
        .env("BUS_OUTBOX", "wal")
        .env("LOG_FORMAT", "json")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(1), "{stdout}");
    assert!(
        stdout.contains("wal_level=logical") && stdout.contains("bus_outbox_postgres_api"),
        "the failure names the setting and the slot: {stdout}"
    );
}
