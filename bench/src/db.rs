//! Postgres helpers for scenarios: create the database, (re)create a scratch schema.

use anyhow::Context as _;
use sqlx::postgres::{PgConnectOptions, PgPool};
use sqlx::{ConnectOptions as _, Connection as _};

/// Quote an SQL identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

/// Create the database named in `options` if it does not exist, by connecting to the
/// `postgres` maintenance database on the same server.
pub async fn ensure_database(options: &PgConnectOptions) -> anyhow::Result<()> {
    let name = options
        .get_database()
        .map(str::to_owned)
        .unwrap_or_else(|| options.get_username().to_owned());
    let admin = options.clone().database("postgres");
    let mut conn = admin
        .connect()
        .await
        .with_context(|| "connecting to the `postgres` database to check the target database")?;
    let exists: Option<i32> = sqlx::query_scalar("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(&name)
        .fetch_optional(&mut conn)
        .await?;
    if exists.is_none() {
        let created = sqlx::query(&format!("CREATE DATABASE {}", quote_identifier(&name)))
            .execute(&mut conn)
            .await;
        match created {
            Ok(_) => eprintln!("bench: created database {name}"),
            // Someone else created it between our check and our CREATE: fine.
            Err(sqlx::Error::Database(e))
                if matches!(e.code().as_deref(), Some("42P04") | Some("23505")) => {}
            Err(e) => return Err(e).with_context(|| format!("creating database {name}")),
        }
    }
    conn.close().await?;
    Ok(())
}

/// Drop `schema` (with everything in it) if it exists and create it empty.
pub async fn recreate_schema(pool: &PgPool, schema: &str) -> anyhow::Result<()> {
    let quoted = quote_identifier(schema);
    sqlx::query(&format!("DROP SCHEMA IF EXISTS {quoted} CASCADE"))
        .execute(pool)
        .await
        .with_context(|| format!("dropping schema {schema}"))?;
    sqlx::query(&format!("CREATE SCHEMA {quoted}"))
        .execute(pool)
        .await
        .with_context(|| format!("creating schema {schema}"))?;
    Ok(())
}

/// Drop `schema` (with everything in it) if it exists.
pub async fn drop_schema(pool: &PgPool, schema: &str) -> anyhow::Result<()> {
    sqlx::query(&format!(
        "DROP SCHEMA IF EXISTS {} CASCADE",
        quote_identifier(schema)
    ))
    .execute(pool)
    .await
    .with_context(|| format!("dropping schema {schema}"))?;
    Ok(())
}
