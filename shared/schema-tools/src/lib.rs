//! Declared schemas and safe migrations (see `docs/migrations.md`).
//!
//! Each service declares the end state of its schema in `services/<service>/schema.sql`.
//! This crate builds two scratch databases — one from the existing migrations, one from the
//! declaration — introspects both from `pg_catalog` into a [`model::Schema`], and
//! - [`check`]s that they are equal (drift detection),
//! - [`generate`]s the next migration from their difference, emitting only
//!   backward-compatible DDL and refusing everything else with the two-step path,
//! - [`lint`]s migration files with squawk and our own backward-compatibility rules.

pub mod diff;
pub mod introspect;
pub mod lint;
pub mod model;
pub mod render;
pub mod scratch;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use secrecy::SecretString;
use sqlx::migrate::Migrator;

pub use diff::{Change, Refusal, diff};
pub use render::{GeneratedFile, Options};

/// The schemas, one per service, in dependency order.
pub const SCHEMAS: [&str; 5] = ["api", "sync", "worker", "cron", "notifier"];

/// The service directory (under `services/`) that owns `schema`.
pub fn service_of(schema: &str) -> Result<&'static str> {
    Ok(match schema {
        "api" => "api",
        "sync" => "sync-streamer",
        "worker" => "worker",
        "cron" => "cron",
        "notifier" => "notifier",
        other => bail!(
            "unknown schema `{other}`; the schemas are {}",
            SCHEMAS.join(", ")
        ),
    })
}

/// `migrations/<schema>` under the repository root.
pub fn migrations_dir(root: &Path, schema: &str) -> PathBuf {
    root.join("migrations").join(schema)
}

/// `services/<service>/schema.sql` under the repository root: the declaration.
pub fn declaration_path(root: &Path, schema: &str) -> Result<PathBuf> {
    Ok(root
        .join("services")
        .join(service_of(schema)?)
        .join("schema.sql"))
}

/// Apply the pending migrations of `dir` to `schema` on `database_url`, exactly as each
/// service does at start (`platform::db::connect` + `platform::db::migrate`: search_path is
/// the schema, history in `<schema>._sqlx_migrations`). `cargo xtask db up`, the
/// scratch databases of `db g`/`db check`, and this crate's tests all go through here; the
/// services' tests run the same files through the embedded `sqlx::migrate!` of each service
/// and the same `platform::db::migrate`. Returns the number of applied migrations.
pub async fn migrate(database_url: &str, schema: &str, dir: &Path) -> Result<i64> {
    let migrator = Migrator::new(dir.to_path_buf())
        .await
        .with_context(|| format!("reading migrations in {}", dir.display()))?;
    let pool =
        platform::db::connect(&SecretString::from(database_url.to_owned()), schema, 2).await?;
    let result = async {
        platform::db::migrate(&pool, schema, &migrator).await?;
        let applied: i64 =
            sqlx::query_scalar("SELECT count(*) FROM _sqlx_migrations WHERE success")
                .fetch_one(&pool)
                .await?;
        Ok::<_, anyhow::Error>(applied)
    }
    .await;
    pool.close().await;
    result
}

/// The schema the migrations in `dir` produce (built in a scratch database on the server of
/// `server_url`, dropped afterwards).
pub async fn migrated_schema(server_url: &str, schema: &str, dir: &Path) -> Result<model::Schema> {
    scratch::with_scratch(server_url, |url| async move {
        migrate(&url, schema, dir).await?;
        let pool = scratch::schema_pool(&url, schema).await?;
        let model = introspect::introspect(&pool, schema).await;
        pool.close().await;
        model
    })
    .await
    .with_context(|| format!("building the `{schema}` schema from {}", dir.display()))
}

/// The schema `declaration` (the SQL of a `schema.sql`) produces.
pub async fn declared_schema(
    server_url: &str,
    schema: &str,
    declaration: &str,
) -> Result<model::Schema> {
    scratch::with_scratch(server_url, |url| async move {
        let pool = scratch::schema_pool(&url, schema).await?;
        let result = async {
            sqlx::query(&format!(
                "CREATE SCHEMA IF NOT EXISTS {}",
                platform::db::quote_identifier(schema)
            ))
            .execute(&pool)
            .await?;
            sqlx::raw_sql(declaration)
                .execute(&pool)
                .await
                .context("applying the declaration")?;
            introspect::introspect(&pool, schema).await
        }
        .await;
        pool.close().await;
        result
    })
    .await
    .with_context(|| format!("building the declared `{schema}` schema"))
}

/// The differences between what the migrations produce and the declaration (empty when
/// they agree).
pub async fn check(
    server_url: &str,
    schema: &str,
    dir: &Path,
    declaration: &str,
) -> Result<Vec<Change>> {
    let current = migrated_schema(server_url, schema, dir).await?;
    let desired = declared_schema(server_url, schema, declaration).await?;
    Ok(diff(&current, &desired))
}

/// The migration files that take the migrated schema to the declared one (empty when there
/// is nothing to do). Deterministic: the same migrations, declaration, name and version give
/// the same files. Refuses (with the two-step path) any change that is not backward compatible.
pub async fn generate(
    server_url: &str,
    schema: &str,
    dir: &Path,
    declaration: &str,
    options: &Options,
) -> Result<Vec<GeneratedFile>> {
    let changes = check(server_url, schema, dir, declaration).await?;
    let files = render::render(schema, &changes, options)?;
    Ok(files)
}

/// The next free migration version in `dir`: `now` (a `YYYYMMDDHHMMSS` number) or one more
/// than the newest existing version, whichever is larger.
pub fn next_version(dir: &Path, now: i64) -> Result<i64> {
    let mut newest = 0;
    if dir.exists() {
        for entry in std::fs::read_dir(dir)? {
            let name = entry?.file_name().to_string_lossy().into_owned();
            if let Some((version, _)) = name.split_once('_')
                && let Ok(version) = version.parse::<i64>()
            {
                newest = newest.max(version);
            }
        }
    }
    Ok(now.max(newest + 1))
}

/// Write generated files into `dir`, refusing to overwrite anything.
pub fn write_files(dir: &Path, files: &[GeneratedFile]) -> Result<Vec<PathBuf>> {
    std::fs::create_dir_all(dir)?;
    let mut written = Vec::new();
    for file in files {
        let path = dir.join(&file.file_name);
        if path.exists() {
            bail!("{} exists already", path.display());
        }
        std::fs::write(&path, &file.contents)
            .with_context(|| format!("writing {}", path.display()))?;
        written.push(path);
    }
    Ok(written)
}
