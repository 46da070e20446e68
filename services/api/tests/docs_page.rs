//! `/api/docs` works on a network with no route to a CDN (issue 21): the Scalar bundle is
//! vendored, checked at build and served by the api itself, the page runs under a strict
//! Content-Security-Policy (no inline script), and headless Chromium (driven by
//! `tests/orpc-client/docs-page.test.ts`, every request to another host aborted) renders every
//! path of the document.
//!
//! Needs Chromium (`apt-get install chromium`, or `CHROMIUM=/path`; `cargo xtask test` and CI
//! install it) and the script's packages (`npm ci --prefix tests/orpc-client`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Read;

use api::routers::open_api::docs::{DOCS_CONTENT_SECURITY_POLICY, SCALAR_BUNDLE_PATH};
use common::TestApi;
use reqwest::header;
use test_support::orpc_client::{OrpcClientScripts, chromium};

fn vendored_bundle() -> Vec<u8> {
    std::fs::read(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/scalar/standalone.js"),
    )
    .unwrap()
}

#[tokio::test]
async fn the_page_and_its_assets_come_from_the_api() {
    let api = TestApi::start().await;
    let get = |path: &str, headers: &[(header::HeaderName, &str)]| {
        let mut request = api.client.get(format!("{}{path}", api.base_url));
        for (name, value) in headers {
            request = request.header(name, *value);
        }
        request.send()
    };

    let page = get("/api/docs", &[]).await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(
        page.headers()[header::CONTENT_SECURITY_POLICY],
        DOCS_CONTENT_SECURITY_POLICY
    );
    let html = page.text().await.unwrap();
    assert!(html.contains(SCALAR_BUNDLE_PATH));
    assert!(html.contains(r#"data-url="/api/v1/openapi.json""#));
    assert!(
        !html.contains("http"),
        "the page names another origin:\n{html}"
    );
    // Its configuration is JSON the bundle parses.
    let configuration = html
        .split("data-configuration='")
        .nth(1)
        .and_then(|rest| rest.split('\'').next())
        .unwrap();
    let configuration: serde_json::Value = serde_json::from_str(configuration).unwrap();
    assert_eq!(configuration["withDefaultFonts"], false);
    assert_eq!(configuration["telemetry"], false);

    // Plain: the vendored file, byte for byte, cached for a year.
    let plain = get(SCALAR_BUNDLE_PATH, &[(header::ACCEPT_ENCODING, "identity")])
        .await
        .unwrap();
    assert_eq!(plain.status(), 200);
    assert_eq!(
        plain.headers()[header::CACHE_CONTROL],
        "public, max-age=31536000, immutable"
    );
    assert!(plain.headers().get(header::CONTENT_ENCODING).is_none());
    let etag = plain.headers()[header::ETAG].to_str().unwrap().to_owned();
    let vendored = vendored_bundle();
    assert_eq!(plain.bytes().await.unwrap().as_ref(), vendored.as_slice());

    // Gzipped for a browser, and the same bytes once inflated.
    let gzipped = get(
        SCALAR_BUNDLE_PATH,
        &[(header::ACCEPT_ENCODING, "gzip, deflate, br")],
    )
    .await
    .unwrap();
    assert_eq!(gzipped.headers()[header::CONTENT_ENCODING], "gzip");
    let compressed = gzipped.bytes().await.unwrap();
    assert!(compressed.len() < vendored.len() / 2);
    let mut inflated = Vec::new();
    flate2::read::GzDecoder::new(compressed.as_ref())
        .read_to_end(&mut inflated)
        .unwrap();
    assert_eq!(inflated, vendored);

    // A browser that has it revalidates for nothing.
    let revalidated = get(SCALAR_BUNDLE_PATH, &[(header::IF_NONE_MATCH, &etag)])
        .await
        .unwrap();
    assert_eq!(revalidated.status(), 304);
    assert!(revalidated.bytes().await.unwrap().is_empty());

    // Another version's path is not served (the route names the vendored version only).
    let other = get("/api/docs/scalar-0.0.1.js", &[]).await.unwrap();
    assert_eq!(other.status(), 404);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_browser_with_no_route_outside_the_api_renders_every_operation() {
    let chromium = chromium();
    let scripts = OrpcClientScripts::locate();
    let api = TestApi::start().await;
    // `DOCS_SCREENSHOT=docs/images/api-docs.png` refreshes the picture in docs/api.md.
    let screenshot = std::env::var("DOCS_SCREENSHOT").unwrap_or_default();
    scripts
        .run_checks(
            "docs-page.test.ts",
            "docs-page",
            &[
                ("API_URL", &api.base_url),
                ("CHROMIUM", &chromium),
                ("SCREENSHOT", &screenshot),
            ],
        )
        .await;
    api.stop().await;
}
