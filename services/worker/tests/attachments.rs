//! Attachments end to end, on real Postgres, NATS and an S3-protocol server (s3s-fs, which
//! checks presigned signatures): `cdn.createUploadUrl` over the api's RPC → a plain HTTP PUT
//! to the presigned URL, exactly as an app sends it → `cdn.completeUpload` → the worker's
//! verification and thumbnail → `attachment.verified` → `cdn.getDownloadUrl`, downloaded with
//! a plain HTTP GET. Also: what the signature refuses, what `createUploadUrl` refuses,
//! impostor images, who may download, expired URLs, abandoned uploads, entry deletion and the
//! retention purge.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::Cursor;
use std::time::Duration;

use bus::Bus;
use chrono::Utc;
use common::{
    CRON_SECRET, System, User, create_upload, png, purge_retention, put_upload, settled_attachment,
    upload_attachment,
};
use messages::journal::v1::CleanUpAbandonedUploads;
use messages::sync::v1::Changeset;
use prost::Message;
use serde_json::{Value, json};
use uuid::Uuid;

fn id(value: &Value, field: &str) -> String {
    value[field].as_str().unwrap().to_owned()
}

async fn download(system: &System, user: &User, input: Value) -> (u16, Vec<u8>) {
    let link = system.ok(user, "cdn/getDownloadUrl", input).await;
    assert!(link["expiresAt"].as_i64().unwrap() > Utc::now().timestamp_millis());
    let response = system
        .client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
}

/// The `attachments` rows in the api's changesets: (scope, op, row).
async fn attachment_changes(system: &System) -> Vec<(String, i32, Value)> {
    let payloads: Vec<Vec<u8>> = system
        .api_emitted("CHANGES", "changes.")
        .await
        .into_iter()
        .map(|message| message.payload)
        .collect();
    payloads
        .iter()
        .flat_map(|payload| {
            let changeset = Changeset::decode(payload.as_slice()).unwrap();
            let scope = changeset.scope.clone();
            changeset
                .changes
                .into_iter()
                .filter(|change| change.table == "attachments")
                .map(move |change| {
                    (
                        scope.clone(),
                        change.op,
                        serde_json::from_slice(&change.row_json).unwrap(),
                    )
                })
        })
        .collect()
}

#[tokio::test]
async fn an_image_goes_to_ready_with_a_thumbnail_and_only_its_viewers_download_it() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    let bob = system.login("bob@example.com").await;
    let original = png(640, 320);

    let created = create_upload(
        &system,
        &ada,
        "../../etc/Photo 1.png",
        "image/png",
        original.len(),
        None,
    )
    .await;
    let attachment = &created["attachment"];
    let attachment_id = id(attachment, "attachmentId");
    assert_eq!(attachment["status"], "pending");
    assert_eq!(attachment["fileName"], "Photo 1.png");
    assert_eq!(attachment["contentType"], "image/png");
    assert_eq!(attachment["sizeBytes"], original.len());
    assert!(attachment.get("objectKey").is_none(), "keys stay inside");
    // The signature covers the type and the length.
    let signed = created["upload"]["url"].as_str().unwrap();
    assert!(
        signed.contains("content-length") && signed.contains("content-type"),
        "{signed}"
    );
    let expires_in =
        created["upload"]["expiresAt"].as_i64().unwrap() - Utc::now().timestamp_millis();
    assert!((890_000..=900_000).contains(&expires_in), "{expires_in}");

    // Completing before the upload is refused; after it, the worker verifies.
    let (status, early) = system
        .call(
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!(
        (status, early["code"].as_str()),
        (409, Some("UPLOAD_NOT_FOUND"))
    );
    assert_eq!(
        put_upload(&system, &created, "image/png", original.clone()).await,
        200
    );
    let key = format!("attachments/{}/{attachment_id}", ada.user_id);
    assert_eq!(system.bucket.keys().await, vec![key.clone()]);
    let completed = system
        .ok(
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!(completed["status"], "verifying");
    let ready = settled_attachment(&system, &ada, &attachment_id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["hasThumbnail"], true);
    assert_eq!(
        (ready["width"].as_i64(), ready["height"].as_i64()),
        (Some(640), Some(320))
    );
    // The verified bytes moved to a key no upload URL can write; the upload key is gone.
    assert_eq!(
        system.bucket.keys().await,
        vec![
            format!("thumbnails/{attachment_id}.png"),
            format!("verified/{}/{attachment_id}", ada.user_id)
        ]
    );
    // Idempotent: completing again answers the row, asks for no second verification.
    let again = system
        .ok(
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!(again["status"], "ready");
    // A task leaves the outbox when published and its work queue when handled: count the
    // unsent ones and the handled ones (the handler records each message id).
    let unsent: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM outbox WHERE sent_at IS NULL AND headers->>'Bus-Message' = 'verify_attachment'",
    )
    .fetch_one(&system.api_pool)
    .await
    .unwrap();
    let handled: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM processed_messages WHERE handler = 'media--verify_attachment'",
    )
    .fetch_one(&system.worker_pool)
    .await
    .unwrap();
    assert_eq!(unsent + handled, 1);

    let (status, bytes) = download(&system, &ada, json!({"attachmentId": attachment_id})).await;
    assert_eq!(status, 200);
    assert_eq!(bytes, original);
    let (status, thumbnail) = download(
        &system,
        &ada,
        json!({"attachmentId": attachment_id, "variant": "thumbnail"}),
    )
    .await;
    assert_eq!(status, 200);
    let thumbnail = image::load_from_memory(&thumbnail).unwrap();
    assert_eq!((thumbnail.width(), thumbnail.height()), (256, 128));

    // Someone else's attachment does not exist for Bob.
    for procedure in ["cdn/getDownloadUrl", "cdn/get", "cdn/completeUpload"] {
        let (status, error) = system
            .call(&bob, procedure, json!({"attachmentId": attachment_id}))
            .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (404, Some("NOT_FOUND")),
            "{procedure}"
        );
    }

    // Synced: insert, then the updates, in Ada's scope.
    let changes = attachment_changes(&system).await;
    let statuses: Vec<&str> = changes
        .iter()
        .map(|(_, _, row)| row["status"].as_str().unwrap())
        .collect();
    assert_eq!(statuses, ["pending", "verifying", "ready"]);
    assert!(
        changes
            .iter()
            .all(|(scope, _, _)| *scope == format!("user.{}", ada.user_id))
    );
    let versions: Vec<i64> = changes
        .iter()
        .map(|(_, _, row)| row["version"].as_i64().unwrap())
        .collect();
    assert_eq!(versions, [1, 2, 3]);
    system.stop().await;
}

#[tokio::test]
async fn team_members_download_attachments_of_team_entries_and_others_do_not() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    let bob = system.login("bob@example.com").await;
    let eve = system.login("eve@example.com").await;
    let team_id = system.team(&ada, "Crew", &[&bob]).await;
    let entry = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "Minutes", "content": "see attached", "teamId": team_id}),
        )
        .await;
    let entry_id = id(&entry, "journalEntryId");
    let pdf = b"%PDF-1.7\n1 0 obj <<>> endobj\ntrailer <<>>\n%%EOF\n".to_vec();
    let ready = upload_attachment(
        &system,
        &ada,
        "minutes.pdf",
        "application/pdf",
        pdf.clone(),
        Some(&entry_id),
    )
    .await;
    assert_eq!(ready["status"], "ready", "{ready}");
    assert_eq!(ready["hasThumbnail"], false);
    assert_eq!(ready["teamId"], team_id);
    let attachment_id = id(&ready, "attachmentId");

    let (status, bytes) = download(&system, &bob, json!({"attachmentId": attachment_id})).await;
    assert_eq!((status, bytes), (200, pdf));
    let (status, error) = system
        .call(
            &bob,
            "cdn/getDownloadUrl",
            json!({"attachmentId": attachment_id, "variant": "thumbnail"}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("NO_THUMBNAIL"))
    );
    let (status, error) = system
        .call(
            &eve,
            "cdn/getDownloadUrl",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("NOT_FOUND")));
    // Bob may see the entry but not change it, so he cannot attach to it; Eve cannot see it.
    let input = json!({"fileName": "x.pdf", "contentType": "application/pdf", "sizeBytes": 10, "journalEntryId": entry_id});
    let (status, error) = system
        .call(&bob, "cdn/createUploadUrl", input.clone())
        .await;
    assert_eq!((status, error["code"].as_str()), (403, Some("FORBIDDEN")));
    let (status, error) = system.call(&eve, "cdn/createUploadUrl", input).await;
    assert_eq!((status, error["code"].as_str()), (404, Some("NOT_FOUND")));
    // The team's scope gets the rows.
    assert!(
        attachment_changes(&system)
            .await
            .iter()
            .all(|(scope, _, _)| *scope == format!("team.{team_id}"))
    );
    system.stop().await;
}

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
            json!({"fileName": "big.png", "contentType": "image/png", "sizeBytes": 1001}),
            "sizeBytes",
            "too_big",
        ),
        (
            json!({"fileName": "empty.png", "contentType": "image/png", "sizeBytes": 0}),
            "sizeBytes",
            "too_small",
        ),
        (
            json!({"fileName": "run.exe", "contentType": "application/x-msdownload", "sizeBytes": 10}),
            "contentType",
            "invalid_value",
        ),
        (
            json!({"fileName": "page.html", "contentType": "text/html", "sizeBytes": 10}),
            "contentType",
            "invalid_value",
        ),
        (
            json!({"fileName": "  ", "contentType": "image/png", "sizeBytes": 10}),
            "fileName",
            "too_small",
        ),
        (
            json!({"fileName": "dir/", "contentType": "image/png", "sizeBytes": 10}),
            "fileName",
            "custom",
        ),
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
            json!({"fileName": "ok.mp3", "contentType": "Audio/MPEG", "sizeBytes": 1000}),
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
                json!({"fileName": format!("{index}.pdf"), "contentType": "application/pdf", "sizeBytes": 10}),
            )
            .await;
    }
    let (status, error) = system
        .call(
            &ada,
            "cdn/createUploadUrl",
            json!({"fileName": "51.pdf", "contentType": "application/pdf", "sizeBytes": 10}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (429, Some("TOO_MANY_PENDING_UPLOADS"))
    );
    let bob = system.login("bob@example.com").await;
    system
        .ok(
            &bob,
            "cdn/createUploadUrl",
            json!({"fileName": "mine.pdf", "contentType": "application/pdf", "sizeBytes": 10}),
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
    let (status, error) = system
        .call(
            &ada,
            "cdn/getDownloadUrl",
            json!({"attachmentId": rejected["attachmentId"]}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("ATTACHMENT_NOT_READY"))
    );

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
            api.cdn.upload_url_ttl = Duration::from_secs(1);
            api.cdn.download_url_ttl = Duration::from_secs(1);
        },
        |_| {},
    )
    .await;
    let ada = system.login("ada@example.com").await;
    let body = png(4, 4);
    let created = create_upload(&system, &ada, "late.png", "image/png", body.len(), None).await;
    tokio::time::sleep(Duration::from_millis(2500)).await;
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
    let response = system
        .client
        .get(link["url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(response.status().as_u16(), 403);
    system.stop().await;
}

#[tokio::test]
async fn abandoned_uploads_are_expired_by_the_cron_task() {
    let system = System::start_both(
        |api| {
            api.cdn.upload_url_ttl = Duration::from_secs(1);
            api.cdn.abandoned_after = Duration::from_secs(1);
        },
        |_| {},
    )
    .await;
    let ada = system.login("ada@example.com").await;
    // One uploaded but never completed, one never uploaded, one finished (stays).
    let body = png(4, 4);
    let uploaded = create_upload(&system, &ada, "a.png", "image/png", body.len(), None).await;
    assert_eq!(
        put_upload(&system, &uploaded, "image/png", body.clone()).await,
        200
    );
    let never = create_upload(&system, &ada, "b.png", "image/png", 10, None).await;
    let done = upload_attachment(&system, &ada, "c.png", "image/png", body, None).await;
    assert_eq!(done["status"], "ready");
    assert_eq!(system.bucket.keys().await.len(), 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;

    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let bus = Bus::start(
        async_nats::jetstream::new(client),
        &system.namespace,
        "tests",
    )
    .await
    .unwrap();
    bus.publish(
        &CleanUpAbandonedUploads {
            cron_run_id: Uuid::now_v7().to_string(),
            scheduled_for_ms: Utc::now().timestamp_millis(),
        },
        &Uuid::now_v7().to_string(),
    )
    .await
    .unwrap();
    let cleaned = test_support::eventually(Duration::from_secs(20), || async {
        let expired: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM attachments WHERE status = 'expired' AND deleted_at IS NOT NULL",
        )
        .fetch_one(&system.api_pool)
        .await
        .unwrap();
        expired == 2
    })
    .await;
    assert!(cleaned, "the abandoned uploads were not expired");
    let done_id = id(&done, "attachmentId");
    let keys = system.bucket.keys().await;
    assert_eq!(
        keys,
        vec![
            format!("thumbnails/{done_id}.png"),
            format!("verified/{}/{done_id}", ada.user_id)
        ]
    );
    for created in [&uploaded, &never] {
        let attachment_id = id(&created["attachment"], "attachmentId");
        let (status, error) = system
            .call(
                &ada,
                "cdn/completeUpload",
                json!({"attachmentId": attachment_id}),
            )
            .await;
        assert_eq!(
            (status, error["code"].as_str()),
            (409, Some("UPLOAD_EXPIRED"))
        );
    }
    // Clients learn of it as tombstones.
    let tombstones = attachment_changes(&system)
        .await
        .into_iter()
        .filter(|(_, _, row)| row["status"] == "expired" && !row["deletedAt"].is_null())
        .count();
    assert_eq!(tombstones, 2);
    system.stop().await;
}

/// Issue 15: the upload URL stays valid for its whole lifetime, after verification too. A
/// second PUT of the same length and type (here an HTML page declared `image/png`) lands on
/// the upload key, which is no longer what downloads serve: they serve the verified copy.
/// The purge deletes both keys.
#[tokio::test]
async fn a_put_after_verification_is_never_served() {
    let system = System::start_both(
        |api| api.cron_job_secret = Some(secrecy::SecretString::from(CRON_SECRET)),
        |_| {},
    )
    .await;
    let ada = system.login("ada@example.com").await;
    let original = png(64, 64);
    let created = create_upload(&system, &ada, "a.png", "image/png", original.len(), None).await;
    let attachment_id = id(&created["attachment"], "attachmentId");
    assert_eq!(
        put_upload(&system, &created, "image/png", original.clone()).await,
        200
    );
    system
        .ok(
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
        )
        .await;
    let ready = settled_attachment(&system, &ada, &attachment_id).await;
    assert_eq!(ready["status"], "ready", "{ready}");
    let upload_key = format!("attachments/{}/{attachment_id}", ada.user_id);
    let verified_key = format!("verified/{}/{attachment_id}", ada.user_id);
    let verified_keys = system.bucket.keys().await;

    let mut swapped = b"<html><script>alert(document.cookie)</script>".to_vec();
    swapped.resize(original.len(), b' ');
    assert_eq!(
        put_upload(&system, &created, "image/png", swapped.clone()).await,
        200,
        "the upload URL is still valid"
    );
    let (status, served) = download(&system, &ada, json!({"attachmentId": attachment_id})).await;
    assert_eq!(status, 200);
    assert!(served == original, "the download serves the verified bytes");
    assert!(served != swapped);
    assert!(
        !verified_keys.contains(&upload_key),
        "the upload key was deleted at verification: {verified_keys:?}"
    );
    assert!(verified_keys.contains(&verified_key), "{verified_keys:?}");

    // Past retention, the purge deletes the verified copy, the thumbnail and whatever the
    // second PUT left at the upload key.
    sqlx::query(
        "UPDATE attachments SET deleted_at = now() - interval '31 days' WHERE attachment_id = $1",
    )
    .bind(Uuid::parse_str(&attachment_id).unwrap())
    .execute(&system.api_pool)
    .await
    .unwrap();
    purge_retention(&system).await;
    assert!(system.bucket.keys().await.is_empty());
    system.stop().await;
}

#[tokio::test]
async fn deleting_an_entry_deletes_its_attachments_and_the_purge_removes_the_objects() {
    let system = System::start_both(
        |api| api.cron_job_secret = Some(secrecy::SecretString::from(CRON_SECRET)),
        |_| {},
    )
    .await;
    let ada = system.login("ada@example.com").await;
    let entry = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "Trip", "content": "photos"}),
        )
        .await;
    let entry_id = id(&entry, "journalEntryId");
    let photo = upload_attachment(
        &system,
        &ada,
        "trip.png",
        "image/png",
        png(32, 32),
        Some(&entry_id),
    )
    .await;
    assert_eq!(photo["status"], "ready");
    let photo_id = id(&photo, "attachmentId");

    // Delete, restore, delete: the attachment follows its entry.
    system
        .ok(
            &ada,
            "journalEntries/delete",
            json!({"journalEntryId": entry_id}),
        )
        .await;
    let deleted = system
        .ok(&ada, "cdn/get", json!({"attachmentId": photo_id}))
        .await;
    assert!(deleted["deletedAt"].is_i64(), "{deleted}");
    let (status, error) = system
        .call(
            &ada,
            "cdn/getDownloadUrl",
            json!({"attachmentId": photo_id}),
        )
        .await;
    assert_eq!(
        (status, error["code"].as_str()),
        (409, Some("ATTACHMENT_DELETED"))
    );
    system
        .ok(
            &ada,
            "journalEntries/restore",
            json!({"journalEntryId": entry_id}),
        )
        .await;
    let restored = system
        .ok(&ada, "cdn/get", json!({"attachmentId": photo_id}))
        .await;
    assert!(restored["deletedAt"].is_null(), "{restored}");
    system
        .ok(
            &ada,
            "journalEntries/delete",
            json!({"journalEntryId": entry_id}),
        )
        .await;
    assert_eq!(system.bucket.keys().await.len(), 2, "kept until the purge");

    // Past retention, the purge deletes the objects, the attachment and then the entry.
    for table in ["attachments", "journal_entries"] {
        sqlx::query(&format!(
            "UPDATE {table} SET deleted_at = now() - interval '31 days' WHERE deleted_at IS NOT NULL"
        ))
        .execute(&system.api_pool)
        .await
        .unwrap();
    }
    let body = purge_retention(&system).await;
    assert_eq!(body["report"]["attachments"], 1, "{body}");
    assert_eq!(body["report"]["journalEntries"], 1, "{body}");
    assert!(system.bucket.keys().await.is_empty());
    let (status, _) = system
        .call(&ada, "cdn/get", json!({"attachmentId": photo_id}))
        .await;
    assert_eq!(status, 404);
    // The delete's changesets carried the tombstone, the restore the revived row.
    let ops: Vec<(i32, bool)> = attachment_changes(&system)
        .await
        .into_iter()
        .map(|(_, op, row)| (op, row["deletedAt"].is_null()))
        .collect();
    assert_eq!(ops.len(), 6, "{ops:?}");
    assert_eq!(&ops[3..], &[(3, false), (2, true), (3, false)]);
    system.stop().await;
}
