//! The served OpenAPI document and its committed snapshot.

use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::send;

/// The served OpenAPI document equals the committed snapshot; `UPDATE_SNAPSHOTS=1` rewrites
/// the snapshot (so a change to the contract shows up in review).
#[tokio::test]
async fn the_openapi_document_matches_its_snapshot_and_is_served_without_a_key() {
    let api = TestApi::start().await;
    let served = send(
        &api,
        reqwest::Method::GET,
        "/api/v1/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body["openapi"], "3.1.0");
    assert!(served.header("x-ratelimit-limit").is_none(), "not metered");
    let generated = serde_json::to_value(api::routers::open_api::docs::document()).unwrap();
    assert_eq!(served.body, generated);

    // Every endpoint documents the key and its errors with the error schema.
    for (path, operations) in generated["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for status in ["401", "403", "429"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            assert_eq!(
                operation["security"][0]["api_key"],
                json!([]),
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        generated["components"]["securitySchemes"]["api_key"]["name"],
        "x-api-key"
    );

    let docs = api
        .client
        .get(format!("{}/api/docs", api.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    // The page loads the vendored reference, which reads the document (tests/docs_page.rs).
    assert!(
        docs.text()
            .await
            .unwrap()
            .contains(api::routers::open_api::docs::SCALAR_BUNDLE_PATH)
    );

    let snapshot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    let pretty = format!("{}\n", serde_json::to_string_pretty(&generated).unwrap());
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(&snapshot, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(&snapshot)
        .expect("tests/snapshots/openapi.json (run with UPDATE_SNAPSHOTS=1 to create it)");
    assert!(
        committed == pretty,
        "the OpenAPI document changed; review it and run with UPDATE_SNAPSHOTS=1"
    );
    api.stop().await;
}
