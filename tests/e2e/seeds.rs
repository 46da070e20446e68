//! The demo seeds apply cleanly on freshly migrated schemas, and twice in a row change nothing.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use secrecy::SecretString;
use test_support::TestDb;

#[tokio::test]
async fn seeds_apply_on_migrated_schemas_and_are_idempotent() {
    let db = TestDb::new().await;
    let url = SecretString::from(db.url().to_owned());
    let migrators = [
        (api::SCHEMA, &api::MIGRATOR),
        (sync_streamer::SCHEMA, &sync_streamer::MIGRATOR),
        (worker::SCHEMA, &worker::MIGRATOR),
        (cron::SCHEMA, &cron::MIGRATOR),
        (notifier::SCHEMA, &notifier::MIGRATOR),
    ];
    for (schema, migrator) in migrators {
        platform::db::connect_and_migrate(&url, schema, 2, migrator)
            .await
            .unwrap();
    }
    let seeds_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../seeds");
    let mut files: Vec<_> = std::fs::read_dir(&seeds_dir)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "sql"))
        .collect();
    files.sort();
    assert!(
        !files.is_empty(),
        "no seed files in {}",
        seeds_dir.display()
    );

    let pool = db.pool().await;
    let count_rows = || async {
        let users: i64 = sqlx::query_scalar("SELECT count(*) FROM api.users")
            .fetch_one(&pool)
            .await
            .unwrap();
        let entries: i64 = sqlx::query_scalar("SELECT count(*) FROM api.journal_entries")
            .fetch_one(&pool)
            .await
            .unwrap();
        let memberships: i64 = sqlx::query_scalar("SELECT count(*) FROM api.team_members")
            .fetch_one(&pool)
            .await
            .unwrap();
        let prompts: i64 = sqlx::query_scalar("SELECT count(*) FROM api.prompts")
            .fetch_one(&pool)
            .await
            .unwrap();
        (users, entries, memberships, prompts)
    };
    for round in 0..2 {
        for file in &files {
            let sql = std::fs::read_to_string(file).unwrap();
            sqlx::raw_sql(&sql)
                .execute(&pool)
                .await
                .unwrap_or_else(|error| {
                    panic!("round {round}: {} failed: {error}", file.display())
                });
        }
        assert_eq!(count_rows().await, (2, 4, 2, 2), "round {round}");
    }
}
