//! The generated contract (`clients/contract`) and the server agree on what is valid: runs
//! `tests/orpc-client/contract-property.test.ts` (fast-check over inputs generated from the
//! contract's JSON Schemas, valid and mutated) against the api: every input a procedure's zod
//! schema accepts is accepted by the server (not 400), every input it rejects is answered
//! `400 BAD_REQUEST`. `CONTRACT_PROPERTY_RUNS` (default 60 per procedure) and
//! `CONTRACT_PROPERTY_SEED` replay a run.
//!
//! Needs the script's packages (`npm ci --prefix tests/orpc-client`, which also links
//! `clients/contract/node_modules`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestApi;
use test_support::orpc_client::OrpcClientScripts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_zod_schemas_accept_exactly_what_the_server_accepts() {
    let scripts = OrpcClientScripts::locate();
    let api = TestApi::start().await;
    scripts
        .run_checks(
            "contract-property.test.ts",
            "contract-property",
            &[("API_URL", &api.base_url)],
        )
        .await;
    api.stop().await;
}
