//! `cargo xtask test`: the one command that runs every test.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{infra, repo_root};

/// The `@orpc/client` conformance script (`services/api/tests/orpc_client.rs` runs it).
const ORPC_CLIENT_DIR: &str = "tests/orpc-client";

pub async fn run(args: Vec<String>) -> Result<()> {
    infra::ensure().await?;
    ensure_orpc_client_packages();
    ensure_schemathesis();
    infra::ensure_chromium();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    // End-to-end tests run the real binaries; build them first.
    let mut build = Command::new(&cargo);
    build.arg("build").current_dir(repo_root());
    for service in crate::dev::SERVICE_BINARIES {
        build.args(["--package", service]);
    }
    let status = build.status().context("running cargo build")?;
    if !status.success() {
        bail!("building the binaries failed");
    }
    let nextest = Command::new(&cargo)
        .args(["nextest", "--version"])
        .output()
        .map(|output| output.status.success())
        .unwrap_or(false);
    let mut command = Command::new(&cargo);
    if nextest {
        command.args(["nextest", "run", "--workspace", "--no-fail-fast"]);
    } else {
        command.args(["test", "--workspace", "--no-fail-fast"]);
    }
    command.args(&args).current_dir(repo_root());
    eprintln!(
        "xtask: running {}",
        if nextest {
            "cargo nextest run"
        } else {
            "cargo test"
        }
    );
    let status = command.status().context("running the tests")?;
    if !status.success() {
        bail!("tests failed");
    }
    Ok(())
}

/// Install the oRPC client script's npm packages (`npm ci`) when they are missing or older than
/// its `package-lock.json`. When that fails (no npm, no network) the other tests still run and
/// the api's `orpc_client` test fails saying what to install.
fn ensure_orpc_client_packages() {
    let dir = repo_root().join(ORPC_CLIENT_DIR);
    if !needs_npm_ci(&dir) {
        return;
    }
    eprintln!(
        "xtask: installing the oRPC client test's packages (npm ci --prefix {ORPC_CLIENT_DIR})"
    );
    let status = Command::new("npm")
        .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
        .current_dir(&dir)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => eprintln!(
            "xtask: npm ci in {ORPC_CLIENT_DIR} failed ({status}); the api's orpc_client test \
             will fail"
        ),
        Err(error) => eprintln!(
            "xtask: cannot run npm ({error}); install Node.js 20+ with npm, or the api's \
             orpc_client test will fail"
        ),
    }
}

/// npm records what it installed in `node_modules/.package-lock.json`; reinstall when that is
/// missing or older than the lockfile (e.g. after a pull that changed the packages).
fn needs_npm_ci(dir: &Path) -> bool {
    let modified = |path: &Path| {
        std::fs::metadata(path)
            .and_then(|meta| meta.modified())
            .ok()
    };
    match (
        modified(&dir.join("package-lock.json")),
        modified(&dir.join("node_modules/.package-lock.json")),
    ) {
        (Some(lockfile), Some(installed)) => installed < lockfile,
        (Some(_), None) => true,
        (None, _) => false,
    }
}

/// Where the open API fuzz test (`services/api/tests/open_api_fuzz.rs`) finds schemathesis:
/// a virtualenv of its own under `.dev/`, so nothing is installed system-wide.
const SCHEMATHESIS_VENV: &str = ".dev/schemathesis";
/// Pinned: the fuzz run's behaviour (checks, CLI flags) changes between releases.
const SCHEMATHESIS_VERSION: &str = "4.32.5";

/// Create the virtualenv and install schemathesis when it is missing. When that fails (no
/// python3, no network) the other tests still run and the fuzz test fails saying what to
/// install.
fn ensure_schemathesis() {
    let venv = repo_root().join(SCHEMATHESIS_VENV);
    if venv.join("bin/schemathesis").exists() {
        return;
    }
    eprintln!("xtask: installing schemathesis {SCHEMATHESIS_VERSION} into {SCHEMATHESIS_VENV}");
    let created = Command::new("python3")
        .args(["-m", "venv"])
        .arg(&venv)
        .status()
        .is_ok_and(|status| status.success());
    let installed = created
        && Command::new(venv.join("bin/pip"))
            .args([
                "install",
                "--quiet",
                "--disable-pip-version-check",
                &format!("schemathesis=={SCHEMATHESIS_VERSION}"),
            ])
            .status()
            .is_ok_and(|status| status.success());
    if !installed {
        eprintln!(
            "xtask: could not install schemathesis (needs python3 with venv and network); \
             the api's open_api_fuzz test will fail"
        );
    }
}
