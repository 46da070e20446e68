//! What uploads are refused: the signature, large files and other types, non-images, expired
//! upload URLs.

use std::io::Cursor;
use std::time::Duration;

use serde_json::json;

use crate::common::{System, create_upload, png, put_upload, upload_attachment};
use crate::fixtures::{assert_refused, get_url, upload_input};

#[tokio::test]
async fn the_signature_refuses_another_type_or_length() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    let body = png(8, 8);
    let created = create_upload(&system, &ada, "a.png", "image/png", body.len(), None).await;
    assert_eq!(
        put_upload(&system, &created, "image/jpeg", body.clone()).await,
        403
    );
    let mut longer = body.clone();
    longer.extend_from_slice(&[0; 100]);
    assert_eq!(
        put_upload(&system, &created, "image/png", longer).await,
        403
    );
    assert_eq!(
        put_upload(
            &system,
            &created,
            "image/png",
            body[..body.len() - 1].to_vec()
        )
        .await,
        403
    );
    assert!(system.bucket.keys().await.is_empty(), "nothing was stored");
    // The exact type and length go through.
    assert_eq!(put_upload(&system, &created, "image/png", body).await, 200);
    assert_eq!(system.bucket.keys().await.len(), 1);
    system.stop().await;
}

#[tokio::test]
async fn create_upload_url_refuses_large_files_and_other_types() {
    let system = System::start_both(|api| api.cdn.max_upload_bytes = 1000, |_| {}).await;
    let ada = system.login("ada@example.com").await;
    let cases = [
        (
            upload_input("big.png", "image/png", 1001),
            "sizeBytes",
            "too_big",
        ),
        (
            upload_input("empty.png", "image/png", 0),
            "sizeBytes",
            "too_small",
        ),
        (
            upload_input("run.exe", "application/x-msdownload", 10),
            "contentType",
            "invalid_value",
        ),
        (
            upload_input("page.html", "text/html", 10),
            "contentType",
            "invalid_value",
        ),
        (upload_input("  ", "image/png", 10), "fileName", "too_small"),
        (upload_input("dir/", "image/png", 10), "fileName", "custom"),
    ];
    for (input, field, code) in cases {
        let (status, error) = system
            .call(&ada, "cdn/createUploadUrl", input.clone())
            .await;
        assert_eq!(status, 400, "{input}: {error}");
        assert_eq!(error["code"], "BAD_REQUEST");
        assert_eq!(
            error["data"]["issues"][0]["path"],
            json!([field]),
            "{input}: {error}"
        );
        assert_eq!(error["data"]["issues"][0]["code"], code, "{input}: {error}");
    }
    let ok = system
        .ok(
            &ada,
            "cdn/createUploadUrl",
            upload_input("ok.mp3", "Audio/MPEG", 1000),
        )
        .await;
    assert_eq!(ok["attachment"]["contentType"], "audio/mpeg");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM attachments")
        .fetch_one(&system.api_pool)
        .await
        .unwrap();
    assert_eq!(rows, 1, "refused requests record nothing");
    // At most 50 uploads in progress per user.
    for index in 1..50 {
        system
            .ok(
                &ada,
                "cdn/createUploadUrl",
                upload_input(&format!("{index}.pdf"), "application/pdf", 10),
            )
            .await;
    }
    assert_refused(
        &system,
        &ada,
        "cdn/createUploadUrl",
        upload_input("51.pdf", "application/pdf", 10),
        429,
        "TOO_MANY_PENDING_UPLOADS",
    )
    .await;
    let bob = system.login("bob@example.com").await;
    system
        .ok(
            &bob,
            "cdn/createUploadUrl",
            upload_input("mine.pdf", "application/pdf", 10),
        )
        .await;
    system.stop().await;
}

#[tokio::test]
async fn a_non_image_sent_as_png_is_rejected_and_deleted() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    let rejected = upload_attachment(
        &system,
        &ada,
        "notes.png",
        "image/png",
        b"just some text pretending to be a picture".to_vec(),
        None,
    )
    .await;
    assert_eq!(rejected["status"], "rejected", "{rejected}");
    assert_eq!(rejected["rejectionCode"], "CONTENT_MISMATCH");
    assert_eq!(rejected["hasThumbnail"], false);
    assert!(
        system.bucket.keys().await.is_empty(),
        "the rejected object is deleted"
    );
    assert_refused(
        &system,
        &ada,
        "cdn/getDownloadUrl",
        json!({"attachmentId": rejected["attachmentId"]}),
        409,
        "ATTACHMENT_NOT_READY",
    )
    .await;

    // A JPEG declared as PNG is no better.
    let mut jpeg = Vec::new();
    image::RgbImage::from_pixel(4, 4, image::Rgb([1, 2, 3]))
        .write_to(&mut Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    let rejected = upload_attachment(&system, &ada, "photo.png", "image/png", jpeg, None).await;
    assert_eq!(rejected["rejectionCode"], "CONTENT_MISMATCH", "{rejected}");
    system.stop().await;
}

#[tokio::test]
async fn an_expired_upload_url_is_refused() {
    let system = System::start_both(
        |api| {
            // Long enough for the second upload below to finish within it on a loaded
            // machine (1 s failed once while the whole suite ran on two cores).
            api.cdn.upload_url_ttl = Duration::from_secs(3);
            api.cdn.download_url_ttl = Duration::from_secs(1);
        },
        |_| {},
    )
    .await;
    let ada = system.login("ada@example.com").await;
    let body = png(4, 4);
    let created = create_upload(&system, &ada, "late.png", "image/png", body.len(), None).await;
    tokio::time::sleep(Duration::from_millis(4500)).await;
    assert_eq!(
        put_upload(&system, &created, "image/png", body.clone()).await,
        403
    );
    assert!(system.bucket.keys().await.is_empty());

    // Download links expire too.
    let ready = upload_attachment(&system, &ada, "quick.png", "image/png", body, None).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let link = system
        .ok(
            &ada,
            "cdn/getDownloadUrl",
            json!({"attachmentId": ready["attachmentId"]}),
        )
        .await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let response = get_url(&system, &link["url"]).await;
    assert_eq!(response.status().as_u16(), 403);
    system.stop().await;
}
