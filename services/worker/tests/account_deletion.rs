//! Account deletion end to end, on real Postgres, NATS and an S3-protocol server (s3s-fs):
//! `users.delete` refuses the account's export links at once (their archives are deleted);
//! `ACCOUNT_PURGE_RETENTION_DAYS` later the `purge-retention` job purges what the account
//! owned — entries (personal and team) become cleared tombstones that sync clients receive,
//! attachments lose their objects and rows, the worker drops the user's insights on
//! `user.purged` — and running it again changes nothing. Another user's data is untouched.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{CRON_SECRET, System, User, png, purge_retention, upload_attachment};
use messages::sync::v1::{ChangeOp, Changeset};
use prost::Message;
use serde_json::{Value, json};
use test_support::eventually;
use uuid::Uuid;

/// Upload a PNG for `entry` and wait until the worker verified it; its id.
async fn upload(system: &System, user: &User, entry: &str) -> String {
    let attachment = upload_attachment(
        system,
        user,
        "secret photo.png",
        "image/png",
        png(64, 32),
        Some(entry),
    )
    .await;
    assert_eq!(attachment["status"], "ready", "{attachment}");
    attachment["attachmentId"].as_str().unwrap().to_owned()
}

/// Request an export and wait until its link is there; the link.
async fn export_link(system: &System, user: &User) -> String {
    let export = system.ok(user, "exports/create", Value::Null).await;
    let export_id = export["exportId"].as_str().unwrap().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let export = system
            .ok(user, "exports/get", json!({"exportId": export_id}))
            .await;
        if export["status"] == "ready" {
            return export["downloadUrl"].as_str().unwrap().to_owned();
        }
        assert!(
            std::time::Instant::now() < deadline,
            "never ready: {export}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

async fn purge(system: &System) -> Value {
    purge_retention(system).await["report"]["deletedAccounts"].clone()
}

/// Every `journal_entries` change the api emitted for `entry_id`: (scope, op, row).
async fn entry_changes(system: &System, entry_id: &str) -> Vec<(String, ChangeOp, Value)> {
    system
        .api_emitted("CHANGES", "changes.")
        .await
        .into_iter()
        .flat_map(|message| {
            let changeset = Changeset::decode(message.payload.as_slice()).unwrap();
            let scope = changeset.scope.clone();
            changeset
                .changes
                .into_iter()
                .filter(|change| change.table == "journal_entries" && change.row_id == entry_id)
                .map(move |change| {
                    (
                        scope.clone(),
                        ChangeOp::try_from(change.op).unwrap(),
                        serde_json::from_slice(&change.row_json).unwrap(),
                    )
                })
        })
        .collect()
}

async fn insights_rows(system: &System, user: &User) -> i64 {
    sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM entry_insights WHERE user_id = $1)
              + (SELECT count(*) FROM entry_insight_days WHERE user_id = $1)
              + (SELECT count(*) FROM journal_entry_activity WHERE author_user_id = $1)",
    )
    .bind(user.user_id)
    .fetch_one(&system.worker_pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn a_deleted_account_loses_its_export_links_at_once_and_its_data_after_the_window() {
    let system = System::start_both(
        |api| api.cron_job_secret = Some(secrecy::SecretString::from(CRON_SECRET)),
        |worker| worker.export_link_ttl = Duration::from_secs(3600),
    )
    .await;
    let ada = system.login("ada@example.com").await;
    let bob = system.login("bob@example.com").await;
    // Bob owns the team (Ada, a member, may delete her account).
    let team_id = system.team(&bob, "Book club", &[&ada]).await;
    let personal = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "Private", "content": "my secret thoughts", "tags": ["me"], "mood": 4}),
        )
        .await;
    let personal_id = personal["journalEntryId"].as_str().unwrap().to_owned();
    let in_team = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "Chapter one", "content": "ada on chapter one", "teamId": team_id}),
        )
        .await;
    let in_team_id = in_team["journalEntryId"].as_str().unwrap().to_owned();
    let bobs = system
        .ok(
            &bob,
            "journalEntries/create",
            json!({"title": "Bob's", "content": "bob keeps this", "teamId": team_id}),
        )
        .await;
    let bobs_id = bobs["journalEntryId"].as_str().unwrap().to_owned();
    let attachment_id = upload(&system, &ada, &personal_id).await;
    let bobs_attachment = upload(&system, &bob, &bobs_id).await;
    let ada_link = export_link(&system, &ada).await;
    let bob_link = export_link(&system, &bob).await;
    assert_eq!(reqwest::get(&ada_link).await.unwrap().status(), 200);
    system.wait_for_worker().await;
    assert!(insights_rows(&system, &ada).await > 0);
    let bob_insights = insights_rows(&system, &bob).await;
    assert!(bob_insights > 0);

    // Deleting the account refuses its export link at once: the archive is gone.
    let deleted = system.ok(&ada, "users/delete", json!({})).await;
    assert!(deleted["deletedAt"].as_i64().is_some());
    let refused = reqwest::get(&ada_link).await.unwrap().status();
    assert_eq!(
        refused, 404,
        "a deleted account's export link must not download"
    );
    let revoked: (Option<chrono::DateTime<chrono::Utc>>, Option<String>) =
        sqlx::query_as("SELECT revoked_at, download_url FROM exports WHERE user_id = $1")
            .bind(ada.user_id)
            .fetch_one(&system.api_pool)
            .await
            .unwrap();
    assert!(revoked.0.is_some() && revoked.1.is_none(), "{revoked:?}");
    assert_eq!(reqwest::get(&bob_link).await.unwrap().status(), 200);
    let keys = system.bucket.keys().await;
    assert!(
        !keys
            .iter()
            .any(|key| key.starts_with(&format!("exports/{}/", ada.user_id))),
        "{keys:?}"
    );

    // Within the window nothing else goes.
    let report = purge(&system).await;
    assert_eq!(report["accounts"], 0, "{report}");
    let content: String =
        sqlx::query_scalar("SELECT content FROM journal_entries WHERE journal_entry_id = $1")
            .bind(Uuid::parse_str(&personal_id).unwrap())
            .fetch_one(&system.api_pool)
            .await
            .unwrap();
    assert_eq!(content, "my secret thoughts");

    // After it (ACCOUNT_PURGE_RETENTION_DAYS, 30 by default), the purge.
    sqlx::query("UPDATE users SET deleted_at = deleted_at - interval '31 days' WHERE user_id = $1")
        .bind(ada.user_id)
        .execute(&system.api_pool)
        .await
        .unwrap();
    let report = purge(&system).await;
    assert_eq!(report["accounts"], 1, "{report}");
    assert_eq!(report["journalEntries"], 2, "{report}");
    assert_eq!(report["attachments"], 1, "{report}");

    // Entries: cleared tombstones, in the scope each was synced to.
    for (entry_id, scope) in [
        (&personal_id, format!("user.{}", ada.user_id)),
        (&in_team_id, format!("team.{team_id}")),
    ] {
        let changes = entry_changes(&system, entry_id).await;
        let (last_scope, op, row) = changes.last().unwrap();
        assert_eq!(last_scope, &scope);
        assert_eq!(*op, ChangeOp::Delete);
        assert!(row["deletedAt"].as_i64().is_some(), "{row}");
        assert_eq!(row["content"], "");
        assert_eq!(row["title"], "");
    }
    let leftovers: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM journal_entries
          WHERE author_user_id = $1 AND (deleted_at IS NULL OR content <> '' OR title <> '')",
    )
    .bind(ada.user_id)
    .fetch_one(&system.api_pool)
    .await
    .unwrap();
    assert_eq!(leftovers, 0);
    // Attachments: objects gone, rows soft-deleted.
    let keys = system.bucket.keys().await;
    assert!(
        !keys
            .iter()
            .any(|key| key.contains(&ada.user_id.to_string()) || key.contains(&attachment_id)),
        "the original, its verified copy and its thumbnail go: {keys:?}"
    );
    assert!(
        keys.iter().any(|key| key.contains(&bobs_attachment)),
        "{keys:?}"
    );
    let attachment: (Option<chrono::DateTime<chrono::Utc>>, String) =
        sqlx::query_as("SELECT deleted_at, file_name FROM attachments WHERE attachment_id = $1")
            .bind(Uuid::parse_str(&attachment_id).unwrap())
            .fetch_one(&system.api_pool)
            .await
            .unwrap();
    assert!(attachment.0.is_some());
    assert_eq!(attachment.1, "");
    // The account row: anonymised, sessions gone.
    let user: (String, Option<String>, bool) = sqlx::query_as(
        "SELECT name, deleted_email, purged_at IS NOT NULL FROM users WHERE user_id = $1",
    )
    .bind(ada.user_id)
    .fetch_one(&system.api_pool)
    .await
    .unwrap();
    assert_eq!(user, ("Deleted user".to_owned(), None, true));
    let sessions: i64 = sqlx::query_scalar("SELECT count(*) FROM sessions WHERE user_id = $1")
        .bind(ada.user_id)
        .fetch_one(&system.api_pool)
        .await
        .unwrap();
    assert_eq!(sessions, 0);
    // The worker drops the user's insights on `user.purged`, with tombstones for the clients.
    let gone = eventually(Duration::from_secs(30), || async {
        insights_rows(&system, &ada).await == 0
    })
    .await;
    assert!(gone, "the worker kept the purged user's insights");
    let insight_changes = system.row_changes("entry_insights").await;
    let (_, last) = insight_changes
        .iter()
        .rev()
        .find(|(scope, _)| scope == &format!("user.{}", ada.user_id))
        .unwrap();
    assert_eq!(common::op(last), ChangeOp::Delete);

    // Bob's data is untouched.
    let bobs_now = system
        .ok(
            &bob,
            "journalEntries/get",
            json!({"journalEntryId": bobs_id}),
        )
        .await;
    assert_eq!(bobs_now["content"], "bob keeps this");
    assert!(bobs_now["deletedAt"].is_null());
    assert_eq!(
        system
            .ok(&bob, "cdn/get", json!({"attachmentId": bobs_attachment}))
            .await["status"],
        "ready"
    );
    assert_eq!(reqwest::get(&bob_link).await.unwrap().status(), 200);
    assert_eq!(insights_rows(&system, &bob).await, bob_insights);

    // Idempotent: a second run finds nothing to do and emits nothing.
    let tombstones = entry_changes(&system, &personal_id).await.len();
    let team_tombstones = entry_changes(&system, &in_team_id).await.len();
    let report = purge(&system).await;
    assert_eq!(report["accounts"], 0, "{report}");
    assert_eq!(entry_changes(&system, &personal_id).await.len(), tombstones);
    // Purging the account again by hand changes none of what is already done either.
    sqlx::query("UPDATE users SET purged_at = NULL WHERE user_id = $1")
        .bind(ada.user_id)
        .execute(&system.api_pool)
        .await
        .unwrap();
    let report = purge(&system).await;
    assert_eq!(report["accounts"], 1, "{report}");
    assert_eq!(report["journalEntries"], 0, "{report}");
    assert_eq!(report["attachments"], 0, "{report}");
    assert_eq!(entry_changes(&system, &personal_id).await.len(), tombstones);
    assert_eq!(
        entry_changes(&system, &in_team_id).await.len(),
        team_tombstones
    );

    system.stop().await;
}

/// An export still being built when the account is deleted: its archive is uploaded after
/// `users.delete` deleted the others, so the api deletes it when `export.ready` arrives, and
/// the export never becomes ready.
#[tokio::test]
async fn an_export_finished_after_the_deletion_is_deleted_when_it_reports_ready() {
    let system = System::start().await;
    let ada = system.login("ada@example.com").await;
    // A pending export whose task the worker is still on (the row alone: no real task, so
    // the test decides when the worker "finishes").
    let export_id: Uuid =
        sqlx::query_scalar("INSERT INTO exports (user_id) VALUES ($1) RETURNING export_id")
            .bind(ada.user_id)
            .fetch_one(&system.api_pool)
            .await
            .unwrap();
    system.ok(&ada, "users/delete", json!({})).await;
    // Whatever the worker did meanwhile, the archive now appears late, and so does its event.
    let key = messages::export_archive_key(ada.user_id, export_id);
    system
        .bucket
        .store()
        .put_bytes(&key, b"{}".to_vec(), "application/json")
        .await
        .unwrap();
    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let bus = bus::Bus::start(
        async_nats::jetstream::new(client),
        &system.namespace,
        "tests",
    )
    .await
    .unwrap();
    bus.publish(
        &messages::journal::v1::ExportReady {
            export_id: export_id.to_string(),
            user_id: ada.user_id.to_string(),
            download_url: "http://127.0.0.1:9000/late".to_owned(),
            expires_at_ms: chrono::Utc::now().timestamp_millis() + 3_600_000,
            size_bytes: 2,
        },
        &Uuid::now_v7().to_string(),
    )
    .await
    .unwrap();
    let gone = eventually(Duration::from_secs(20), || async {
        !system.bucket.keys().await.contains(&key)
    })
    .await;
    assert!(gone, "the late archive of a deleted account stayed");
    let row: (String, Option<String>, bool) = sqlx::query_as(
        "SELECT status, download_url, revoked_at IS NOT NULL FROM exports WHERE export_id = $1",
    )
    .bind(export_id)
    .fetch_one(&system.api_pool)
    .await
    .unwrap();
    assert_eq!(row, ("pending".to_owned(), None, true));
    system.stop().await;
}
