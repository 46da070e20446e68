//! An unmodified `@orpc/client` consuming `/rpc/sync/stream` with `for await`: starts the api
//! and the streamer in-process, type-checks `tests/orpc-client` (`tsc --noEmit`) and runs
//! `tests/orpc-client/sync.test.ts` against them (see that script for the checks).
//!
//! Needs Node 20+ and the script's packages: `npm ci --prefix tests/orpc-client` (`cargo xtask
//! test` and CI run it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::{Streamer, TestApi};
use tokio::process::Command;

const STEP_TIMEOUT: Duration = Duration::from_secs(180);

fn client_dir() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/orpc-client");
    dir.canonicalize().unwrap_or(dir)
}

async fn run(dir: &Path, tool: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let mut command = Command::new(dir.join("node_modules/.bin").join(tool));
    command
        .args(args)
        .current_dir(dir)
        .envs(env.iter().copied())
        .kill_on_drop(true);
    let output = tokio::time::timeout(STEP_TIMEOUT, command.output())
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
async fn an_unmodified_orpc_client_consumes_the_sync_stream() {
    let dir = client_dir();
    assert!(
        dir.join("node_modules/.bin/tsx").exists() && dir.join("node_modules/.bin/tsc").exists(),
        "{}/node_modules is missing: run `npm ci --prefix tests/orpc-client` (needs Node 20+)",
        dir.display()
    );
    run(&dir, "tsc", &["--noEmit", "--pretty", "false"], &[]).await;
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let output = run(
        &dir,
        "tsx",
        &["sync.test.ts"],
        &[("API_URL", &api.base_url), ("SYNC_URL", &streamer.base_url)],
    )
    .await;
    println!("{output}");
    assert!(
        output.contains("sync-client: all checks passed"),
        "the script exited 0 without its success line:\n{output}"
    );
    streamer.stop().await;
    api.stop().await;
}
