//! An unmodified `@orpc/client` against the api: starts the api in-process, type-checks the
//! TypeScript client script in `tests/orpc-client` (`tsc --noEmit`: the client is typed by
//! the generated contract `clients/contract`, so the contract and the script's use of it
//! compile), then runs it with `API_URL` pointing at the api. The script
//! signs in with the dev login and checks outputs, GET-able queries and errors the way a web
//! app sees them (see `tests/orpc-client/client.test.ts`).
//!
//! Needs Node 20+ and the script's packages: `npm ci --prefix tests/orpc-client` (`cargo xtask
//! test` and CI run it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestApi;
use test_support::orpc_client::OrpcClientScripts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_orpc_client_works_against_the_api() {
    let scripts = OrpcClientScripts::locate();
    let typecheck = scripts.type_check().await;
    println!("tsc --noEmit: ok{typecheck}");

    let api = TestApi::start().await;
    scripts
        .run_checks(
            "client.test.ts",
            "orpc-client",
            &[("API_URL", &api.base_url)],
        )
        .await;
    api.stop().await;
}
