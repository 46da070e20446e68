//! Creating, reading, updating, deleting and restoring entries; validation; edit conflicts.

use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{
    create, delete_entry, entry, get_entry, id, list_entries, restore_entry, update_entry,
    with_fields,
};

#[tokio::test]
async fn create_get_update_delete_restore_record_changesets_and_events() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;

    let created = create(
        &api,
        &alice,
        json!({"title": "First", "content": "Hello", "mood": 4, "tags": ["a", "b"],
               "entryDate": "2025-03-01"}),
    )
    .await;
    assert_eq!(created["title"], "First");
    assert_eq!(created["content"], "Hello");
    assert_eq!(created["mood"], 4);
    assert_eq!(created["tags"], json!(["a", "b"]));
    assert_eq!(created["entryDate"], "2025-03-01");
    assert_eq!(created["authorUserId"], alice.user_id.to_string());
    assert_eq!(created["teamId"], Value::Null);
    assert_eq!(created["promptId"], Value::Null);
    assert_eq!(created["deletedAt"], Value::Null);
    assert_eq!(created["version"], 1);
    assert!(created["createdAt"].is_i64());
    let entry_id = id(&created).to_owned();

    let got = get_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(got, created);

    let updated = update_entry(
        &api,
        &alice,
        json!({"journalEntryId": entry_id, "expectedVersion": 1, "title": "Renamed",
                   "mood": null, "entryDate": null, "tags": ["c"]}),
    )
    .await
    .ok();
    assert_eq!(updated["title"], "Renamed");
    assert_eq!(updated["content"], "Hello", "untouched fields stay");
    assert_eq!(updated["mood"], Value::Null);
    assert_eq!(updated["entryDate"], Value::Null);
    assert_eq!(updated["tags"], json!(["c"]));
    assert_eq!(updated["version"], 2);
    assert!(updated["updatedAt"].as_i64() >= created["updatedAt"].as_i64());

    let deleted = delete_entry(&api, &alice, &entry_id).await.ok();
    assert!(deleted["deletedAt"].is_i64());
    assert_eq!(deleted["version"], 3);
    // A deleted entry is still readable (to restore it), but not editable.
    let got = get_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(got["deletedAt"], deleted["deletedAt"]);
    let edit_deleted = update_entry(
        &api,
        &alice,
        json!({"journalEntryId": entry_id, "title": "x"}),
    )
    .await;
    assert_eq!(edit_deleted.status, 409);
    assert_eq!(edit_deleted.code(), "ENTRY_DELETED");
    // Deleting again changes nothing.
    let again = delete_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(again, deleted);

    let restored = restore_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(restored["deletedAt"], Value::Null);
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["title"], "Renamed");
    let again = restore_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(again, restored);

    assert_eq!(api.events_named("journal_entry.created").await, 1);
    assert_eq!(api.events_named("journal_entry.updated").await, 1);
    assert_eq!(api.events_named("journal_entry.deleted").await, 1);
    assert_eq!(api.events_named("journal_entry.restored").await, 1);

    let changes = api.row_changes("journal_entries").await;
    let user_scope = format!("user.{}", alice.user_id);
    assert_eq!(
        changes
            .iter()
            .map(|(scope, change)| (scope.as_str(), change.op, change.version))
            .collect::<Vec<_>>(),
        vec![
            (user_scope.as_str(), ChangeOp::Insert as i32, 1),
            (user_scope.as_str(), ChangeOp::Update as i32, 2),
            (user_scope.as_str(), ChangeOp::Delete as i32, 3),
            (user_scope.as_str(), ChangeOp::Update as i32, 4),
        ]
    );
    assert!(changes.iter().all(|(_, change)| change.row_id == entry_id));
    let tombstone: Value = serde_json::from_slice(&changes[2].1.row_json).unwrap();
    assert_eq!(tombstone["deletedAt"], deleted["deletedAt"]);
    assert_eq!(tombstone["title"], "Renamed");
    api.stop().await;
}

#[tokio::test]
async fn invalid_inputs_name_their_fields() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let create = [
        (json!({"title": "x".repeat(201)}), vec!["title"]),
        (
            json!({"title": "", "content": "y".repeat(100_001)}),
            vec!["title", "content"],
        ),
        (json!({"mood": 6}), vec!["mood"]),
        (
            json!({"tags": ["ok", "", "z".repeat(51)]}),
            vec!["tags.1", "tags.2"],
        ),
        (json!({"tags": vec!["t"; 51]}), vec!["tags"]),
        (json!({"entryDate": "2025-02-30"}), vec!["entryDate"]),
        (json!({"entryDate": "2025-1-5"}), vec!["entryDate"]),
        (json!({"teamId": "not-a-uuid"}), vec!["teamId"]),
        (json!({"colour": "red"}), vec![""]),
        (json!({"title": "   "}), vec!["title"]),
    ]
    .map(|(fields, paths)| {
        let input = with_fields(json!({"title": "t", "content": ""}), fields);
        ("journalEntries/create", input, paths)
    });
    let update = [
        (json!({"mood": 0, "title": ""}), vec!["title", "mood"]),
        (json!({"title": null}), vec!["title"]),
        (json!({"tags": null}), vec!["tags"]),
    ]
    .map(|(fields, paths)| {
        let input = with_fields(json!({"journalEntryId": uuid::Uuid::new_v4()}), fields);
        ("journalEntries/update", input, paths)
    });
    let list = [
        (json!({"cursor": "definitely not a cursor"}), vec!["cursor"]),
        (
            json!({"limit": 101, "q": "", "scope": "everything"}),
            vec!["scope"],
        ),
        (
            json!({"limit": 0, "q": "q".repeat(201), "entryDateFrom": "yesterday"}),
            vec!["limit", "entryDateFrom", "q"],
        ),
        (
            json!({"entryDateFrom": "2025-03-02", "entryDateTo": "2025-03-01"}),
            vec!["entryDateTo"],
        ),
    ]
    .map(|(input, paths)| ("journalEntries/list", input, paths));
    let get = [("journalEntries/get", json!({}), vec!["journalEntryId"])];
    let cases = create.into_iter().chain(update).chain(list).chain(get);
    for (procedure, input, paths) in cases {
        let answer = api.call(Some(&alice), procedure, input.clone()).await;
        assert_eq!(answer.status, 400, "{procedure} {input}: {}", answer.json);
        assert_eq!(answer.code(), "BAD_REQUEST");
        assert_eq!(answer.issue_paths(), paths, "{procedure} {input}");
    }
    // A cursor that decodes to something else than ours is refused as well.
    let forged = base64::Engine::encode(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD,
        "12345:not-a-uuid",
    );
    let answer = list_entries(&api, &alice, json!({"cursor": forged})).await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.issue_paths(), vec!["cursor"]);
    // Nothing was written.
    assert_eq!(api.events_named("journal_entry.created").await, 0);
    api.stop().await;
}

#[tokio::test]
async fn stale_edits_answer_edit_conflict_with_the_current_version() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let created = entry(&api, &alice, "draft").await;
    let entry_id = id(&created).to_owned();
    let first = update_entry(
        &api,
        &alice,
        json!({"journalEntryId": entry_id, "expectedVersion": 1, "content": "tab A"}),
    )
    .await
    .ok();
    assert_eq!(first["version"], 2);
    let stale = update_entry(
        &api,
        &alice,
        json!({"journalEntryId": entry_id, "expectedVersion": 1, "content": "tab B"}),
    )
    .await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.code(), "EDIT_CONFLICT");
    assert_eq!(stale.json["defined"], true);
    assert_eq!(stale.json["data"]["currentVersion"], 2);
    assert_eq!(stale.json["data"]["currentUpdatedAt"], first["updatedAt"]);
    // Nothing changed; without expectedVersion the last write wins.
    let got = get_entry(&api, &alice, &entry_id).await.ok();
    assert_eq!(got["content"], "tab A");
    let forced = update_entry(
        &api,
        &alice,
        json!({"journalEntryId": entry_id, "content": "tab B"}),
    )
    .await
    .ok();
    assert_eq!(forced["version"], 3);
    assert_eq!(api.events_named("journal_entry.updated").await, 2);
    api.stop().await;
}
