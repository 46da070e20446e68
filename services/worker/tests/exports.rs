//! Data export end to end: `exports.create` over the api's RPC → the worker's task → the
//! user's data from the api over NATS request/reply → a JSON archive in a real S3-protocol
//! server → `export.ready` → `exports.get` shows the presigned link, which a plain HTTP
//! client downloads.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeSet;
use std::time::Duration;

use common::{System, User};
use messages::journal::v1::ExportReady;
use prost::Message;
use serde_json::{Value, json};

async fn wait_ready(system: &System, user: &User, export_id: &str) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let (status, export) = system
            .call(user, "exports/get", json!({"exportId": export_id}))
            .await;
        assert_eq!(status, 200, "{export}");
        if export["status"] == "ready" {
            return export;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the export never became ready: {export}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn an_export_holds_all_of_the_users_data_and_its_link_downloads_it() {
    let system = System::start_with(|config| {
        config.export_link_ttl = Duration::from_secs(3600);
    })
    .await;
    let ada = system.login("ada@example.com").await;
    let bob = system.login("bob@example.com").await;
    system
        .ok(
            &ada,
            "users/update",
            json!({"name": "Ada Lovelace", "timezone": "Europe/London"}),
        )
        .await;
    let team_id = system.team(&ada, "Analysts", &[&bob]).await;

    let prompt = system
        .ok(
            &ada,
            "prompts/create",
            json!({"text": "What went well?", "schedule": {"time": "08:30", "timezone": "Europe/London", "weekdays": [1, 3, 5]}}),
        )
        .await;
    let team_prompt = system
        .ok(
            &ada,
            "prompts/create",
            json!({"text": "Team retro", "teamId": team_id}),
        )
        .await;
    let deleted_prompt = system
        .ok(&ada, "prompts/create", json!({"text": "Old idea"}))
        .await;
    system
        .ok(
            &ada,
            "prompts/delete",
            json!({"promptId": deleted_prompt["promptId"]}),
        )
        .await;
    // Bob's prompt is not Ada's data.
    system
        .ok(&bob, "prompts/create", json!({"text": "Bob's"}))
        .await;

    let mut ada_entries = BTreeSet::new();
    let first = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "First", "content": "Hello 👋 \"quoted\"\nline", "mood": 4, "tags": ["a", "b"], "entryDate": "2026-01-02", "promptId": prompt["promptId"]}),
        )
        .await;
    ada_entries.insert(first["journalEntryId"].as_str().unwrap().to_owned());
    let team_entry = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "For the team", "content": "notes", "teamId": team_id}),
        )
        .await;
    ada_entries.insert(team_entry["journalEntryId"].as_str().unwrap().to_owned());
    let deleted = system
        .ok(
            &ada,
            "journalEntries/create",
            json!({"title": "Gone", "content": "oops"}),
        )
        .await;
    ada_entries.insert(deleted["journalEntryId"].as_str().unwrap().to_owned());
    system
        .ok(
            &ada,
            "journalEntries/delete",
            json!({"journalEntryId": deleted["journalEntryId"]}),
        )
        .await;
    // Three entries near the 100,000-character limit in 3-byte characters (~300 KB each) and
    // 450 small ones: the api pages by rows and by size.
    let big_content = "€".repeat(100_000);
    for index in 0..3 {
        let big = system
            .ok(
                &ada,
                "journalEntries/create",
                json!({"title": format!("Big {index}"), "content": big_content}),
            )
            .await;
        ada_entries.insert(big["journalEntryId"].as_str().unwrap().to_owned());
    }
    let bulk: Vec<(uuid::Uuid,)> = sqlx::query_as(
        "INSERT INTO journal_entries (author_user_id, title, content, created_at)
         SELECT $1, 'bulk ' || n, 'entry number ' || n, now() - make_interval(secs => n)
           FROM generate_series(1, 450) AS n
         RETURNING journal_entry_id",
    )
    .bind(ada.user_id)
    .fetch_all(&system.api_pool)
    .await
    .unwrap();
    ada_entries.extend(bulk.into_iter().map(|(id,)| id.to_string()));
    // Bob's entry in Ada's team is his, not hers.
    let bobs = system
        .ok(
            &bob,
            "journalEntries/create",
            json!({"title": "Bob's", "content": "mine", "teamId": team_id}),
        )
        .await;

    let export = system.ok(&ada, "exports/create", Value::Null).await;
    assert_eq!(export["status"], "pending");
    let export_id = export["exportId"].as_str().unwrap().to_owned();
    let again = system.ok(&ada, "exports/create", Value::Null).await;
    assert_eq!(
        again["exportId"], export_id,
        "a pending export is answered again"
    );

    let ready = wait_ready(&system, &ada, &export_id).await;
    let url = ready["downloadUrl"].as_str().unwrap().to_owned();
    assert!(ready["sizeBytes"].as_i64().unwrap() > 900_000, "{ready}");
    let expires_at = ready["expiresAt"].as_i64().unwrap();
    let now = chrono::Utc::now().timestamp_millis();
    assert!(
        (now + 3_500_000..=now + 3_600_000).contains(&expires_at),
        "the link lives EXPORT_LINK_TTL_SECONDS: {ready}"
    );

    // A plain HTTP client, no credentials: the presigned link is enough.
    let response = reqwest::get(&url).await.unwrap();
    assert_eq!(response.status(), 200);
    let body = response.bytes().await.unwrap();
    assert_eq!(body.len() as i64, ready["sizeBytes"].as_i64().unwrap());
    let archive: Value = serde_json::from_slice(&body).unwrap();

    assert_eq!(archive["format"], "journal-export");
    assert_eq!(archive["formatVersion"], 1);
    assert_eq!(archive["exportId"], export_id);
    assert_eq!(archive["userId"], ada.user_id.to_string());
    let profile = &archive["profile"];
    assert_eq!(profile["email"], "ada@example.com");
    assert_eq!(profile["name"], "Ada Lovelace");
    assert_eq!(profile["timezone"], "Europe/London");

    let teams = archive["teams"].as_array().unwrap();
    assert_eq!(teams.len(), 1, "{teams:?}");
    assert_eq!(teams[0]["teamId"], team_id);
    assert_eq!(teams[0]["teamName"], "Analysts");
    assert_eq!(teams[0]["role"], "owner");
    assert!(teams[0]["leftAt"].is_null());

    let prompts = archive["prompts"].as_array().unwrap();
    let prompt_ids: BTreeSet<&str> = prompts
        .iter()
        .map(|prompt| prompt["promptId"].as_str().unwrap())
        .collect();
    let expected_prompts: BTreeSet<&str> = [&prompt, &team_prompt, &deleted_prompt]
        .iter()
        .map(|prompt| prompt["promptId"].as_str().unwrap())
        .collect();
    assert_eq!(
        prompt_ids, expected_prompts,
        "Ada's prompts, deleted one included"
    );
    let scheduled = prompts
        .iter()
        .find(|p| p["promptId"] == prompt["promptId"])
        .unwrap();
    assert_eq!(
        scheduled["schedule"],
        json!({"time": "08:30", "timezone": "Europe/London", "weekdays": [1, 3, 5]})
    );
    let gone = prompts
        .iter()
        .find(|p| p["promptId"] == deleted_prompt["promptId"])
        .unwrap();
    assert!(gone["deletedAt"].is_i64());
    let for_team = prompts
        .iter()
        .find(|p| p["promptId"] == team_prompt["promptId"])
        .unwrap();
    assert_eq!(for_team["teamId"], team_id);

    let entries = archive["journalEntries"].as_array().unwrap();
    let entry_ids: BTreeSet<String> = entries
        .iter()
        .map(|entry| entry["journalEntryId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(entries.len(), ada_entries.len(), "no entry twice");
    assert_eq!(
        entry_ids, ada_entries,
        "every entry Ada wrote, and only those"
    );
    assert!(!entry_ids.contains(bobs["journalEntryId"].as_str().unwrap()));
    let created: Vec<i64> = entries
        .iter()
        .map(|entry| entry["createdAt"].as_i64().unwrap())
        .collect();
    assert!(
        created.windows(2).all(|pair| pair[0] <= pair[1]),
        "oldest first"
    );
    let first_out = entries
        .iter()
        .find(|entry| entry["journalEntryId"] == first["journalEntryId"])
        .unwrap();
    assert_eq!(first_out["content"], "Hello 👋 \"quoted\"\nline");
    assert_eq!(first_out["mood"], 4);
    assert_eq!(first_out["tags"], json!(["a", "b"]));
    assert_eq!(first_out["entryDate"], "2026-01-02");
    assert_eq!(first_out["promptId"], prompt["promptId"]);
    assert!(first_out["deletedAt"].is_null());
    let deleted_out = entries
        .iter()
        .find(|entry| entry["journalEntryId"] == deleted["journalEntryId"])
        .unwrap();
    assert!(
        deleted_out["deletedAt"].is_i64(),
        "soft-deleted entries are included"
    );
    let team_out = entries
        .iter()
        .find(|entry| entry["journalEntryId"] == team_entry["journalEntryId"])
        .unwrap();
    assert_eq!(team_out["teamId"], team_id);
    let bigs = entries
        .iter()
        .filter(|entry| entry["content"].as_str() == Some(big_content.as_str()))
        .count();
    assert_eq!(bigs, 3, "large entries arrive whole");

    // The link is signed: changing the key it names, or its signature, is refused.
    let tampered = url.replacen(&export_id, &uuid::Uuid::new_v4().to_string(), 1);
    assert_eq!(reqwest::get(&tampered).await.unwrap().status(), 403);
    let signature_at = url.find("X-Amz-Signature=").unwrap() + "X-Amz-Signature=".len();
    let mut bad_signature = url.clone();
    let flipped = if &url[signature_at..=signature_at] == "0" {
        "1"
    } else {
        "0"
    };
    bad_signature.replace_range(signature_at..=signature_at, flipped);
    assert_eq!(reqwest::get(&bad_signature).await.unwrap().status(), 403);

    // One archive in the bucket, one export.ready, one record.
    assert_eq!(
        system.bucket.keys().await,
        vec![format!("exports/{}/{export_id}.json", ada.user_id)]
    );
    let events = system.worker_emitted("EVENTS", "events.export.ready").await;
    assert_eq!(events.len(), 1);
    let event = ExportReady::decode(events[0].payload.as_slice()).unwrap();
    assert_eq!(event.export_id, export_id);
    assert_eq!(event.user_id, ada.user_id.to_string());
    assert_eq!(event.download_url, url);
    assert_eq!(event.size_bytes, body.len() as i64);
    assert_eq!(event.expires_at_ms, expires_at);

    // Listing, others' exports, bad input.
    let listed = system.ok(&ada, "exports/list", Value::Null).await;
    assert_eq!(listed.as_array().unwrap().len(), 1);
    assert_eq!(listed[0]["exportId"], export_id);
    let (status, error) = system
        .call(&bob, "exports/get", json!({"exportId": export_id}))
        .await;
    assert_eq!((status, error["code"].as_str()), (404, Some("NOT_FOUND")));
    let (status, error) = system
        .call(&ada, "exports/get", json!({"exportId": "not-an-id"}))
        .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["data"]["issues"][0]["path"], json!(["exportId"]));

    // Once ready, asking again starts a new export.
    let next = system.ok(&ada, "exports/create", Value::Null).await;
    assert_ne!(next["exportId"], export_id);
    system.stop().await;
}
