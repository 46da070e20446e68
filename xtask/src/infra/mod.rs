//! Make sure the local Postgres and NATS (with JetStream) are up: use them if they answer,
//! start them if installed and stopped, install them with apt-get if absent and possible,
//! and otherwise say exactly what to install. Object storage likewise: a local `s3s-fs`
//! (an S3-protocol server on a directory), installed with `cargo install` when missing.

mod nats;
mod postgres;
mod s3;

pub use postgres::{ensure_postgres_only, ensure_roles, schema_database_url, service_database_url};

use std::process::{Command, Stdio};
use std::str::FromStr;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

use sqlx::postgres::PgConnectOptions;

use nats::ensure_nats;
use postgres::ensure_postgres;
use s3::ensure_s3;

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
