//! Helpers shared by the least-privilege tests: the repository, the roles and their URLs and
//! passwords, the bootstrap, the generated files' check and row counts.

use std::path::{Path, PathBuf};

use platform::roles::ServiceRole;
use secrecy::SecretString;
use test_support::TestDb;

pub(crate) fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

pub(crate) fn role(service: &str) -> &'static ServiceRole {
    platform::roles::role_of_service(service).unwrap()
}

/// The URL `service` uses on the test database: its role, no password (trust auth here).
pub(crate) fn role_url(db: &TestDb, service: &str) -> String {
    platform::roles::service_url(db.url(), role(service)).unwrap()
}

pub(crate) fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

pub(crate) async fn bootstrap(db: &TestDb) {
    let admin = db.pool().await;
    platform::roles::bootstrap(&admin).await.unwrap();
    admin.close().await;
}

/// `path` holds `expected`; `JOURNAL_WRITE_GENERATED=1` rewrites it instead.
pub(crate) fn check_generated(path: &str, expected: &str) {
    let file = repo_root().join(path);
    if std::env::var_os("JOURNAL_WRITE_GENERATED").is_some() {
        std::fs::write(&file, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&file).unwrap_or_default();
    assert!(
        actual == expected,
        "{path} is not what its generator produces; regenerate it with \
         `JOURNAL_WRITE_GENERATED=1 cargo nextest run --workspace -E 'binary(least_privilege)'`"
    );
}

pub(crate) async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}
