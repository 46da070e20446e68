//! Helpers for the end-to-end tests in `e2e/`: start the five real services in-process on
//! port 0 against real Postgres and NATS, or as the real binaries ([`ServiceProcess`]).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod drills;

use std::future::Future;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use test_support::ChildGuard;

use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// One service running inside the test process.
pub struct RunningService {
    pub name: &'static str,
    pub schema: &'static str,
    pub base_url: String,
    pub shutdown: CancellationToken,
    pub handle: JoinHandle<Result<(), String>>,
}

impl RunningService {
    /// Cancel its shutdown token and wait for `run` to return.
    pub async fn stop(self) -> Result<(), String> {
        self.shutdown.cancel();
        match tokio::time::timeout(Duration::from_secs(15), self.handle).await {
            Ok(Ok(result)) => result,
            Ok(Err(join_error)) => Err(format!("{} panicked: {join_error}", self.name)),
            Err(_) => Err(format!("{} did not stop within 15 s", self.name)),
        }
    }
}

/// One service binary (`api`, `worker`, ...) running as a child process: killed when dropped,
/// so a failing test leaves nothing running.
pub struct ServiceProcess {
    pub name: String,
    pub child: ChildGuard,
    pub base_url: String,
}

impl ServiceProcess {
    /// Spawn binary `name` (refused when missing or older than its sources) on a free port
    /// against `database_url`, the test NATS server and bus namespace `namespace`, with `env`
    /// set on top (it may override any of those), and wait until `/readyz` answers 200.
    pub async fn start(
        name: &str,
        database_url: &str,
        namespace: &str,
        env: &[(&str, String)],
    ) -> Self {
        Self::start_on_port(
            name,
            test_support::free_port(),
            database_url,
            namespace,
            env,
        )
        .await
    }

    /// [`ServiceProcess::start`] on a given port, e.g. the port of a replica that was killed,
    /// so its clients reconnect to the same address.
    pub async fn start_on_port(
        name: &str,
        port: u16,
        database_url: &str,
        namespace: &str,
        env: &[(&str, String)],
    ) -> Self {
        let mut command = Command::new(test_support::binary(name));
        command
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env("DATABASE_URL", database_url)
            .env("NATS_URL", test_support::nats_url())
            .env("BUS_NAMESPACE", namespace)
            .env("LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (key, value) in env {
            command.env(key, value);
        }
        let child = ChildGuard::new(
            command
                .spawn()
                .unwrap_or_else(|error| panic!("spawning {name}: {error}")),
        );
        let mut process = Self {
            name: name.to_owned(),
            child,
            base_url: format!("http://127.0.0.1:{port}"),
        };
        let ready_url = format!("{}/readyz", process.base_url);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if test_support::get(&ready_url).await.0 == 200 {
                return process;
            }
            // A process that exited will never be ready: say so now, not after the timeout.
            if let Some(status) = process.child.try_wait().unwrap() {
                panic!("{name} exited before it was ready: {status}");
            }
            if Instant::now() >= deadline {
                let (status, body) = test_support::get(&ready_url).await;
                panic!("{name} never became ready: /readyz {status} {body}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    pub fn signal(&self, signal: Signal) {
        kill(Pid::from_raw(self.child.id() as i32), signal).unwrap();
    }

    /// Wait (without blocking the runtime) for the process to exit within `timeout`; its exit
    /// code, `None` when a signal ended it. Fails the test when it does not exit.
    pub async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            assert!(
                Instant::now() < deadline,
                "{} did not exit within {timeout:?}",
                self.name
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// SIGTERM, then require exit code 0 within 15 s (it drains and stops cleanly).
    pub async fn stop(mut self) {
        self.signal(Signal::SIGTERM);
        let code = self.wait_exit(Duration::from_secs(15)).await;
        assert_eq!(code, Some(0), "{} exit status after SIGTERM", self.name);
    }
}

/// A bus namespace of its own for one test, so tests sharing a NATS server never share streams.
pub fn unique_namespace() -> String {
    format!("t{}", &uuid::Uuid::new_v4().simple().to_string()[..12])
}

/// Delete the streams of a test's namespace.
pub async fn delete_namespace(nats_url: &str, namespace: &str) {
    let client = async_nats::connect(nats_url).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    for base in ["EVENTS", "TASKS", "CHANGES"] {
        let _ = jetstream
            .delete_stream(format!(
                "{}_{base}",
                namespace.to_ascii_uppercase().replace('-', "_")
            ))
            .await;
    }
}

/// Run a service in-process on a port of its own: `run` gets the listener and the shutdown
/// token and returns the service's `run` future, which is spawned.
pub async fn spawn_in_process<F, E>(
    name: &'static str,
    schema: &'static str,
    run: impl FnOnce(TcpListener, CancellationToken) -> F,
) -> RunningService
where
    F: Future<Output = Result<(), E>> + Send + 'static,
    E: std::fmt::Display,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base_url = format!("http://{}", listener.local_addr().unwrap());
    let shutdown = CancellationToken::new();
    let service = run(listener, shutdown.clone());
    let handle = tokio::spawn(async move {
        let result = service.await.map_err(|error| error.to_string());
        // Say why at once: a service that fails to start otherwise shows up only as a
        // readiness wait that times out.
        if let Err(error) = &result {
            eprintln!("{name} stopped with an error: {error}");
        }
        result
    });
    RunningService {
        name,
        schema,
        base_url,
        shutdown,
        handle,
    }
}

macro_rules! start_service {
    ($krate:ident, $database_url:expr, $nats_url:expr, $namespace:expr) => {{
        let mut config = $krate::Config::for_tests($database_url, $nats_url);
        config.common.bus_namespace = $namespace.to_owned();
        spawn_in_process($krate::SERVICE, $krate::SCHEMA, |listener, token| {
            $krate::run(config, listener, token)
        })
        .await
    }};
}

/// Start all five services against one database and NATS server, in bus namespace `namespace`.
pub async fn start_all(database_url: &str, nats_url: &str, namespace: &str) -> Vec<RunningService> {
    vec![
        start_service!(api, database_url, nats_url, namespace),
        start_service!(sync_streamer, database_url, nats_url, namespace),
        start_service!(worker, database_url, nats_url, namespace),
        start_service!(cron, database_url, nats_url, namespace),
        start_service!(notifier, database_url, nats_url, namespace),
    ]
}

/// Wait until every service answers `/readyz` with `want_status` (all watched at once).
pub async fn wait_ready_status(services: &[RunningService], want_status: u16, timeout: Duration) {
    let waits = services.iter().map(|service| async move {
        let url = format!("{}/readyz", service.base_url);
        let reached = test_support::eventually(timeout, || {
            let url = url.clone();
            async move { test_support::get(&url).await.0 == want_status }
        })
        .await;
        (service.name, url, reached)
    });
    for (name, url, reached) in futures::future::join_all(waits).await {
        if !reached {
            let (status, body) = test_support::get(&url).await;
            panic!("{name}: /readyz stayed {status} ({body}), wanted {want_status}");
        }
    }
}

/// Wait until the services on `database_url` and `namespace` have nothing in flight: every
/// outbox published and every consumer settled (nothing to deliver, nothing awaiting an ack).
/// What follows from the work so far has happened by then, so a test can assert that nothing
/// more did without sleeping.
pub async fn wait_settled(database_url: &str, namespace: &str) {
    wait_settled_on(database_url, &test_support::nats_url(), namespace).await;
}

/// [`wait_settled`] against the NATS server at `nats_url` (a test's private one).
pub async fn wait_settled_on(database_url: &str, nats_url: &str, namespace: &str) {
    let streams = ["EVENTS", "TASKS", "CHANGES"]
        .map(|base| format!("{}_{base}", namespace.to_ascii_uppercase()));
    let pool = sqlx::PgPool::connect(database_url).await.unwrap();
    let settled = test_support::eventually(Duration::from_secs(60), || async {
        if !test_support::consumers_settled(nats_url, &streams, Duration::ZERO).await {
            return false;
        }
        for schema in ["api", "worker", "cron", "notifier", "sync"] {
            // A service that never started has no outbox (and a statement naming a missing
            // table fails at parse time, whatever its WHERE says: ask first).
            let table = format!("{schema}.outbox");
            let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
                .bind(&table)
                .fetch_one(&pool)
                .await
                .unwrap();
            if !exists {
                continue;
            }
            let unsent: i64 = sqlx::query_scalar(&format!(
                "SELECT count(*) FROM {table} WHERE sent_at IS NULL"
            ))
            .fetch_one(&pool)
            .await
            .unwrap();
            if unsent > 0 {
                return false;
            }
        }
        // Not waited for: the worker's insight marks (`insight_sync_due`). Under a running load
        // there is nearly always one less than a sync delay old; tests that read published
        // insights poll for them.
        // A handler may have written to an outbox between the two looks.
        test_support::consumers_settled(nats_url, &streams, Duration::ZERO).await
    })
    .await;
    pool.close().await;
    assert!(settled, "the services did not settle within 60 s");
}

/// A user signed in through the api's dev login (`AUTH_DEV_LOGIN=true`).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct DevUser {
    /// The session token: `Authorization: Bearer <token>`.
    pub token: String,
    pub user_id: uuid::Uuid,
}

/// Sign in `email` with the dev login of the api at `api_url` (it must answer 200).
pub async fn dev_login(
    client: &reqwest::Client,
    api_url: &str,
    email: &str,
    name: &str,
) -> DevUser {
    let response = client
        .post(format!("{api_url}/auth/dev/login"))
        .json(&serde_json::json!({ "email": email, "name": name }))
        .send()
        .await
        .expect("dev login request");
    assert_eq!(response.status(), 200, "dev login of {email}");
    response.json().await.expect("dev login body")
}
