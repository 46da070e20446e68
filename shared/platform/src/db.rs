//! The Postgres pool: one schema per service, its own migration history.

use std::str::FromStr;
use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use sqlx::migrate::Migrator;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::PlatformError;

/// Open a pool whose connections resolve unqualified names in `schema` first, create the
/// schema if needed, and apply the service's migrations. Because `search_path` starts with
/// the schema, sqlx keeps the migration history in `<schema>._sqlx_migrations`, so each
/// service has its own history even though all share one database.
pub async fn connect_and_migrate(
    database_url: &SecretString,
    schema: &str,
    max_connections: u32,
    migrator: &Migrator,
) -> Result<PgPool, PlatformError> {
    let pool = connect(database_url, schema, max_connections).await?;
    migrate(&pool, schema, migrator).await?;
    Ok(pool)
}

/// Open a pool for `schema` without migrating.
pub async fn connect(
    database_url: &SecretString,
    schema: &str,
    max_connections: u32,
) -> Result<PgPool, PlatformError> {
    let options = PgConnectOptions::from_str(database_url.expose_secret())?
        .options([("search_path", schema)])
        .application_name(schema);
    let pool = PgPoolOptions::new()
        .max_connections(max_connections)
        .min_connections(0)
        .acquire_timeout(Duration::from_secs(5))
        // After a Postgres restart every pooled connection is dead; testing on checkout
        // drops them so the first query after the restart succeeds instead of failing once.
        .test_before_acquire(true)
        .connect_with(options)
        .await?;
    Ok(pool)
}

/// Create the schema if needed and apply pending migrations.
pub async fn migrate(
    pool: &PgPool,
    schema: &str,
    migrator: &Migrator,
) -> Result<(), PlatformError> {
    let quoted = quote_identifier(schema);
    sqlx::query(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
        .execute(pool)
        .await?;
    migrator
        .run(pool)
        .await
        .map_err(|source| PlatformError::Migrate {
            schema: schema.to_owned(),
            source,
        })?;
    Ok(())
}

/// Quote an SQL identifier (schema and database names come from config, not from clients,
/// but quoting keeps an odd name from becoming SQL).
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// `SELECT 1` with a deadline: the readiness probe for Postgres.
pub async fn ping(pool: &PgPool, timeout: Duration) -> Result<(), String> {
    match tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(pool)).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(error)) => Err(error.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    }
}
