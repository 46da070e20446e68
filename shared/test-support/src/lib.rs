//! Real infrastructure for tests.
//!
//! - [`TestDb`]: a fresh database per test on the shared Postgres, dropped afterwards, so
//!   tests run in parallel without seeing each other's rows.
//! - [`nats_url`]: the shared NATS server (tests isolate themselves by stream/subject prefix).
//! - [`PrivateNats`] / [`PrivatePostgres`]: servers owned by one test, which it can stop and
//!   start again on the same port to exercise reconnection.
//! - [`binary`]: the path of a freshly built workspace binary, for tests that run real
//!   processes; [`ChildGuard`] kills such a process when the test ends, even by panicking.
//! - [`TestBucket`]: a bucket of its own on the local S3-protocol server.
//! - [`dev_login`], [`rpc_call`] / [`rpc_ok`], [`metrics_text`], [`delete_streams`], [`Outbox`] (with
//!   [`emitted`] and [`emitted_changesets`] below it): what tests that run the services
//!   in-process share; [`send_json`] and [`get_json`] read one JSON answer.
//! - [`orpc_client::OrpcClientScripts`]: the `@orpc/client` conformance scripts, run with Node.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod emitted;
pub mod orpc_client;
mod private_servers;
mod s3;
mod services;

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use emitted::{Emitted, Outbox, changes_of, emitted, emitted_changesets};
pub use private_servers::{PrivateNats, PrivatePostgres, free_port};
pub use s3::{TestBucket, s3_endpoint};
pub use services::{DevUser, delete_streams, dev_login, metrics_text, rpc_call, rpc_ok};

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

/// The path of a workspace binary (`api`, `worker`, ...), next to the running test executable.
/// `cargo xtask test` builds the service binaries before the tests run; a binary that is
/// missing, or older than any source file its dep-info lists, is refused with the command
/// to run, so an end-to-end test never runs an old build. (Building from inside the test
/// was tried: under nextest the inner `cargo build` rebuilt dependencies, minutes per test
/// process.)
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    // target/<profile>/deps/<test-binary>
    let profile_dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = profile_dir.join(name);
    if let Err(problem) = sources_checked(&path) {
        panic!(
            "{problem}: run `cargo xtask test`, or `cargo build -p {name}` first ({})",
            path.display()
        );
    }
    path
}

/// Check that `binary` exists and is at least as new as every source file its dep-info
/// (`<binary>.d`, written by cargo) lists; returns how many sources were compared. A missing
/// dep-info is refused too: without it nothing says the build is current.
pub fn sources_checked(binary: &std::path::Path) -> Result<usize, String> {
    let built = std::fs::metadata(binary)
        .and_then(|metadata| metadata.modified())
        .map_err(|error| format!("the binary was not built ({error})"))?;
    let dep_info_path = binary.with_extension("d");
    let dep_info = std::fs::read_to_string(&dep_info_path).map_err(|error| {
        format!(
            "its dep-info {} cannot be read ({error})",
            dep_info_path.display()
        )
    })?;
    let (_, sources) = dep_info
        .split_once(": ")
        .ok_or_else(|| format!("its dep-info {} lists no sources", dep_info_path.display()))?;
    let mut checked = 0;
    for source in sources.split_whitespace() {
        // Generated files of an earlier build may be gone; they are not sources.
        let Ok(modified) = std::fs::metadata(source).and_then(|metadata| metadata.modified())
        else {
            continue;
        };
        if modified > built {
            return Err(format!("the binary is older than its source {source}"));
        }
        checked += 1;
    }
    Ok(checked)
}

/// A child process that is killed and reaped when the guard drops, so a test that fails (or
/// panics) half-way does not leave its services running.
pub struct ChildGuard(Option<std::process::Child>);

impl ChildGuard {
    pub fn new(child: std::process::Child) -> Self {
        Self(Some(child))
    }
}

impl std::ops::Deref for ChildGuard {
    type Target = std::process::Child;

    fn deref(&self) -> &Self::Target {
        self.0.as_ref().unwrap()
    }
}

impl std::ops::DerefMut for ChildGuard {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().unwrap()
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Wait for an in-process service's task to end after its shutdown was requested, and fail
/// the test unless it returned `Ok` within `bound` (a crash or error at shutdown is a bug).
pub async fn assert_stops_ok<E: std::fmt::Debug>(
    service: &str,
    bound: Duration,
    handle: tokio::task::JoinHandle<Result<(), E>>,
) {
    let result = tokio::time::timeout(bound, handle)
        .await
        .unwrap_or_else(|_| panic!("{service} did not stop within {bound:?}"))
        .unwrap_or_else(|error| panic!("{service} panicked: {error}"));
    if let Err(error) = result {
        panic!("{service} stopped with an error: {error:?}");
    }
}

/// Wait until every consumer of the JetStream `streams` on `nats_url` has nothing left to
/// deliver and nothing awaiting an ack (no retry scheduled, no handler running): after that,
/// nothing already published can be delivered again. Returns whether it happened in `timeout`.
/// Tests assert "no more deliveries" after this instead of after a fixed sleep.
pub async fn consumers_settled(nats_url: &str, streams: &[String], timeout: Duration) -> bool {
    use futures::TryStreamExt;
    let client = async_nats::connect(nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    eventually(timeout, || async {
        for name in streams {
            let Ok(stream) = jetstream.get_stream(name).await else {
                continue; // not created yet: nothing in it
            };
            let consumers: Vec<_> = stream
                .consumers()
                .try_collect()
                .await
                .unwrap_or_else(|error| panic!("listing the consumers of {name}: {error}"));
            if consumers
                .iter()
                .any(|info| info.num_pending > 0 || info.num_ack_pending > 0)
            {
                return false;
            }
        }
        true
    })
    .await
}

/// Wait up to 30 s for a service at `base_url` to answer `/readyz` with 200; panic naming
/// the service and its last readiness answer otherwise.
pub async fn wait_ready(base_url: &str, name: &str) {
    let url = format!("{base_url}/readyz");
    let ready = eventually(Duration::from_secs(30), || {
        let url = url.clone();
        async move { get(&url).await.0 == 200 }
    })
    .await;
    if !ready {
        let (status, body) = get(&url).await;
        panic!("{name} never became ready: {status} {body}");
    }
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

/// Send `request` and parse its body as JSON whatever the status (panics on a transport error
/// or a body that is not JSON): for tests that read one field of an answer.
pub async fn send_json(request: reqwest::RequestBuilder) -> serde_json::Value {
    request.send().await.unwrap().json().await.unwrap()
}

/// GET `url` without credentials (a presigned download link, say) and parse its JSON body.
pub async fn get_json(url: &str) -> serde_json::Value {
    send_json(reqwest::Client::new().get(url)).await
}

#[cfg(test)]
mod tests {
    use super::ChildGuard;

    /// A test that panics while its processes run must not leave them behind.
    #[test]
    fn a_dropped_child_guard_kills_and_reaps_its_process() {
        let guard = ChildGuard::new(
            std::process::Command::new("sleep")
                .arg("60")
                .spawn()
                .unwrap(),
        );
        let proc_entry = std::path::PathBuf::from(format!("/proc/{}", guard.id()));
        assert!(proc_entry.exists());
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(move || {
            let _guard = guard;
            panic!("the test fails half-way");
        }));
        assert!(panicked.is_err());
        // Killed and reaped: not even a zombie entry is left.
        assert!(!proc_entry.exists(), "the child outlived its guard");
    }

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
