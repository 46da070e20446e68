//! Make sure the local Postgres and NATS (with JetStream) are up: use them if they answer,
//! start them if installed and stopped, install them with apt-get if absent and possible,
//! and otherwise say exactly what to install. Object storage likewise: a local `s3s-fs`
//! (an S3-protocol server on a directory), installed with `cargo install` when missing.

use std::path::Path;
use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

use crate::repo_root;

/// The URLs the dev stack and tests use.
pub struct Endpoints {
    pub database_url: String,
    pub nats_url: String,
    pub s3_endpoint: String,
}

pub fn endpoints() -> Endpoints {
    Endpoints {
        database_url: std::env::var("DATABASE_URL")
            .unwrap_or_else(|_| platform::config::DEFAULT_DATABASE_URL.to_owned()),
        nats_url: std::env::var("NATS_URL")
            .unwrap_or_else(|_| platform::config::DEFAULT_NATS_URL.to_owned()),
        s3_endpoint: std::env::var("S3_ENDPOINT")
            .unwrap_or_else(|_| platform::s3::DEFAULT_ENDPOINT.to_owned()),
    }
}

pub async fn ensure() -> Result<Endpoints> {
    let endpoints = endpoints();
    ensure_postgres(&endpoints.database_url).await?;
    ensure_roles(&endpoints.database_url).await?;
    ensure_nats(&endpoints.nats_url).await?;
    ensure_s3(&endpoints.s3_endpoint)?;
    Ok(endpoints)
}

fn host_port_of_database(url: &str) -> Result<(String, u16, String)> {
    let options =
        PgConnectOptions::from_str(url).context("DATABASE_URL is not a valid postgres URL")?;
    let database = options.get_database().unwrap_or("postgres").to_owned();
    Ok((options.get_host().to_owned(), options.get_port(), database))
}

fn port_open(host: &str, port: u16) -> bool {
    use std::net::ToSocketAddrs;
    let Ok(addrs) = (host, port).to_socket_addrs() else {
        return false;
    };
    addrs
        .into_iter()
        .any(|addr| std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_ok())
}

fn is_local(host: &str) -> bool {
    matches!(host, "127.0.0.1" | "localhost" | "::1") || host.starts_with('/')
}

fn have(program: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map(|status| status.success())
        .unwrap_or(false)
}

fn is_root() -> bool {
    nix::unistd::Uid::effective().is_root()
}

fn run(description: &str, command: &mut Command) -> Result<()> {
    eprintln!("xtask: {description}");
    let status = command
        .status()
        .with_context(|| format!("could not run: {description}"))?;
    if !status.success() {
        bail!("{description} failed ({status})");
    }
    Ok(())
}

/// Chromium for the browser test (`services/sync-streamer/tests/browser.rs`): Debian's
/// `chromium`, installed with apt-get when missing and possible. When it cannot be, the other
/// tests still run and the browser test fails saying what to install.
pub fn ensure_chromium() {
    if std::path::Path::new("/usr/bin/chromium").exists() || std::env::var_os("CHROMIUM").is_some()
    {
        return;
    }
    match apt_install(&["chromium"]) {
        Ok(true) => {}
        Ok(false) => eprintln!(
            "xtask: Chromium is missing and cannot be installed here (no apt-get, or not root \
             and no sudo); the sync-streamer's browser test will fail: install `chromium` or \
             set CHROMIUM"
        ),
        Err(error) => eprintln!(
            "xtask: installing Chromium failed ({error:#}); the sync-streamer's browser test \
             will fail"
        ),
    }
}

fn apt_install(packages: &[&str]) -> Result<bool> {
    if !have("apt-get") {
        return Ok(false);
    }
    let sudo = if is_root() {
        None
    } else if have("sudo") {
        Some("sudo")
    } else {
        return Ok(false);
    };
    let command = |args: &[&str]| {
        let mut command = match sudo {
            Some(sudo) => {
                let mut command = Command::new(sudo);
                command.arg("apt-get");
                command
            }
            None => Command::new("apt-get"),
        };
        command.args(args).env("DEBIAN_FRONTEND", "noninteractive");
        command
    };
    run("apt-get update", &mut command(&["update", "-qq"]))?;
    let mut install = vec!["install", "-y", "-qq"];
    install.extend_from_slice(packages);
    run(
        &format!("apt-get install {}", packages.join(" ")),
        &mut command(&install),
    )?;
    Ok(true)
}

fn wait_port(host: &str, port: u16, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if port_open(host, port) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    false
}

/// Only Postgres (for `db g`, `db check`): returns the database URL.
pub async fn ensure_postgres_only() -> Result<String> {
    let endpoints = endpoints();
    ensure_postgres(&endpoints.database_url).await?;
    Ok(endpoints.database_url)
}

async fn ensure_postgres(database_url: &str) -> Result<()> {
    let (host, port, database) = host_port_of_database(database_url)?;
    if !port_open(&host, port) {
        if !is_local(&host) {
            bail!("Postgres at {host}:{port} does not answer (DATABASE_URL points there)");
        }
        let mut installed_now = false;
        if !have("pg_ctlcluster") && !Path::new("/usr/lib/postgresql").exists() {
            eprintln!("xtask: PostgreSQL is not installed; installing Debian's `postgresql`");
            if !apt_install(&["postgresql"])? {
                bail!(
                    "PostgreSQL is not installed and cannot be installed automatically.\n  \
                     Install PostgreSQL 15 or newer (Debian: `sudo apt-get install postgresql`) and start it,\n  \
                     or run `docker compose up postgres nats` and set DATABASE_URL."
                );
            }
            installed_now = true;
        }
        start_postgres_cluster()?;
        if !wait_port(&host, port, Duration::from_secs(30)) {
            bail!("Postgres did not start listening on {host}:{port}");
        }
        if installed_now {
            // A fresh Debian cluster asks for a password over TCP; give the superuser the
            // development password the default DATABASE_URL carries.
            set_dev_password()?;
        }
    }
    create_database_if_missing(database_url, &database).await
}

fn start_postgres_cluster() -> Result<()> {
    if have("pg_ctlcluster") {
        let versions = std::fs::read_dir("/etc/postgresql")
            .map(|entries| {
                entries
                    .filter_map(Result::ok)
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect::<Vec<_>>()
            })
            .unwrap_or_default();
        for version in versions {
            let mut command = if is_root() {
                Command::new("pg_ctlcluster")
            } else {
                sudo_command("pg_ctlcluster")
            };
            command.args(["--skip-systemctl-redirect", &version, "main", "start"]);
            // "already running" is an error for pg_ctlcluster but fine for us.
            let _ = run(&format!("starting PostgreSQL {version}"), &mut command);
        }
        return Ok(());
    }
    bail!(
        "PostgreSQL is installed but not running, and pg_ctlcluster is missing: start it yourself"
    )
}

fn sudo_command(program: &str) -> Command {
    let mut command = Command::new("sudo");
    command.arg(program);
    command
}

fn set_dev_password() -> Result<()> {
    let sql = "ALTER USER postgres PASSWORD 'postgres'";
    let mut command = if is_root() {
        let mut command = Command::new("runuser");
        command.args(["-u", "postgres", "--", "psql", "-qc", sql]);
        command
    } else {
        let mut command = Command::new("sudo");
        command.args(["-u", "postgres", "psql", "-qc", sql]);
        command
    };
    run(
        "setting the development password of the postgres user",
        &mut command,
    )
}

async fn create_database_if_missing(database_url: &str, database: &str) -> Result<()> {
    let admin_options = PgConnectOptions::from_str(database_url)?.database("postgres");
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(admin_options)
        .await
        .context("cannot connect to Postgres (check DATABASE_URL's user and password)")?;
    let exists: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
            .bind(database)
            .fetch_one(&admin)
            .await?;
    if !exists {
        eprintln!("xtask: creating database {database}");
        sqlx::query(&format!(
            "CREATE DATABASE {}",
            platform::db::quote_identifier(database)
        ))
        .execute(&admin)
        .await?;
    }
    admin.close().await;
    Ok(())
}

async fn ensure_nats(nats_url: &str) -> Result<()> {
    let address = nats_url.trim_start_matches("nats://");
    let address = address.rsplit('@').next().unwrap_or(address);
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse::<u16>().context("NATS_URL port")?,
        ),
        None => (address.to_owned(), 4222),
    };
    if !port_open(&host, port) {
        if !is_local(&host) {
            bail!("NATS at {host}:{port} does not answer (NATS_URL points there)");
        }
        if !have("nats-server") && !Path::new("/usr/sbin/nats-server").exists() {
            eprintln!("xtask: nats-server is not installed; installing Debian's `nats-server`");
            if !apt_install(&["nats-server"])? {
                bail!(
                    "nats-server is not installed and cannot be installed automatically.\n  \
                     Install NATS 2.9 or newer (Debian: `sudo apt-get install nats-server`),\n  \
                     or run `docker compose up postgres nats`."
                );
            }
        }
        start_nats(&host, port)?;
    }
    let client = platform::nats::connect(nats_url, "xtask").await?;
    let jetstream = async_nats::jetstream::new(client);
    platform::nats::ping(&jetstream, Duration::from_secs(5)).await.map_err(|error| {
        anyhow::anyhow!("NATS at {nats_url} answers but JetStream does not ({error}); start nats-server with -js")
    })?;
    Ok(())
}

fn start_nats(host: &str, port: u16) -> Result<()> {
    let program = if have("nats-server") {
        "nats-server".to_owned()
    } else {
        "/usr/sbin/nats-server".to_owned()
    };
    let dev_dir = repo_root().join(".dev");
    let store = dev_dir.join("nats");
    std::fs::create_dir_all(&store)?;
    let log = dev_dir.join("nats.log");
    eprintln!(
        "xtask: starting nats-server -js on {host}:{port} (store {}, log {})",
        store.display(),
        log.display()
    );
    // `setsid` detaches it from our terminal so Ctrl-C on the dev stack leaves it running,
    // like the Postgres cluster.
    let mut command = Command::new("setsid");
    command
        .arg(program)
        .args(["-a", host, "-p", &port.to_string(), "-js", "-sd"])
        .arg(&store)
        .arg("-l")
        .arg(&log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().context("could not start nats-server")?;
    if !wait_port(host, port, Duration::from_secs(15)) {
        bail!(
            "nats-server did not start listening on {host}:{port}; see {}",
            log.display()
        );
    }
    Ok(())
}

/// The S3-protocol server for development and tests. Pinned: newer releases need a newer rustc.
const S3S_FS_VERSION: &str = "0.14.1";

/// Where tools built for the tests are installed (`cargo install --root`): outside the clone,
/// like the target directory, so a clean clone (CI) does not build them again.
fn tools_dir() -> std::path::PathBuf {
    std::env::var_os("JOURNAL_TOOLS_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp/journal-backend-tools"))
}

/// Object storage: when `S3_ENDPOINT` (default `http://127.0.0.1:9000`) is local and nothing
/// listens there, start `s3s-fs` on it with the development credentials; install s3s-fs first
/// when it is missing. Its buckets live in the tools directory, not in the clone: the server
/// outlives the command that started it (and, in CI, the clone).
fn ensure_s3(endpoint: &str) -> Result<()> {
    let address = endpoint
        .trim_start_matches("http://")
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    let (host, port) = match address.rsplit_once(':') {
        Some((host, port)) => (
            host.to_owned(),
            port.parse::<u16>().context("S3_ENDPOINT port")?,
        ),
        None => (address.to_owned(), 80),
    };
    if port_open(&host, port) {
        return Ok(());
    }
    if !is_local(&host) {
        bail!("object storage at {host}:{port} does not answer (S3_ENDPOINT points there)");
    }
    let program = s3s_fs_program()?;
    let tools = tools_dir();
    let root = tools.join("s3-data");
    std::fs::create_dir_all(&root)?;
    let log = tools.join("s3s-fs.log");
    eprintln!(
        "xtask: starting s3s-fs on {host}:{port} (buckets in {}, log {})",
        root.display(),
        log.display()
    );
    let log_file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log)?;
    // `setsid`: it outlives the dev stack's Ctrl-C, like NATS and the Postgres cluster.
    let mut command = Command::new("setsid");
    command
        .arg(program)
        .args(["--host", &host, "--port", &port.to_string()])
        .args(["--access-key", platform::s3::DEFAULT_ACCESS_KEY_ID])
        .args(["--secret-key", platform::s3::DEFAULT_SECRET_ACCESS_KEY])
        .arg(&root)
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file);
    command.spawn().context("could not start s3s-fs")?;
    if !wait_port(&host, port, Duration::from_secs(15)) {
        bail!(
            "s3s-fs did not start listening on {host}:{port}; see {}",
            log.display()
        );
    }
    Ok(())
}

/// `s3s-fs` from PATH or the tools directory, installed there if it is in neither.
fn s3s_fs_program() -> Result<std::path::PathBuf> {
    if have("s3s-fs") {
        return Ok(std::path::PathBuf::from("s3s-fs"));
    }
    let root = tools_dir();
    let program = root.join("bin/s3s-fs");
    if program.exists() {
        return Ok(program);
    }
    let build_dir = root.join("build");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    run(
        &format!(
            "cargo install s3s-fs {S3S_FS_VERSION} into {} (once; a few minutes)",
            root.display()
        ),
        Command::new(cargo)
            // Cargo's own progress: this takes minutes and must not look like a hang.
            .args(["install", "--locked"])
            .arg(format!("s3s-fs@{S3S_FS_VERSION}"))
            .args(["--features", "binary", "--root"])
            .arg(&root)
            // Its own build directory, removed afterwards: not the workspace's target.
            .env("CARGO_TARGET_DIR", &build_dir),
    )
    .context("installing s3s-fs (needs network access to crates.io)")?;
    let _ = std::fs::remove_dir_all(&build_dir);
    Ok(program)
}

/// The password `cargo xtask` gives the services' roles when the administrator's URL carries
/// one (a server that checks passwords, such as a fresh Debian cluster over TCP). With trust
/// authentication it is never asked for. A development value, like the URL's `postgres`.
pub const DEV_ROLE_PASSWORD: &str = "journal-dev";

/// Create (idempotently) each service's role and schema in the database of `database_url`,
/// connected as that URL's user, an administrator (docs/operations.md, "Database roles").
pub async fn ensure_roles(database_url: &str) -> Result<()> {
    let admin = sqlx::postgres::PgPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(Duration::from_secs(10))
        .connect_with(PgConnectOptions::from_str(database_url)?)
        .await
        .context("cannot connect to Postgres as the administrator (DATABASE_URL)")?;
    let result = async {
        platform::roles::bootstrap(&admin).await.context(
            "creating the services' database roles (DATABASE_URL's user must be a superuser \
             or have CREATEROLE)",
        )?;
        if url_has_password(database_url) {
            // Only roles without a password yet: `ALTER ROLE` on every run would race with
            // another xtask doing the same ("tuple concurrently updated").
            let without: Vec<String> =
                sqlx::query_scalar("SELECT rolname::text FROM pg_authid WHERE rolpassword IS NULL")
                    .fetch_all(&admin)
                    .await
                    .unwrap_or_else(|_| {
                        // Not a superuser (pg_authid is hidden): set them all.
                        platform::roles::SERVICE_ROLES
                            .iter()
                            .map(|role| role.role.to_owned())
                            .collect()
                    });
            let passwords: Vec<_> = platform::roles::SERVICE_ROLES
                .iter()
                .filter(|role| without.iter().any(|name| name == role.role))
                .map(|role| (role, secret(DEV_ROLE_PASSWORD)))
                .collect();
            platform::roles::set_passwords(&admin, &passwords).await?;
        }
        Ok::<_, anyhow::Error>(())
    }
    .await;
    admin.close().await;
    result
}

fn url_has_password(database_url: &str) -> bool {
    url::Url::parse(database_url).is_ok_and(|url| url.password().is_some())
}

/// The URL `service` uses: its own role, with the development password when the
/// administrator's URL has one.
pub fn service_database_url(database_url: &str, service: &str) -> Result<String> {
    let role = platform::roles::role_of_service(service)
        .with_context(|| format!("no database role for service `{service}`"))?;
    let mut url = url::Url::parse(&platform::roles::service_url(database_url, role)?)?;
    if url_has_password(database_url) {
        let _ = url.set_password(Some(DEV_ROLE_PASSWORD));
    }
    Ok(url.to_string())
}

/// The URL of the role owning `schema`.
pub fn schema_database_url(database_url: &str, schema: &str) -> Result<String> {
    let role = platform::roles::SERVICE_ROLES
        .iter()
        .find(|role| role.schema == schema)
        .with_context(|| format!("no database role owns schema `{schema}`"))?;
    service_database_url(database_url, role.service)
}

/// The database URL as a secret, for platform helpers.
pub fn secret(url: &str) -> SecretString {
    SecretString::from(url.to_owned())
}
