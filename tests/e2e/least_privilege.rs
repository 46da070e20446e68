//! Issue 19: least privilege. Each service logs in to PostgreSQL as a role owning its schema
//! and nothing else, and to NATS as a user allowed only its own subjects; the NATS streams
//! get their replicas and storage from configuration.
//!
//! The NATS tests run a private `nats-server` with the checked-in
//! `deploy/k8s/nats/accounts.conf` (the file production uses), the database tests a fresh
//! database per test on the shared server. Roles are cluster-wide: the bootstrap is
//! idempotent and safe when parallel tests run it at once.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use platform::config::{NatsAuth, StreamSettings, StreamStorage};
use platform::roles::{SERVICE_ROLES, ServiceRole};
use secrecy::SecretString;
use serde_json::{Value, json};
use sqlx::Connection;
use test_support::{ChildGuard, TestDb, eventually, free_port};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

fn role(service: &str) -> &'static ServiceRole {
    platform::roles::role_of_service(service).unwrap()
}

/// The URL `service` uses on the test database: its role, no password (trust auth here).
fn role_url(db: &TestDb, service: &str) -> String {
    platform::roles::service_url(db.url(), role(service)).unwrap()
}

fn secret(text: &str) -> SecretString {
    SecretString::from(text.to_owned())
}

async fn bootstrap(db: &TestDb) {
    let admin = db.pool().await;
    platform::roles::bootstrap(&admin).await.unwrap();
    admin.close().await;
}

/// The Postgres error code of a failed query.
fn sql_state(error: &sqlx::Error) -> Option<String> {
    match error {
        sqlx::Error::Database(error) => error.code().map(|code| code.into_owned()),
        _ => None,
    }
}

// ---------------------------------------------------------------------------------------------
// PostgreSQL roles

#[tokio::test]
async fn each_service_role_owns_its_schema_and_cannot_touch_another() {
    let db = TestDb::new().await;
    // An install from before the roles: the api's schema migrated by the administrator.
    let old = platform::db::connect_and_migrate(&secret(db.url()), "api", 2, &api::MIGRATOR)
        .await
        .unwrap();
    old.close().await;

    // Several bootstraps at once (as parallel tests on one server do): all succeed.
    let runs = (0..3).map(|_| bootstrap(&db));
    futures::future::join_all(runs).await;
    bootstrap(&db).await; // and again: idempotent

    let migrators = [
        ("api", &api::MIGRATOR),
        ("sync-streamer", &sync_streamer::MIGRATOR),
        ("worker", &worker::MIGRATOR),
        ("cron", &cron::MIGRATOR),
        ("notifier", &notifier::MIGRATOR),
    ];
    let admin = db.pool().await;
    for (service, migrator) in migrators {
        let role = role(service);
        // The service migrates its schema under its own role, as at start.
        let pool = platform::db::connect_and_migrate(
            &secret(&role_url(&db, service)),
            role.schema,
            2,
            migrator,
        )
        .await
        .unwrap_or_else(|error| panic!("{service} cannot migrate as {}: {error}", role.role));
        let current: String = sqlx::query_scalar("SELECT current_user::text")
            .fetch_one(&pool)
            .await
            .unwrap();
        assert_eq!(current, role.role);
        pool.close().await;

        let (tables, foreign): (i64, i64) = sqlx::query_as(
            "SELECT count(*), count(*) FILTER (WHERE pg_get_userbyid(c.relowner) <> $2)
             FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
             WHERE n.nspname = $1 AND c.relkind IN ('r', 'p')",
        )
        .bind(role.schema)
        .bind(role.role)
        .fetch_one(&admin)
        .await
        .unwrap();
        assert!(tables > 0, "{}: no tables", role.schema);
        assert_eq!(
            foreign, 0,
            "every table of {} is owned by {}",
            role.schema, role.role
        );
    }

    // The api's role may change the tables the administrator created before the bootstrap.
    let api_pool = platform::db::connect(&secret(&role_url(&db, "api")), "api", 1)
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM users")
        .execute(&api_pool)
        .await
        .unwrap();
    sqlx::query("ALTER TABLE users ADD COLUMN least_privilege_probe int")
        .execute(&api_pool)
        .await
        .unwrap();
    api_pool.close().await;

    // The worker's role reads and writes its own schema only.
    let mut worker = sqlx::PgConnection::connect(&role_url(&db, "worker"))
        .await
        .unwrap();
    sqlx::query("SELECT count(*) FROM worker.journal_entry_activity")
        .execute(&mut worker)
        .await
        .unwrap();
    for (what, sql) in [
        ("read the api's users", "SELECT count(*) FROM api.users"),
        (
            "write the notifier's table",
            "DELETE FROM notifier.notifications",
        ),
        ("create a schema", "CREATE SCHEMA sneaky"),
        (
            "create a table in public",
            "CREATE TABLE public.sneaky (id int)",
        ),
    ] {
        let error = sqlx::query(sql)
            .execute(&mut worker)
            .await
            .err()
            .unwrap_or_else(|| panic!("journal_worker may {what}"));
        assert_eq!(
            sql_state(&error).as_deref(),
            Some("42501"),
            "{what}: {error}"
        );
        assert!(error.to_string().contains("permission denied"), "{error}");
    }
    worker.close().await.unwrap();
    admin.close().await;
}

#[tokio::test]
async fn a_role_without_its_schema_is_told_to_run_the_bootstrap() {
    let db = TestDb::new().await;
    bootstrap(&db).await;
    let admin = db.pool().await;
    sqlx::query("DROP SCHEMA cron CASCADE")
        .execute(&admin)
        .await
        .unwrap();
    admin.close().await;
    let error = platform::db::connect_and_migrate(
        &secret(&role_url(&db, "cron")),
        "cron",
        1,
        &cron::MIGRATOR,
    )
    .await
    .expect_err("the cron role may not create its schema");
    let message = error.to_string();
    assert!(
        message.contains("schema `cron` does not exist")
            && message.contains("cargo xtask db roles"),
        "{message}"
    );
}

/// The checked-in SQL (compose's one-shot service and the Kubernetes job run it) is the one
/// `cargo xtask` runs.
#[test]
fn the_roles_sql_file_is_generated() {
    check_generated(
        "deploy/k8s/postgres/roles.sql",
        &platform::roles::bootstrap_file(),
    );
}

/// `path` holds `expected`; `JOURNAL_WRITE_GENERATED=1` rewrites it instead.
fn check_generated(path: &str, expected: &str) {
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

// ---------------------------------------------------------------------------------------------
// NATS users

#[test]
fn the_nats_accounts_file_is_generated() {
    check_generated(
        "deploy/k8s/nats/accounts.conf",
        &bus::permissions::accounts_conf(),
    );
}

/// A `nats-server -js` of this test's own, with the checked-in accounts file and a password
/// per service user in its environment.
struct AuthNats {
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
    _child: ChildGuard,
}

fn password_of(user: &str) -> String {
    format!("test-password-of-{user}")
}

impl AuthNats {
    fn start() -> Self {
        let dir = tempfile::TempDir::new().unwrap();
        std::fs::copy(
            repo_root().join("deploy/k8s/nats/accounts.conf"),
            dir.path().join("accounts.conf"),
        )
        .unwrap();
        let port = free_port();
        let store = dir.path().join("store");
        let config = dir.path().join("server.conf");
        std::fs::write(
            &config,
            format!(
                "listen: 127.0.0.1:{port}\njetstream {{ store_dir: \"{}\" }}\ninclude ./accounts.conf\n",
                store.display()
            ),
        )
        .unwrap();
        let log = dir.path().join("nats.log");
        let program = ["/usr/sbin/nats-server", "/usr/local/bin/nats-server"]
            .into_iter()
            .map(PathBuf::from)
            .find(|path| path.exists())
            .unwrap_or_else(|| PathBuf::from("nats-server"));
        let mut command = Command::new(program);
        command
            .arg("-c")
            .arg(&config)
            .arg("-l")
            .arg(&log)
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for permissions in bus::permissions::service_permissions() {
            command.env(
                bus::permissions::password_variable(permissions.user),
                password_of(permissions.user),
            );
        }
        let child = ChildGuard::new(command.spawn().unwrap());
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "nats-server with accounts.conf did not start; log: {}",
                std::fs::read_to_string(&log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        Self {
            port,
            log,
            _dir: dir,
            _child: child,
        }
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    fn auth(&self, service: &str) -> NatsAuth {
        let user = role(service).role;
        NatsAuth {
            user: user.to_owned(),
            password: secret(&password_of(user)),
        }
    }

    /// The server's log lines about refused publishes or subscriptions.
    fn violations(&self) -> Vec<String> {
        std::fs::read_to_string(&self.log)
            .unwrap_or_default()
            .lines()
            // `[ERR] … - Publish Violation - User "journal_worker", Subject "…"`
            .filter(|line| line.contains(" Violation - User "))
            .map(str::to_owned)
            .collect()
    }
}

#[tokio::test]
async fn a_service_may_publish_its_own_subjects_only_and_needs_its_password() {
    let nats = AuthNats::start();

    // Right password: connects, creates the streams, publishes its own event.
    let worker = platform::nats::connect_with(&nats.url(), "worker", Some(&nats.auth("worker")))
        .await
        .unwrap();
    let mut jetstream = async_nats::jetstream::new(worker.clone());
    jetstream.set_timeout(Duration::from_secs(2));
    let bus = bus::Bus::start_with(jetstream.clone(), "", "worker", StreamSettings::default())
        .await
        .unwrap();
    platform::nats::ping(&jetstream, Duration::from_secs(2))
        .await
        .unwrap();
    bus.publish_raw(
        "events.export.ready",
        "export.ready",
        "x".into(),
        "own-1",
        &[],
    )
    .await
    .expect("the worker publishes its own event");

    // Another service's event: refused. JetStream never stores it; the publisher's ack
    // wait fails, and the server says why.
    let refused = bus
        .publish_raw(
            "events.user.created",
            "user.created",
            "x".into(),
            "foreign-1",
            &[],
        )
        .await;
    assert!(refused.is_err(), "the worker published the api's event");
    let (tx, mut server_errors) = tokio::sync::mpsc::unbounded_channel();
    let auth = nats.auth("worker");
    let observer = async_nats::ConnectOptions::new()
        .user_and_password(auth.user.clone(), password_of(&auth.user))
        .custom_inbox_prefix(platform::nats::inbox_prefix(&auth.user))
        .event_callback(move |event| {
            let tx = tx.clone();
            async move {
                if let async_nats::Event::ServerError(error) = event {
                    let _ = tx.send(error.to_string());
                }
            }
        })
        .connect(nats.url())
        .await
        .unwrap();
    observer
        .publish("tasks.api.roll_over_usage", "x".into())
        .await
        .unwrap();
    observer.flush().await.unwrap();
    let error = tokio::time::timeout(Duration::from_secs(5), server_errors.recv())
        .await
        .expect("the server reports the refused publish")
        .unwrap();
    assert!(
        error.contains("Permissions Violation") && error.contains("tasks.api.roll_over_usage"),
        "{error}"
    );
    // Nor may it read another service's inbox.
    let sneaky = observer.subscribe("_INBOX_journal_api.>").await.unwrap();
    drop(sneaky);
    let error = tokio::time::timeout(Duration::from_secs(5), server_errors.recv())
        .await
        .expect("the server reports the refused subscription")
        .unwrap();
    assert!(error.contains("Permissions Violation"), "{error}");

    let events = jetstream.get_stream("EVENTS").await.unwrap();
    let stored = events.cached_info().state.messages;
    assert_eq!(stored, 1, "only the worker's own event is in the stream");

    // Wrong password, no credentials: refused at connect with a clear error, no secret shown.
    let wrong = NatsAuth {
        user: "journal_worker".to_owned(),
        password: secret("not-the-password"),
    };
    let error = platform::nats::connect_with(&nats.url(), "worker", Some(&wrong))
        .await
        .expect_err("a wrong password is refused");
    let message = error.to_string();
    assert!(
        message.contains("authorization violation")
            && message.contains("journal_worker")
            && message.contains("NATS_PASSWORD")
            && !message.contains("not-the-password"),
        "{message}"
    );
    let error = platform::nats::connect(&nats.url(), "worker")
        .await
        .expect_err("no credentials are refused");
    assert!(error.to_string().contains("NATS_USER"), "{error}");
}

/// A JetStream API request as `service`, answered or not: `None` when the server refused the
/// publish (no answer comes; the server logs the violation), else the answer's JSON.
async fn jetstream_request(
    nats: &AuthNats,
    service: &str,
    subject: &str,
    body: Value,
) -> Option<Value> {
    let auth = nats.auth(service);
    let client = async_nats::ConnectOptions::new()
        .user_and_password(auth.user.clone(), password_of(&auth.user))
        .custom_inbox_prefix(platform::nats::inbox_prefix(&auth.user))
        .request_timeout(Some(Duration::from_secs(2)))
        .connect(nats.url())
        .await
        .unwrap();
    let answer = client
        .request(
            subject.to_owned(),
            serde_json::to_vec(&body).unwrap().into(),
        )
        .await
        .ok()?;
    Some(serde_json::from_slice(&answer.payload).unwrap())
}

/// A consumer of EVENTS as the JetStream API takes it: a durable one (as the bus router makes)
/// when `name` ends in `--…`, else an ephemeral (ordered-like) one.
fn consumer_config(name: &str, filter: &str) -> Value {
    let durable = name.contains("--").then_some(name);
    json!({
        "stream_name": "EVENTS",
        "config": {
            "name": name,
            "durable_name": durable,
            "filter_subject": filter,
            "ack_policy": "none",
            "deliver_policy": "all",
            "max_deliver": 1,
        },
        "action": "",
    })
}

#[tokio::test]
async fn a_service_may_consume_only_the_messages_it_handles() {
    let nats = AuthNats::start();
    // The api creates the streams, as at its start.
    let api = platform::nats::connect_with(&nats.url(), "api", Some(&nats.auth("api")))
        .await
        .unwrap();
    let mut jetstream = async_nats::jetstream::new(api);
    jetstream.set_timeout(Duration::from_secs(2));
    bus::Bus::start_with(jetstream.clone(), "", "api", StreamSettings::default())
        .await
        .unwrap();

    // The notifier reads `user.created` through its own durable consumer...
    let own = "$JS.API.CONSUMER.CREATE.EVENTS.notifier--user_created.events.user.created";
    let created = jetstream_request(
        &nats,
        "notifier",
        own,
        consumer_config("notifier--user_created", "events.user.created"),
    )
    .await
    .expect("the notifier creates its own consumer");
    assert!(created.get("error").is_none(), "{created}");
    // ...but cannot open one on session revocations, under any name,
    let foreign = "$JS.API.CONSUMER.CREATE.EVENTS.peek.events.session.revoked";
    let refused = jetstream_request(
        &nats,
        "notifier",
        foreign,
        consumer_config("peek", "events.session.revoked"),
    )
    .await;
    assert!(refused.is_none(), "{refused:?}");
    // nor an unnamed one, whose subject does not say its filter,
    let unnamed = jetstream_request(
        &nats,
        "notifier",
        "$JS.API.CONSUMER.CREATE.EVENTS",
        consumer_config("", "events.session.revoked"),
    )
    .await;
    assert!(unnamed.is_none(), "{unnamed:?}");
    // and its own subject with another filter in the body is refused by the server itself.
    let mismatched = jetstream_request(
        &nats,
        "notifier",
        own,
        consumer_config("notifier--user_created", "events.session.revoked"),
    )
    .await
    .expect("the server answers");
    assert!(mismatched.get("error").is_some(), "{mismatched}");

    // The api may open ordered consumers (any name) on revocations, but not pull, ack or
    // delete the notifier's durable.
    let ordered = jetstream_request(
        &nats,
        "api",
        "$JS.API.CONSUMER.CREATE.EVENTS.api-revocations-1.events.session.revoked",
        consumer_config("api-revocations-1", "events.session.revoked"),
    )
    .await
    .expect("the api opens its revocation consumer");
    assert!(ordered.get("error").is_none(), "{ordered}");
    let stolen = jetstream_request(
        &nats,
        "api",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifier--user_created",
        json!({"batch": 1, "no_wait": true}),
    )
    .await;
    assert!(stolen.is_none(), "{stolen:?}");
    let deleted = jetstream_request(
        &nats,
        "api",
        "$JS.API.CONSUMER.DELETE.EVENTS.notifier--user_created",
        json!({}),
    )
    .await;
    assert!(deleted.is_none(), "{deleted:?}");
    // (the api may not even look it up: ask as the notifier)
    let notifier =
        platform::nats::connect_with(&nats.url(), "notifier", Some(&nats.auth("notifier")))
            .await
            .unwrap();
    let mut notifier = async_nats::jetstream::new(notifier);
    notifier.set_timeout(Duration::from_secs(2));
    let events = notifier.get_stream("EVENTS").await.unwrap();
    assert!(
        events.consumer_info("notifier--user_created").await.is_ok(),
        "the durable is still there"
    );

    let violations = nats.violations();
    for subject in [
        foreign,
        "$JS.API.CONSUMER.CREATE.EVENTS\"",
        "$JS.API.CONSUMER.MSG.NEXT.EVENTS.notifier--user_created",
        "$JS.API.CONSUMER.DELETE.EVENTS.notifier--user_created",
    ] {
        assert!(
            violations.iter().any(|line| line.contains(subject)),
            "no violation logged for {subject}: {violations:#?}"
        );
    }
}

/// The replicas and storage settings reach the streams; a replica count the server cannot
/// give is a clear error at start.
#[tokio::test]
async fn streams_get_the_configured_replicas_and_storage() {
    let client = platform::nats::connect(&test_support::nats_url(), "replicas-test")
        .await
        .unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let namespace = e2e_tests::unique_namespace();
    let settings = StreamSettings {
        replicas: 1,
        storage: StreamStorage::Memory,
    };
    let bus = bus::Bus::start_with(jetstream.clone(), &namespace, "test", settings)
        .await
        .unwrap();
    for base in bus::streams::STREAM_NAMES {
        let stream = jetstream.get_stream(bus.stream_name(base)).await.unwrap();
        let config = &stream.cached_info().config;
        assert_eq!(config.num_replicas, 1, "{base}");
        assert_eq!(
            config.storage,
            async_nats::jetstream::stream::StorageType::Memory,
            "{base}"
        );
    }
    bus.delete_streams().await.unwrap();

    // Three replicas on one (unclustered) server: refused, and the error says so.
    let other = e2e_tests::unique_namespace();
    let three = StreamSettings {
        replicas: 3,
        storage: StreamStorage::File,
    };
    let error = bus::Bus::start_with(jetstream.clone(), &other, "test", three)
        .await
        .err()
        .expect("a single server cannot hold three replicas");
    let message = error.to_string();
    assert!(
        message.contains("creating stream") && message.to_lowercase().contains("replica"),
        "{message}"
    );
    e2e_tests::delete_namespace(&test_support::nats_url(), &other).await;
}

// ---------------------------------------------------------------------------------------------
// The whole system under its own roles and users

struct Running {
    name: &'static str,
    base_url: String,
    shutdown: CancellationToken,
    handle: tokio::task::JoinHandle<Result<(), String>>,
}

macro_rules! start_as_itself {
    ($krate:ident, $db:expr, $nats:expr) => {{
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let shutdown = CancellationToken::new();
        let mut config = $krate::Config::for_tests(&role_url($db, $krate::SERVICE), &$nats.url());
        config.common.nats_auth = Some($nats.auth($krate::SERVICE));
        let token = shutdown.clone();
        let handle = tokio::spawn(async move {
            let result = $krate::run(config, listener, token)
                .await
                .map_err(|error| error.to_string());
            if let Err(error) = &result {
                eprintln!("{} stopped with an error: {error}", $krate::SERVICE);
            }
            result
        });
        Running {
            name: $krate::SERVICE,
            base_url,
            shutdown,
            handle,
        }
    }};
}

async fn rpc(
    client: &reqwest::Client,
    api: &str,
    token: &str,
    procedure: &str,
    input: Value,
) -> Value {
    let response = client
        .post(format!("{api}/rpc/{procedure}"))
        .bearer_auth(token)
        .json(&json!({ "json": input }))
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(status, 200, "{procedure}: {body}");
    body["json"].clone()
}

async fn count(pool: &sqlx::PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// The five services, each with its own database role and NATS user (the production
/// accounts file), start, become ready and carry an entry, a sign-up notification and a data
/// export (a task, the worker's question to the api, the answer, `export.ready`) through;
/// the NATS server refuses nothing along the way.
#[tokio::test]
async fn the_system_works_under_its_roles_and_users() {
    let db = TestDb::new().await;
    bootstrap(&db).await;
    let nats = AuthNats::start();
    let services = vec![
        start_as_itself!(api, &db, nats),
        start_as_itself!(sync_streamer, &db, nats),
        start_as_itself!(worker, &db, nats),
        start_as_itself!(cron, &db, nats),
        start_as_itself!(notifier, &db, nats),
    ];
    for service in &services {
        let url = format!("{}/readyz", service.base_url);
        let ready = eventually(Duration::from_secs(60), || {
            let url = url.clone();
            async move { test_support::get(&url).await.0 == 200 }
        })
        .await;
        assert!(
            ready,
            "{} never became ready: {:?}; NATS refused {:?}",
            service.name,
            test_support::get(&url).await,
            nats.violations()
        );
    }

    let api_url = services[0].base_url.clone();
    let client = reqwest::Client::new();
    let user = e2e_tests::dev_login(&client, &api_url, "ada@example.com", "Ada").await;
    let entry = rpc(
        &client,
        &api_url,
        &user.token,
        "journalEntries/create",
        json!({"title": "Least privilege", "content": "Each to its own"}),
    )
    .await;
    let export = rpc(
        &client,
        &api_url,
        &user.token,
        "exports/create",
        Value::Null,
    )
    .await;
    let export_id = export["exportId"].as_str().unwrap().to_owned();

    let admin = db.pool().await;
    let entry_id = entry["journalEntryId"].as_str().unwrap().to_owned();
    let flowed = eventually(Duration::from_secs(30), || {
        let admin = admin.clone();
        let entry_id = entry_id.clone();
        async move {
            count(
                &admin,
                &format!(
                    "SELECT count(*) FROM worker.journal_entry_activity \
                     WHERE journal_entry_id::text = '{entry_id}'"
                ),
            )
            .await
                == 1
                && count(&admin, "SELECT count(*) FROM sync.rows").await > 0
                && count(&admin, "SELECT count(*) FROM notifier.recipients").await > 0
        }
    })
    .await;
    assert!(
        flowed,
        "the entry, its sync row or the new user's recipient never arrived; NATS refused {:?}",
        nats.violations()
    );
    let ready = eventually(Duration::from_secs(30), || {
        let client = client.clone();
        let api_url = api_url.clone();
        let token = user.token.clone();
        let export_id = export_id.clone();
        async move {
            rpc(
                &client,
                &api_url,
                &token,
                "exports/get",
                json!({"exportId": export_id}),
            )
            .await["status"]
                == "ready"
        }
    })
    .await;
    assert!(
        ready,
        "the export never became ready; NATS refused {:?}",
        nats.violations()
    );
    assert_eq!(
        count(&admin, "SELECT count(*) FROM worker.dead_letters").await
            + count(&admin, "SELECT count(*) FROM api.dead_letters").await
            + count(&admin, "SELECT count(*) FROM notifier.dead_letters").await,
        0,
        "nothing was dead-lettered"
    );
    assert_eq!(
        nats.violations(),
        Vec::<String>::new(),
        "NATS refused something"
    );
    admin.close().await;

    for service in services {
        service.shutdown.cancel();
        let result = tokio::time::timeout(Duration::from_secs(20), service.handle)
            .await
            .unwrap_or_else(|_| panic!("{} did not stop", service.name))
            .unwrap();
        assert!(result.is_ok(), "{}: {result:?}", service.name);
    }
    assert_eq!(
        nats.violations(),
        Vec::<String>::new(),
        "NATS refused something"
    );
}

#[test]
fn every_service_has_a_role_and_a_nats_user_of_the_same_name() {
    let users: Vec<(&str, &str)> = bus::permissions::service_permissions()
        .iter()
        .map(|permissions| (permissions.service, permissions.user))
        .collect();
    let roles: Vec<(&str, &str)> = SERVICE_ROLES
        .iter()
        .map(|role| (role.service, role.role))
        .collect();
    assert_eq!(users, roles);
}
