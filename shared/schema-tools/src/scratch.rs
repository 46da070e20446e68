//! Scratch databases (`journal_scratch_<random>`) on the development or test server.

use std::future::Future;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

/// `url` with its database replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let scheme_end = base.find("://").map(|i| i + 3).unwrap_or(0);
    let host_part = match base[scheme_end..].find('/') {
        Some(slash) => &base[..scheme_end + slash],
        None => base,
    };
    match query {
        Some(query) => format!("{host_part}/{database}?{query}"),
        None => format!("{host_part}/{database}"),
    }
}

async fn admin_pool(server_url: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(server_url)
        .context("not a valid postgres URL")?
        .database("postgres");
    PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await
        .context("cannot connect to Postgres to create a scratch database")
}

/// Create a scratch database, run `work` with its URL, and drop it whatever happened.
pub async fn with_scratch<F, Fut, T>(server_url: &str, work: F) -> Result<T>
where
    F: FnOnce(String) -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let name = format!("journal_scratch_{}", uuid::Uuid::new_v4().simple());
    let admin = admin_pool(server_url).await?;
    sqlx::query(&format!("CREATE DATABASE {name}"))
        .execute(&admin)
        .await
        .with_context(|| format!("creating scratch database {name}"))?;
    let result = work(with_database(server_url, &name)).await;
    let dropped = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        .execute(&admin)
        .await;
    admin.close().await;
    let value = result?;
    dropped.with_context(|| format!("dropping scratch database {name}"))?;
    Ok(value)
}

/// A small pool whose search_path is `schema`, like the services'.
pub async fn schema_pool(url: &str, schema: &str) -> Result<PgPool> {
    let options = PgConnectOptions::from_str(url)?.options([("search_path", schema)]);
    Ok(PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(options)
        .await?)
}
