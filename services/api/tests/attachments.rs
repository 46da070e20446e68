//! The api's side of attachments without a worker: object storage that does not answer is
//! a `503 STORAGE_UNAVAILABLE` (and nothing changes), never an opaque 500; signing an upload
//! needs no storage round trip. The whole flow with the worker and a real S3-protocol server
//! is in `services/worker/tests/attachments/`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use common::TestApi;
use platform::s3::S3Config;
use serde_json::json;

#[tokio::test]
async fn storage_that_does_not_answer_is_a_503_and_changes_nothing() {
    // Port 9 (discard): nothing listens there.
    let api = TestApi::start_with(|config| {
        config.s3 = S3Config::for_tests("http://127.0.0.1:9", "journal");
    })
    .await;
    let ada = api.login("ada@example.com").await;
    let created = api
        .call(
            Some(&ada),
            "cdn/createUploadUrl",
            json!({"fileName": "a.pdf", "contentType": "application/pdf", "sizeBytes": 10}),
        )
        .await
        .ok();
    assert_eq!(created["attachment"]["status"], "pending");
    assert!(
        created["upload"]["url"]
            .as_str()
            .unwrap()
            .starts_with("http://127.0.0.1:9/journal/attachments/")
    );
    let attachment_id = created["attachment"]["attachmentId"].clone();
    let answer = api
        .call(
            Some(&ada),
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!(answer.status, 503);
    assert_eq!(answer.code(), "STORAGE_UNAVAILABLE");
    assert_eq!(answer.json["defined"], true);
    let status: String =
        sqlx::query_scalar("SELECT status FROM attachments WHERE attachment_id = $1::uuid")
            .bind(attachment_id.as_str().unwrap())
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(status, "pending");
    api.stop().await;
}
