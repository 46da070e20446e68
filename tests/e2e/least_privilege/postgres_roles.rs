//! PostgreSQL roles: each service owns its schema and cannot touch another's.

use sqlx::Connection;
use test_support::TestDb;

use crate::fixtures::{bootstrap, check_generated, role, role_url, secret};

/// The Postgres error code of a failed query.
fn sql_state(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(error) => error.code().map(|code| code.into_owned()),
        _ => None,
    }
}

#[tokio::test]
async fn each_service_role_owns_its_schema_and_cannot_touch_another() {
    let db = TestDb::new().await;
    // An install from before the roles: the api's schema migrated by the administrator.
    let old = platform::db::connect_and_migrate(&secret(db.url()), "api", 2, &api::MIGRATOR)
        .await
        .unwrap();
    old.close().await;

    // Several bootstraps at once (as parallel tests on one server do): all succeed.
    let runs = (0..3).map(|_| bootstrap(&db));
    futures::future::join_all(runs).await;
    bootstrap(&db).await; // and again: idempotent

    let migrators = [
        ("api", &api::MIGRATOR),
        ("sync-streamer", &sync_streamer::MIGRATOR),
        ("worker", &worker::MIGRATOR),
        ("cron", &cron::MIGRATOR),
        ("notifier", &notifier::MIGRATOR),
    ];
    let admin = db.pool().await;
    for (service, migrator) in migrators {
        let role = role(service);
        // The service migrates its schema under its own role, as at start.
        let pool = platform::db::connect_and_migrate(
            &secret(&role_url(&db, service)),
            role.schema,
            2,
            migrator,
        )
        .await
        .unwrap_or_else(|error| panic!("{service} cannot migrate as {}: {error}", role.role));
        let current: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(current, role.role);
        pool.close().await;

        let (tables, foreign): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE pg_get_userbyid(c.relowner) <> $2)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
        )
        .bind(role.schema)
        .bind(role.role)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(tables > 0, "{}: no tables", role.schema);
        assert_eq!(
            foreign, 0,
            "every table of {} is owned by {}",
            role.schema, role.role
        );
    }

    // The api's role may change the tables the administrator created before the bootstrap.
    let api_pool = platform::db::connect(&secret(&role_url(&db, "api")), "api", 1)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM users")
        .execute(&api_pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE users ADD COLUMN least_privilege_probe int")
        .execute(&api_pool)
        .await
        .unwrap();
    api_pool.close().await;

    // The worker's role reads and writes its own schema only.
    let mut worker = sqlx::PgConnection::connect(&role_url(&db, "worker"))
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM worker.journal_entry_activity")
        .execute(&mut worker)
        .await
        .unwrap();
    for (what, sql) in [
        ("read the api's users", "SELECT count(*) FROM api.users"),
        (
            "write the notifier's table",
            "DELETE FROM notifier.notifications",
        ),
        ("create a schema", "CREATE SCHEMA sneaky"),
        (
            "create a table in public",
            "CREATE TABLE public.sneaky (id int)",
        ),
    ] {
        let error = sqlx::query(sql)
            .execute(&mut worker)
            .await
            .err()
            .unwrap_or_else(|| panic!("journal_worker may {what}"));
        assert_eq!(
            sql_state(&error).as_deref(),
            Some("42501"),
            "{what}: {error}"
        );
        assert!(error.to_string().contains("permission denied"), "{error}");
    }
    worker.close().await.unwrap();
    admin.close().await;
}

#[tokio::test]
async fn a_role_without_its_schema_is_told_to_run_the_bootstrap() {
    let db = TestDb::new().await;
    bootstrap(&db).await;
    let admin = db.pool().await;
    sqlx::query("DROP SCHEMA cron CASCADE")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let error = platform::db::connect_and_migrate(
        &secret(&role_url(&db, "cron")),
        "cron",
        1,
        &cron::MIGRATOR,
    )
    .await
    .expect_err("the cron role may not create its schema");
    let message = error.to_string();
    assert!(
        message.contains("schema `cron` does not exist")
            && message.contains("cargo xtask db roles"),
        "{message}"
    );
}

/// The checked-in SQL (compose's one-shot service and the Kubernetes job run it) is the one
/// `cargo xtask` runs.
#[test]
fn the_roles_sql_file_is_generated() {
    check_generated(
        "deploy/k8s/postgres/roles.sql",
        &platform::roles::bootstrap_file(),
    );
}
