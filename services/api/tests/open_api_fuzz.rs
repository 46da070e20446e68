//! Fuzzes the open API from its own OpenAPI document with schemathesis (property-based
//! requests: valid, boundary and invalid inputs per operation) against the real api on real
//! Postgres and NATS. Whatever a client sends, the answer is never a 5xx, and its status,
//! content type and body are the ones the document declares, schema-valid input is accepted
//! and schema-invalid input refused (every schemathesis check; phases examples, coverage,
//! fuzzing and stateful over the inferred links). Bounded (`--max-examples`, two workers, a
//! fixed seed) so it fits in CI.
//!
//! Needs schemathesis: `cargo xtask test` installs it into `.dev/schemathesis` (python3 with
//! venv); or point `SCHEMATHESIS` at a `schemathesis` executable.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::TestApi;
use serde_json::json;
use tokio::process::Command;

/// Examples per operation and phase: enough to reach the validation edges, small enough
/// for CI (about 70 s on the project's 2-core machines).
const MAX_EXAMPLES: &str = "200";
const RUN_TIMEOUT: Duration = Duration::from_secs(600);

fn schemathesis() -> PathBuf {
    std::env::var_os("SCHEMATHESIS").map_or_else(
        || Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.dev/schemathesis/bin/schemathesis"),
        PathBuf::from,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schemathesis_finds_no_5xx_or_contract_breach_in_the_open_api() {
    let executable = schemathesis();
    assert!(
        executable.exists(),
        "{} is missing: run `cargo xtask test` (installs it) or set SCHEMATHESIS",
        executable.display()
    );
    let api = TestApi::start().await;
    let owner = api.login("fuzz-owner@example.com").await;
    let team = api
        .call(Some(&owner), "teams/create", json!({"name": "Fuzz"}))
        .await
        .ok();
    let team_id = team["teamId"].as_str().unwrap().to_owned();
    let key = api.api_key_of(&owner, &team_id, "fuzz").await.key;
    // A plan the fuzzer cannot exhaust, so every request reaches the endpoints.
    sqlx::query(
        "INSERT INTO plans (plan_id, name, monthly_request_quota, requests_per_second)
         VALUES ('fuzz', 'Fuzz', 1000000000, 100000) ON CONFLICT (plan_id) DO NOTHING",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    sqlx::query("UPDATE subscriptions SET plan_id = 'fuzz'")
        .execute(&api.pool)
        .await
        .unwrap();

    // Its working directory: schemathesis keeps a cache of examples there (`.schemathesis/`),
    // which belongs neither in the source tree nor in the next run (the seed fixes the run).
    let scratch = std::env::temp_dir().join(format!("open-api-fuzz-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&scratch).unwrap();
    // Every check, in the config file rather than `--checks all` (which would override the
    // per-operation setting below). The one thing the document cannot say by schema:
    // `cursor` is an opaque token the server issued (`nextCursor`), so a made-up string is
    // rightly a 400, not a schema-valid input to accept; every other check still runs there.
    std::fs::write(
        scratch.join("schemathesis.toml"),
        "[checks]\n\
         enabled = true\n\
         \n\
         [[operations]]\n\
         include-name = \"GET /api/v1/journal-entries\"\n\
         checks.positive_data_acceptance.enabled = false\n",
    )
    .unwrap();
    let mut command = Command::new(&executable);
    command
        .current_dir(&scratch)
        .arg("run")
        .arg(format!("{}/api/v1/openapi.json", api.base_url))
        .args(["--url", &api.base_url])
        .args(["--header", &format!("x-api-key: {key}")])
        .args(["--max-examples", MAX_EXAMPLES])
        .args(["--workers", "2"])
        .args(["--seed", "20261124"])
        .args(["--phases", "examples,coverage,fuzzing,stateful"])
        .args(["--no-color", "--output-truncate", "false"])
        .kill_on_drop(true);
    let output = tokio::time::timeout(RUN_TIMEOUT, command.output())
        .await
        .expect("schemathesis finished in time")
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}\n{stderr}");
    assert!(
        output.status.success(),
        "schemathesis found failures ({}):\n{stdout}\n{stderr}",
        output.status
    );
    // It really exercised the endpoints (not zero operations because of a schema problem).
    let reached = test_support::eventually(Duration::from_secs(10), || {
        let pool = api.pool.clone();
        async move {
            sqlx::query_scalar::<_, i64>("SELECT count(*) FROM request_logs")
                .fetch_one(&pool)
                .await
                .unwrap()
                > 50
        }
    })
    .await;
    assert!(
        reached,
        "hardly any request reached the open API: was the schema read?"
    );
    let _ = std::fs::remove_dir_all(&scratch);
    api.stop().await;
}
