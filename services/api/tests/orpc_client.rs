//! An unmodified `@orpc/client` against the api: starts the api in-process, type-checks the
//! TypeScript client script in `tests/orpc-client` (`tsc --noEmit`, so the router type we
//! declare for clients compiles), then runs it with `API_URL` pointing at the api. The script
//! signs in with the dev login and checks outputs, GET-able queries and errors the way a web
//! app sees them (see `tests/orpc-client/client.test.ts`).
//!
//! Needs Node 20+ and the script's packages: `npm ci --prefix tests/orpc-client` (`cargo xtask
//! test` and CI run it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Output;
use std::time::Duration;

use common::TestApi;
use tokio::process::Command;

/// Generous: `tsc` alone takes several seconds on a busy 2-core machine.
const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/orpc-client");
    dir.canonicalize().unwrap_or(dir)
}

/// Run one of the script's `node_modules/.bin` tools; panics with its output unless it exits 0.
async fn run(dir: &Path, tool: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(dir.join("node_modules/.bin").join(tool));
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output: Output = tokio::time::timeout(STEP_TIMEOUT, command.output())
        .await
        .unwrap_or_else(|_| panic!("`{tool}` did not finish within {STEP_TIMEOUT:?}"))
        .unwrap_or_else(|error| panic!("could not run `{tool}` (is Node 20+ on PATH?): {error}"));
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    assert!(
        output.status.success(),
        "`{tool} {}` failed ({}):\n--- stdout ---\n{stdout}\n--- stderr ---\n{stderr}",
        args.join(" "),
        output.status
    );
    format!("{stdout}{stderr}")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_orpc_client_works_against_the_api() {
    let dir = client_dir();
    assert!(
        dir.join("node_modules/.bin/tsx").exists() && dir.join("node_modules/.bin/tsc").exists(),
        "{}/node_modules is missing: run `npm ci --prefix tests/orpc-client` (needs Node 20+)",
        dir.display()
    );

    let typecheck = run(&dir, "tsc", &["--noEmit", "--pretty", "false"], &[]).await;
    println!("tsc --noEmit: ok{typecheck}");

    let api = TestApi::start().await;
    let output = run(
        &dir,
        "tsx",
        &["client.test.ts"],
        &[("API_URL", &api.base_url)],
    )
    .await;
    println!("{output}");
    assert!(
        output.contains("all checks passed"),
        "the script exited 0 without its success line:\n{output}"
    );
    api.stop().await;
}
