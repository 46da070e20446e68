//! An unmodified `@orpc/client` consuming `/rpc/sync/stream` with `for await`: starts the api
//! and the streamer in-process, type-checks `tests/orpc-client` (`tsc --noEmit`) and runs
//! `tests/orpc-client/sync.test.ts` against them (see that script for the checks).
//!
//! Needs Node 20+ and the script's packages: `npm ci --prefix tests/orpc-client` (`cargo xtask
//! test` and CI run it).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::{Streamer, TestApi};
use test_support::orpc_client::OrpcClientScripts;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unmodified_orpc_client_consumes_the_sync_stream() {
    let scripts = OrpcClientScripts::locate();
    scripts.type_check().await;
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    scripts
        .run_checks(
            "sync.test.ts",
            "sync-client",
            &[("API_URL", &api.base_url), ("SYNC_URL", &streamer.base_url)],
        )
        .await;
    streamer.stop().await;
    api.stop().await;
}
