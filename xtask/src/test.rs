//! `cargo xtask test`: the one command that runs every test.

use std::process::Command;

use anyhow::{Context, Result, bail};

use crate::{infra, repo_root};

pub async fn run(args: Vec<String>) -> Result<()> {
    infra::ensure().await?;
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
