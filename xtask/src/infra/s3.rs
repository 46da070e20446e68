//! Object storage: a local `s3s-fs`, installed with `cargo install` when missing.

use super::{have, is_local, port_open, run, wait_port};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result, bail};

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
pub(super) fn ensure_s3(endpoint: &str) -> Result<()> {
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
