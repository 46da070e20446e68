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

/// `migrations/<schema>` under the repository root: the schema's own migrations, where
/// `db g` and `db new` write.
pub fn migrations_dir(root: &Path, schema: &str) -> PathBuf {
    root.join("migrations").join(schema)
}

/// `shared/bus/migrations` under the repository root: the bus's tables' migrations, applied to
/// every schema before (by version) its own.
pub fn bus_migrations_dir(root: &Path) -> PathBuf {
    root.join("shared").join("bus").join("migrations")
}

/// Every folder whose migrations `schema` applies, as its service does at start
/// (`bus::tables::with_bus_tables`): the bus's, then the schema's own.
pub fn migration_dirs(root: &Path, schema: &str) -> Vec<PathBuf> {
    vec![bus_migrations_dir(root), migrations_dir(root, schema)]
}

/// `shared/bus/schema.sql` under the repository root: the declared bus tables, the first part
/// of every schema's declaration.
pub fn bus_declaration_path(root: &Path) -> PathBuf {
    root.join("shared").join("bus").join("schema.sql")
}

/// The whole declaration of `schema`: the bus's tables, then the service's own
/// `schema.sql`.
pub fn declaration(root: &Path, schema: &str) -> Result<String> {
    let mut text = String::new();
    for path in [bus_declaration_path(root), declaration_path(root, schema)?] {
        let part = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        text.push_str(&part);
        text.push('\n');
    }
    Ok(text)
}

/// `services/<service>/schema.sql` under the repository root: the declaration.
pub fn declaration_path(root: &Path, schema: &str) -> Result<PathBuf> {
    Ok(root
        .join("services")
        .join(service_of(schema)?)
        .join("schema.sql"))
}

/// Apply the pending migrations of `dirs` (in version order across them) to `schema` on
/// `database_url`, exactly as each service does at start (`platform::db::connect` +
/// `platform::db::migrate`: search_path is the schema, history in `<schema>._sqlx_migrations`).
/// `cargo xtask db up`, the scratch databases of `db g`/`db check`, and this crate's tests all
/// go through here; the services' tests run the same files through the embedded
/// `sqlx::migrate!` of each service and the same `platform::db::migrate`. Returns the number
/// of applied migrations.
pub async fn migrate(database_url: &str, schema: &str, dirs: &[PathBuf]) -> Result<i64> {
    let mut sources = Vec::with_capacity(dirs.len());
    for dir in dirs {
        sources.push(
            Migrator::new(dir.clone())
                .await
                .with_context(|| format!("reading migrations in {}", dir.display()))?,
        );
    }
    let migrator = platform::db::combined_migrations(&sources.iter().collect::<Vec<_>>());
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

/// The schema the migrations in `dirs` produce (built in a scratch database on the server of
/// `server_url`, dropped afterwards).
pub async fn migrated_schema(
    server_url: &str,
    schema: &str,
    dirs: &[PathBuf],
) -> Result<model::Schema> {
    scratch::with_scratch(server_url, |url| async move {
        migrate(&url, schema, dirs).await?;
        let pool = scratch::schema_pool(&url, schema).await?;
        let model = introspect::introspect(&pool, schema).await;
        pool.close().await;
        model
    })
    .await
    .with_context(|| format!("building the `{schema}` schema from {}", display(dirs)))
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
    dirs: &[PathBuf],
    declaration: &str,
) -> Result<Vec<Change>> {
    let current = migrated_schema(server_url, schema, dirs).await?;
    let desired = declared_schema(server_url, schema, declaration).await?;
    Ok(diff(&current, &desired))
}

/// The migration files that take the migrated schema to the declared one (empty when there
/// is nothing to do). Deterministic: the same migrations, declaration, name and version give
/// the same files. Refuses (with the two-step path) any change that is not backward compatible.
pub async fn generate(
    server_url: &str,
    schema: &str,
    dirs: &[PathBuf],
    declaration: &str,
    options: &Options,
) -> Result<Vec<GeneratedFile>> {
    let changes = check(server_url, schema, dirs, declaration).await?;
    let files = render::render(schema, &changes, options)?;
    Ok(files)
}

/// The next free migration version in `dirs` (one schema's folders): `now` (a
/// `YYYYMMDDHHMMSS` number) or one more than the newest existing version, whichever is larger.
pub fn next_version(dirs: &[PathBuf], now: i64) -> Result<i64> {
    let mut newest = 0;
    for dir in dirs.iter().filter(|dir| dir.exists()) {
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

/// The folders, for messages.
fn display(dirs: &[PathBuf]) -> String {
    dirs.iter()
        .map(|dir| dir.display().to_string())
        .collect::<Vec<_>>()
        .join(" + ")
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
