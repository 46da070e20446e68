//! Abandoned uploads expire, and deleting an entry deletes its attachments and objects.

use std::time::Duration;

use bus::Bus;
use chrono::Utc;
use messages::journal::v1::CleanUpAbandonedUploads;
use serde_json::json;
use uuid::Uuid;

use crate::common::{System, create_upload, png, purge_retention, put_upload, upload_attachment};
use crate::fixtures::{assert_refused, attachment_changes, id, start_with_cron_secret};

#[tokio::test]
async fn abandoned_uploads_are_expired_by_the_cron_task() {
    let system = System::start_both(
        |api| {
            // The upload below must succeed within the URL's TTL even under a loaded CI (1 s
            // once refused it with 403); expiry depends on `abandoned_after` alone.
            api.cdn.upload_url_ttl = Duration::from_secs(5);
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
        assert_refused(
            &system,
            &ada,
            "cdn/completeUpload",
            json!({"attachmentId": attachment_id}),
            409,
            "UPLOAD_EXPIRED",
        )
        .await;
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

#[tokio::test]
async fn deleting_an_entry_deletes_its_attachments_and_the_purge_removes_the_objects() {
    let system = start_with_cron_secret().await;
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
    let on_entry =
        |procedure: &'static str| system.ok(&ada, procedure, json!({"journalEntryId": entry_id}));
    let photo_row = || system.ok(&ada, "cdn/get", json!({"attachmentId": photo_id}));
    on_entry("journalEntries/delete").await;
    let deleted = photo_row().await;
    assert!(deleted["deletedAt"].is_i64(), "{deleted}");
    assert_refused(
        &system,
        &ada,
        "cdn/getDownloadUrl",
        json!({"attachmentId": photo_id}),
        409,
        "ATTACHMENT_DELETED",
    )
    .await;
    on_entry("journalEntries/restore").await;
    let restored = photo_row().await;
    assert!(restored["deletedAt"].is_null(), "{restored}");
    on_entry("journalEntries/delete").await;
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
