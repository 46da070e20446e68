//! Real infrastructure for tests.
//!
//! - [`TestDb`]: a fresh database per test on the shared Postgres, dropped afterwards, so
//!   tests run in parallel without seeing each other's rows.
//! - [`nats_url`]: the shared NATS server (tests isolate themselves by stream/subject prefix).
//! - [`PrivateNats`] / [`PrivatePostgres`]: servers owned by one test, which it can stop and
//!   start again on the same port to exercise reconnection.
//! - [`binary`]: the path of a workspace binary, for tests that run real processes.
//! - [`TestBucket`]: a bucket of its own on the local S3-protocol server.
//! - [`orpc_client::OrpcClientScripts`]: the `@orpc/client` conformance scripts, run with Node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod orpc_client;
mod private_servers;
mod s3;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use private_servers::{PrivateNats, PrivatePostgres, free_port};
pub use s3::{TestBucket, s3_endpoint};

/// The server tests create their databases on (`TEST_DATABASE_URL`, a URL to any database
/// on it, default the local `postgres` database).
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// The shared NATS server (`TEST_NATS_URL`, default local).
pub fn nats_url() -> String {
    std::env::var("TEST_NATS_URL").unwrap_or_else(|_| "nats://127.0.0.1:4222".to_owned())
}

/// A database that exists for one test.
pub struct TestDb {
    name: String,
    url: String,
    admin_url: String,
}

impl TestDb {
    /// Create a fresh, empty database on the test server.
    pub async fn new() -> Self {
        Self::on_server(&admin_database_url()).await
    }

    /// Create a fresh database on the server `admin_url` points at.
    pub async fn on_server(admin_url: &str) -> Self {
        let name = format!("t_{}", uuid::Uuid::new_v4().simple());
        let admin = connect_admin(admin_url).await;
        sqlx::query(&format!("CREATE DATABASE {name}"))
            .execute(&admin)
            .await
            .unwrap();
        admin.close().await;
        let url = replace_database(admin_url, &name);
        Self {
            name,
            url,
            admin_url: admin_url.to_owned(),
        }
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    /// A pool on this database (search_path = public).
    pub async fn pool(&self) -> sqlx::PgPool {
        sqlx::postgres::PgPoolOptions::new()
            .max_connections(4)
            .connect(&self.url)
            .await
            .unwrap()
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        // Drop runs outside async context guarantees; a short-lived runtime on its own thread
        // does the cleanup whether or not the test's runtime is still alive.
        let name = self.name.clone();
        let admin_url = self.admin_url.clone();
        let _ = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            else {
                return;
            };
            runtime.block_on(async move {
                if let Ok(admin) = sqlx::PgPool::connect(&admin_url).await {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .execute(&admin)
                        .await;
                    admin.close().await;
                }
            });
        })
        .join();
    }
}

async fn connect_admin(admin_url: &str) -> sqlx::PgPool {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .connect(admin_url)
            .await
        {
            Ok(pool) => return pool,
            Err(error) if Instant::now() < deadline => {
                eprintln!("waiting for postgres at {admin_url}: {error}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => panic!("cannot reach test postgres at {admin_url}: {error}"),
        }
    }
}

/// `postgres://host/db?x` with the database replaced.
pub fn replace_database(url: &str, database: &str) -> String {
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

/// Poll `condition` until it is true or `timeout` passes; returns whether it became true.
pub async fn eventually<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The path of a workspace binary (`api`, `worker`, ...), built by `cargo build --bins`
/// (the README's test command does that first). Found next to the running test executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join(name);
    assert!(
        path.exists(),
        "binary {} not built; run `cargo build --bins` first (the README's test command does)",
        path.display()
    );
    path
}

/// GET a URL and return (status, body); connection errors become status 0.
pub async fn get(url: &str) -> (u16, String) {
    match reqwest::get(url).await {
        Ok(response) => {
            let status = response.status().as_u16();
            (status, response.text().await.unwrap_or_default())
        }
        Err(_) => (0, String::new()),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn replaces_database_in_urls() {
        assert_eq!(
            super::replace_database("postgres://u@h:5432/postgres", "t_1"),
            "postgres://u@h:5432/t_1"
        );
        assert_eq!(
            super::replace_database("postgres://u@h/postgres?sslmode=disable", "t_1"),
            "postgres://u@h/t_1?sslmode=disable"
        );
        assert_eq!(
            super::replace_database("postgres://u@h", "t_1"),
            "postgres://u@h/t_1"
        );
    }
}
