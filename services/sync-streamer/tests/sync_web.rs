//! The web client library (`clients/sync-web`) and its demo page in a real browser (issue 18):
//! headless Chromium, driven by `tests/orpc-client/sync-web.test.ts`, loads the library built
//! from source with `tsc` from a page on another origin and follows the streamer with it:
//! catch-up and live rows in its store, each row version delivered once, the cursor and rows
//! persisted in IndexedDB across a reload, the token refreshed before it expires, `reset`,
//! `scope_removed` and `closed: scopes_changed` handled; the demo page lists entries live.
//!
//! Needs Chromium (`apt-get install chromium`, or `CHROMIUM=/path`; `cargo xtask test` and CI
//! install it) and the script's packages (`npm ci --prefix tests/orpc-client`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use axum::Router;
use axum::extract::{Path as UrlPath, State};
use axum::http::{StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use common::{Streamer, TestApi};
use test_support::orpc_client::{OrpcClientScripts, chromium};
use tokio::net::TcpListener;

/// A page that loads the library as an ES module and hands it to the test as `window.SyncWeb`.
const TEST_PAGE: &str = r#"<!doctype html>
<title>sync-web under test</title>
<link rel="icon" href="data:," />
<script type="module">
  import * as SyncWeb from '/clients/sync-web/dist/index.js'
  window.SyncWeb = SyncWeb
  window.syncWebLoaded = true
</script>
"#;

#[derive(Clone)]
struct Files {
    /// The library as `tsc` built it.
    dist: PathBuf,
    /// `examples/sync-web-demo`.
    demo: PathBuf,
    /// The api's pool (it reaches the `sync` schema in tests).
    pool: sqlx::PgPool,
}

fn safe(name: &str) -> bool {
    !name.is_empty()
        && !name.starts_with('.')
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'))
}

async fn file(dir: &Path, name: &str) -> Response {
    if !safe(name) {
        return StatusCode::NOT_FOUND.into_response();
    }
    let content_type = match name.rsplit('.').next() {
        Some("js") => "text/javascript; charset=utf-8",
        Some("html") => "text/html; charset=utf-8",
        Some("map" | "json") => "application/json",
        _ => "application/octet-stream",
    };
    match tokio::fs::read(dir.join(name)).await {
        Ok(bytes) => ([(header::CONTENT_TYPE, content_type)], bytes).into_response(),
        Err(_) => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn library(State(files): State<Files>, UrlPath(name): UrlPath<String>) -> Response {
    file(&files.dist, &name).await
}

async fn demo(State(files): State<Files>, UrlPath(name): UrlPath<String>) -> Response {
    file(&files.demo, &name).await
}

/// Make every cursor below the read model's watermark too old (as if the tombstone retention
/// had passed it): the next stream from such a cursor starts with `reset`.
async fn raise_horizon(State(files): State<Files>) -> String {
    let horizon: i64 = sqlx::query_scalar(
        "UPDATE sync.materializer_state SET horizon = watermark RETURNING horizon",
    )
    .fetch_one(&files.pool)
    .await
    .unwrap();
    horizon.to_string()
}

async fn serve(listener: TcpListener, files: Files) {
    let app = Router::new()
        .route("/test.html", get(|| async { Html(TEST_PAGE) }))
        .route("/clients/sync-web/dist/{name}", get(library))
        .route(
            "/examples/sync-web-demo/",
            get(|State(files): State<Files>| async move { file(&files.demo, "index.html").await }),
        )
        .route("/examples/sync-web-demo/{name}", get(demo))
        .route("/control/raise-horizon", post(raise_horizon))
        .with_state(files);
    axum::serve(listener, app).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_web_client_keeps_a_live_local_copy_in_a_browser() {
    let chromium = chromium();
    let scripts = OrpcClientScripts::locate();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dist = std::env::temp_dir().join(format!("sync-web-{}", uuid::Uuid::new_v4().simple()));
    scripts
        .run(
            "tsc",
            &[
                "-p",
                repo.join("clients/sync-web/tsconfig.json")
                    .to_str()
                    .unwrap(),
                "--outDir",
                dist.to_str().unwrap(),
            ],
            &[],
        )
        .await;

    // The page's origin is known before the api starts: the demo page calls the api from it.
    let page_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let page_url = format!("http://{}", page_listener.local_addr().unwrap());
    let token_ttl = Duration::from_secs(8);
    let api = TestApi::start_with(|config| {
        config.allowed_origins = vec![page_url.clone()];
        config.sync_token_ttl = token_ttl;
    })
    .await;
    let streamer = Streamer::start(&api, |config| {
        config.sync.allowed_origins = vec![page_url.clone()];
        config.sync.retry_ms = 300;
    })
    .await;
    tokio::spawn(serve(
        page_listener,
        Files {
            dist: dist.clone(),
            demo: repo.join("examples/sync-web-demo"),
            pool: api.pool.clone(),
        },
    ));

    let owner = api.login("owner@example.com").await;
    let member = api.login("member@example.com").await;
    let team_id = api.team_with(&owner, &[(&member, "member")]).await;

    scripts
        .run_checks(
            "sync-web.test.ts",
            "sync-web",
            &[
                ("API_URL", &api.base_url),
                ("SYNC_URL", &streamer.base_url),
                ("PAGE_URL", &page_url),
                ("OWNER_TOKEN", &owner.token),
                ("MEMBER_TOKEN", &member.token),
                ("MEMBER_USER_ID", &member.user_id.to_string()),
                ("MEMBER_EMAIL", &member.email),
                ("TEAM_ID", &team_id),
                ("TOKEN_TTL_MS", &token_ttl.as_millis().to_string()),
                ("CHROMIUM", &chromium),
            ],
        )
        .await;
    streamer.stop().await;
    api.stop().await;
    let _ = std::fs::remove_dir_all(&dist);
}
