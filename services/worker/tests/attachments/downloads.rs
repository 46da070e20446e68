//! Verified images become ready with a thumbnail and are downloaded by their viewers only;
//! a PUT after verification is never served.

use chrono::Utc;
use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::{
    System, User, create_upload, png, purge_retention, put_upload, settled_attachment,
    upload_attachment,
};
use crate::fixtures::{assert_refused, attachment_changes, get_url, id, start_with_cron_secret};

async fn download(system: &System, user: &User, input: Value) -> (u16, Vec<u8>) {
    let link = system.ok(user, "cdn/getDownloadUrl", input).await;
    assert!(link["expiresAt"].as_i64().unwrap() > Utc::now().timestamp_millis());
    let response = get_url(system, &link["url"]).await;
    let status = response.status().as_u16();
    (status, response.bytes().await.unwrap().to_vec())
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
        assert_refused(
            &system,
            &bob,
            procedure,
            json!({"attachmentId": attachment_id}),
            404,
            "NOT_FOUND",
        )
        .await;
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
    assert_refused(
        &system,
        &bob,
        "cdn/getDownloadUrl",
        json!({"attachmentId": attachment_id, "variant": "thumbnail"}),
        409,
        "NO_THUMBNAIL",
    )
    .await;
    assert_refused(
        &system,
        &eve,
        "cdn/getDownloadUrl",
        json!({"attachmentId": attachment_id}),
        404,
        "NOT_FOUND",
    )
    .await;
    // Bob may see the entry but not change it, so he cannot attach to it; Eve cannot see it.
    let input = json!({"fileName": "x.pdf", "contentType": "application/pdf", "sizeBytes": 10, "journalEntryId": entry_id});
    assert_refused(
        &system,
        &bob,
        "cdn/createUploadUrl",
        input.clone(),
        403,
        "FORBIDDEN",
    )
    .await;
    assert_refused(
        &system,
        &eve,
        "cdn/createUploadUrl",
        input,
        404,
        "NOT_FOUND",
    )
    .await;
    // The team's scope gets the rows.
    assert!(
        attachment_changes(&system)
            .await
            .iter()
            .all(|(scope, _, _)| *scope == format!("team.{team_id}"))
    );
    system.stop().await;
}

/// Issue 15: the upload URL stays valid for its whole lifetime, after verification too. A
/// second PUT of the same length and type (here an HTML page declared `image/png`) lands on
/// the upload key, which is no longer what downloads serve: they serve the verified copy.
/// The purge deletes both keys.
#[tokio::test]
async fn a_put_after_verification_is_never_served() {
    let system = start_with_cron_secret().await;
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
