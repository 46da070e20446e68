//! The REST resources: entries in the team scope, prompts and usage.

use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{api_team, assert_rate_headers, get, post, send};

#[tokio::test]
async fn entries_crud_in_the_team_scope_with_events_changesets_and_headers() {
    let api = TestApi::start().await;
    let team = api_team(&api, "owner@rest.test", false).await;
    let other = api_team(&api, "other@rest.test", false).await;
    let changesets_before = api.changesets().await.len();

    let created = post(
        &api,
        "/api/v1/journal-entries",
        &team.key,
        json!({ "title": " From CI ", "content": "hello", "mood": 4, "tags": ["ci"],
                "entryDate": "2026-11-24" }),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_rate_headers(&created);
    let entry = &created.body;
    let id = entry["journalEntryId"].as_str().unwrap().to_owned();
    assert_eq!(entry["title"], "From CI");
    assert_eq!(entry["teamId"], team.team_id.as_str());
    assert_eq!(entry["authorUserId"], team.owner.user_id.to_string());
    assert!(entry["createdAt"].is_i64(), "epoch ms");
    assert_eq!(api.events_named("journal_entry.created").await, 1);

    let read = get(&api, &format!("/api/v1/journal-entries/{id}"), &team.key).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["journalEntryId"], id.as_str());
    assert_rate_headers(&read);

    // Another API team's key sees nothing of it.
    let foreign = get(&api, &format!("/api/v1/journal-entries/{id}"), &other.key).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.code(), "NOT_FOUND");
    let foreign_patch = send(
        &api,
        reqwest::Method::PATCH,
        &format!("/api/v1/journal-entries/{id}"),
        Some(&other.key),
        Some(json!({ "title": "mine" }).to_string()),
    )
    .await;
    assert_eq!(foreign_patch.status, 404);
    let foreign_list = get(&api, "/api/v1/journal-entries", &other.key).await;
    assert_eq!(foreign_list.body["items"].as_array().unwrap().len(), 0);

    for n in 0..2 {
        post(
            &api,
            "/api/v1/journal-entries",
            &team.key,
            json!({ "title": format!("more {n}"), "content": "" }),
        )
        .await;
    }
    let first = get(&api, "/api/v1/journal-entries?limit=2", &team.key).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let cursor = first.body["nextCursor"].as_str().unwrap().to_owned();
    let second = get(
        &api,
        &format!("/api/v1/journal-entries?limit=2&cursor={cursor}"),
        &team.key,
    )
    .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["items"][0]["journalEntryId"], id.as_str());
    assert!(second.body["nextCursor"].is_null());

    let patched = send(
        &api,
        reqwest::Method::PATCH,
        &format!("/api/v1/journal-entries/{id}"),
        Some(&team.key),
        Some(json!({ "title": "Edited", "mood": null, "expectedVersion": 1 }).to_string()),
    )
    .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["title"], "Edited");
    assert!(patched.body["mood"].is_null());
    assert_eq!(patched.body["version"], 2);
    assert_eq!(api.events_named("journal_entry.updated").await, 1);

    let deleted = send(
        &api,
        reqwest::Method::DELETE,
        &format!("/api/v1/journal-entries/{id}"),
        Some(&team.key),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert_rate_headers(&deleted);
    assert_eq!(api.events_named("journal_entry.deleted").await, 1);
    let gone = get(&api, &format!("/api/v1/journal-entries/{id}"), &team.key).await;
    assert_eq!(gone.status, 404);
    // The app sees the soft-deleted row with its tombstone.
    let in_app = api
        .query(
            Some(&team.owner),
            "journalEntries/get",
            json!({ "journalEntryId": id }),
        )
        .await
        .ok();
    assert!(in_app["deletedAt"].is_i64());
    // insert + update + delete of the first entry, two more inserts: one changeset each.
    assert_eq!(api.changesets().await.len(), changesets_before + 5);

    api.stop().await;
}

#[tokio::test]
async fn prompts_and_usage() {
    let api = TestApi::start().await;
    let team = api_team(&api, "prompts@rest.test", false).await;
    let created = post(
        &api,
        "/api/v1/prompts",
        &team.key,
        json!({ "text": "What went well?",
                "schedule": { "time": "09:00", "timezone": "Europe/Paris", "weekdays": [1, 3] } }),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["teamId"], team.team_id.as_str());
    let listed = get(&api, "/api/v1/prompts", &team.key).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let bad = post(&api, "/api/v1/prompts", &team.key, json!({ "text": "" })).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.issue_paths(), ["text"]);

    let usage = get(&api, "/api/v1/usage", &team.key).await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    assert_eq!(usage.body["planId"], "pro");
    assert_eq!(usage.body["limit"], 1_000_000);
    assert_eq!(
        usage.body["used"], 4,
        "every request counts, this one included"
    );
    assert_eq!(usage.body["remaining"], 1_000_000 - 4);
    assert!(
        usage.body["periodStart"].as_i64().unwrap() < usage.body["periodEnd"].as_i64().unwrap()
    );
    assert_eq!(usage.header("x-ratelimit-remaining"), Some("999996"));
    api.stop().await;
}
