//! Postgres: use it if it answers, else start or install it; the dev roles and their URLs.

use std::path::Path;
use std::process::Command;
use std::str::FromStr;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use secrecy::SecretString;
use sqlx::postgres::PgConnectOptions;

use super::{
    apt_install, endpoints, have, host_port_of_database, is_local, is_root, port_open, run,
    wait_port,
};

/// Only Postgres (for `db g`, `db check`): returns the database URL.
pub async fn ensure_postgres_only() -> Result<String> {
    let endpoints = endpoints();
    ensure_postgres(&endpoints.database_url).await?;
    Ok(endpoints.database_url)
}

pub(super) async fn ensure_postgres(database_url: &str) -> Result<()> {
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
