//! `journalEntries.*` against real Postgres and NATS: the procedures, validation, who may see
//! and change what, soft delete, keyset pagination, filters, edit conflicts, changesets and
//! events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::HashSet;

use common::{TestApi, TestUser};
use messages::sync::v1::ChangeOp;
use serde_json::{Value, json};

async fn create(api: &TestApi, user: &TestUser, input: Value) -> Value {
    api.call(Some(user), "journalEntries/create", input)
        .await
        .ok()
}

async fn entry(api: &TestApi, user: &TestUser, title: &str) -> Value {
    create(api, user, json!({"title": title, "content": "text"})).await
}

fn id(row: &Value) -> &str {
    row["journalEntryId"].as_str().unwrap()
}

fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["title"].as_str().unwrap().to_owned())
        .collect()
}

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

    let got = api
        .query(
            Some(&alice),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(got, created);

    let updated = api
        .call(
            Some(&alice),
            "journalEntries/update",
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

    let deleted = api
        .call(
            Some(&alice),
            "journalEntries/delete",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert!(deleted["deletedAt"].is_i64());
    assert_eq!(deleted["version"], 3);
    // A deleted entry is still readable (to restore it), but not editable.
    let got = api
        .query(
            Some(&alice),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(got["deletedAt"], deleted["deletedAt"]);
    let edit_deleted = api
        .call(
            Some(&alice),
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "title": "x"}),
        )
        .await;
    assert_eq!(edit_deleted.status, 409);
    assert_eq!(edit_deleted.code(), "ENTRY_DELETED");
    // Deleting again changes nothing.
    let again = api
        .call(
            Some(&alice),
            "journalEntries/delete",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(again, deleted);

    let restored = api
        .call(
            Some(&alice),
            "journalEntries/restore",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(restored["deletedAt"], Value::Null);
    assert_eq!(restored["version"], 4);
    assert_eq!(restored["title"], "Renamed");
    let again = api
        .call(
            Some(&alice),
            "journalEntries/restore",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
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
    let cases = [
        (
            "journalEntries/create",
            json!({"title": "x".repeat(201), "content": ""}),
            vec!["title"],
        ),
        (
            "journalEntries/create",
            json!({"title": "", "content": "y".repeat(100_001)}),
            vec!["title", "content"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "mood": 6}),
            vec!["mood"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "tags": ["ok", "", "z".repeat(51)]}),
            vec!["tags.1", "tags.2"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "tags": vec!["t"; 51]}),
            vec!["tags"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "entryDate": "2025-02-30"}),
            vec!["entryDate"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "entryDate": "2025-1-5"}),
            vec!["entryDate"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "teamId": "not-a-uuid"}),
            vec!["teamId"],
        ),
        (
            "journalEntries/create",
            json!({"title": "t", "content": "", "colour": "red"}),
            vec![""],
        ),
        (
            "journalEntries/create",
            json!({"title": "   ", "content": ""}),
            vec!["title"],
        ),
        (
            "journalEntries/update",
            json!({"journalEntryId": uuid::Uuid::new_v4(), "mood": 0, "title": ""}),
            vec!["title", "mood"],
        ),
        (
            "journalEntries/update",
            json!({"journalEntryId": uuid::Uuid::new_v4(), "title": null}),
            vec!["title"],
        ),
        (
            "journalEntries/update",
            json!({"journalEntryId": uuid::Uuid::new_v4(), "tags": null}),
            vec!["tags"],
        ),
        (
            "journalEntries/list",
            json!({"cursor": "definitely not a cursor"}),
            vec!["cursor"],
        ),
        (
            "journalEntries/list",
            json!({"limit": 101, "q": "", "scope": "everything"}),
            vec!["scope"],
        ),
        (
            "journalEntries/list",
            json!({"limit": 0, "q": "q".repeat(201), "entryDateFrom": "yesterday"}),
            vec!["limit", "entryDateFrom", "q"],
        ),
        (
            "journalEntries/list",
            json!({"entryDateFrom": "2025-03-02", "entryDateTo": "2025-03-01"}),
            vec!["entryDateTo"],
        ),
        ("journalEntries/get", json!({}), vec!["journalEntryId"]),
    ];
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
    let answer = api
        .query(
            Some(&alice),
            "journalEntries/list",
            json!({"cursor": forged}),
        )
        .await;
    assert_eq!(answer.status, 400);
    assert_eq!(answer.issue_paths(), vec!["cursor"]);
    // Nothing was written.
    assert_eq!(api.events_named("journal_entry.created").await, 0);
    api.stop().await;
}

#[tokio::test]
async fn personal_entries_are_invisible_to_everyone_else() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let mine = entry(&api, &alice, "Alice's secret").await;
    let entry_id = id(&mine).to_owned();

    let get = api
        .query(
            Some(&bob),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await;
    assert_eq!(get.status, 404);
    assert_eq!(get.code(), "NOT_FOUND");
    // The same answer as an id that does not exist.
    let missing = api
        .query(
            Some(&bob),
            "journalEntries/get",
            json!({"journalEntryId": uuid::Uuid::new_v4()}),
        )
        .await;
    assert_eq!(missing.status, 404);
    assert_eq!(missing.json["message"], get.json["message"]);
    for (procedure, input) in [
        (
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "title": "pwned"}),
        ),
        ("journalEntries/delete", json!({"journalEntryId": entry_id})),
        (
            "journalEntries/restore",
            json!({"journalEntryId": entry_id}),
        ),
    ] {
        let answer = api.call(Some(&bob), procedure, input).await;
        assert_eq!(answer.status, 404, "{procedure}: {}", answer.json);
        assert_eq!(answer.code(), "NOT_FOUND");
    }
    for scope in ["all", "personal", "team"] {
        for deleted in [false, true] {
            let page = api
                .query(
                    Some(&bob),
                    "journalEntries/list",
                    json!({"scope": scope, "deleted": deleted}),
                )
                .await
                .ok();
            assert_eq!(page["items"], json!([]), "{scope} {deleted}");
        }
    }
    // Alice's entry is untouched.
    let got = api
        .query(
            Some(&alice),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(got, mine);
    // Without a session nothing is answered.
    let anonymous = api.query(None, "journalEntries/list", Value::Null).await;
    assert_eq!(anonymous.status, 401);
    api.stop().await;
}

#[tokio::test]
async fn team_entries_follow_membership_and_roles() {
    let api = TestApi::start().await;
    let owner = api.login("owner@example.com").await;
    let admin = api.login("admin@example.com").await;
    let bob = api.login("bob@example.com").await;
    let erin = api.login("erin@example.com").await;
    let outsider = api.login("outsider@example.com").await;
    let team_id = api
        .team_with(
            &owner,
            &[(&admin, "admin"), (&bob, "member"), (&erin, "member")],
        )
        .await;

    // A non-member cannot write into the team.
    let intrude = api
        .call(
            Some(&outsider),
            "journalEntries/create",
            json!({"title": "t", "content": "", "teamId": team_id}),
        )
        .await;
    assert_eq!(intrude.status, 404);
    assert_eq!(intrude.code(), "NOT_FOUND");

    let shared = create(
        &api,
        &bob,
        json!({"title": "Team notes", "content": "standup", "teamId": team_id}),
    )
    .await;
    assert_eq!(shared["teamId"], team_id.as_str());
    assert_eq!(shared["authorUserId"], bob.user_id.to_string());
    let entry_id = id(&shared).to_owned();
    let personal = entry(&api, &bob, "Bob's own").await;

    // Every member reads it; an outsider does not, even naming the team.
    for member in [&owner, &admin, &erin] {
        let got = api
            .query(
                Some(member),
                "journalEntries/get",
                json!({"journalEntryId": entry_id}),
            )
            .await
            .ok();
        assert_eq!(got["title"], "Team notes");
        let page = api
            .query(
                Some(member),
                "journalEntries/list",
                json!({"teamId": team_id}),
            )
            .await
            .ok();
        assert_eq!(titles(&page), vec!["Team notes"]);
    }
    let get = api
        .query(
            Some(&outsider),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await;
    assert_eq!(get.code(), "NOT_FOUND");
    let list = api
        .query(
            Some(&outsider),
            "journalEntries/list",
            json!({"teamId": team_id}),
        )
        .await;
    assert_eq!(list.status, 404);
    assert_eq!(list.code(), "NOT_FOUND");
    let everything = api
        .query(Some(&outsider), "journalEntries/list", Value::Null)
        .await
        .ok();
    assert_eq!(everything["items"], json!([]));
    // Bob's personal entry stays his, even for his team's owner.
    let peek = api
        .query(
            Some(&owner),
            "journalEntries/get",
            json!({"journalEntryId": id(&personal)}),
        )
        .await;
    assert_eq!(peek.code(), "NOT_FOUND");

    // Scopes: bob sees both; "personal" and "team" split them.
    let all = api
        .query(Some(&bob), "journalEntries/list", json!({}))
        .await
        .ok();
    assert_eq!(titles(&all), vec!["Bob's own", "Team notes"]);
    let only_personal = api
        .query(
            Some(&bob),
            "journalEntries/list",
            json!({"scope": "personal"}),
        )
        .await
        .ok();
    assert_eq!(titles(&only_personal), vec!["Bob's own"]);
    let only_team = api
        .query(Some(&bob), "journalEntries/list", json!({"scope": "team"}))
        .await
        .ok();
    assert_eq!(titles(&only_team), vec!["Team notes"]);

    // Another member may read but not change it.
    for (procedure, input) in [
        (
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "title": "Erin was here"}),
        ),
        ("journalEntries/delete", json!({"journalEntryId": entry_id})),
    ] {
        let answer = api.call(Some(&erin), procedure, input).await;
        assert_eq!(answer.status, 403, "{procedure}");
        assert_eq!(answer.code(), "FORBIDDEN");
    }
    // A team admin may.
    let moderated = api
        .call(
            Some(&admin),
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "content": "standup (edited)"}),
        )
        .await
        .ok();
    assert_eq!(moderated["content"], "standup (edited)");
    assert_eq!(moderated["authorUserId"], bob.user_id.to_string());
    assert_eq!(moderated["version"], 2);
    let deleted = api
        .call(
            Some(&admin),
            "journalEntries/delete",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert!(deleted["deletedAt"].is_i64());
    let trash = api
        .query(
            Some(&erin),
            "journalEntries/list",
            json!({"teamId": team_id, "deleted": true}),
        )
        .await
        .ok();
    assert_eq!(titles(&trash), vec!["Team notes"]);
    let restored = api
        .call(
            Some(&bob),
            "journalEntries/restore",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(restored["deletedAt"], Value::Null);
    assert_eq!(restored["version"], 4);

    // The team's entries sync to the team's scope; the personal one to bob's.
    let team_scope = format!("team.{team_id}");
    let bob_scope = format!("user.{}", bob.user_id);
    let changes = api.row_changes("journal_entries").await;
    let scopes_of = |row_id: &str| -> Vec<String> {
        changes
            .iter()
            .filter(|(_, change)| change.row_id == row_id)
            .map(|(scope, _)| scope.clone())
            .collect()
    };
    assert_eq!(scopes_of(&entry_id), vec![team_scope.clone(); 4]);
    assert_eq!(scopes_of(id(&personal)), vec![bob_scope]);
    // The admin's edit names who made it.
    let updated_by: Vec<String> = api
        .emitted("EVENTS", "events.journal_entry.updated")
        .await
        .into_iter()
        .map(|message| String::from_utf8_lossy(&message.payload).into_owned())
        .collect();
    assert_eq!(updated_by.len(), 1);
    assert!(updated_by[0].contains(&admin.user_id.to_string()));

    // Leaving the team ends access, also to the entries one wrote.
    sqlx::query(
        "UPDATE team_members SET deleted_at = now() WHERE team_id = $1::uuid AND user_id = $2",
    )
    .bind(&team_id)
    .bind(bob.user_id)
    .execute(&api.pool)
    .await
    .unwrap();
    let gone = api
        .query(
            Some(&bob),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await;
    assert_eq!(gone.code(), "NOT_FOUND");
    let all = api
        .query(Some(&bob), "journalEntries/list", Value::Null)
        .await
        .ok();
    assert_eq!(titles(&all), vec!["Bob's own"]);
    api.stop().await;
}

#[tokio::test]
async fn deleted_entries_leave_the_list_and_appear_in_the_trash() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let one = entry(&api, &alice, "one").await;
    let two = entry(&api, &alice, "two").await;
    entry(&api, &alice, "three").await;
    for row in [&one, &two] {
        api.call(
            Some(&alice),
            "journalEntries/delete",
            json!({"journalEntryId": id(row)}),
        )
        .await
        .ok();
    }
    let live = api
        .query(Some(&alice), "journalEntries/list", Value::Null)
        .await
        .ok();
    assert_eq!(titles(&live), vec!["three"]);
    assert_eq!(live["nextCursor"], Value::Null);
    let trash = api
        .query(
            Some(&alice),
            "journalEntries/list",
            json!({"deleted": true}),
        )
        .await
        .ok();
    assert_eq!(titles(&trash), vec!["two", "one"]);
    assert!(
        trash["items"]
            .as_array()
            .unwrap()
            .iter()
            .all(|item| item["deletedAt"].is_i64())
    );
    api.call(
        Some(&alice),
        "journalEntries/restore",
        json!({"journalEntryId": id(&one)}),
    )
    .await
    .ok();
    let live = api
        .query(Some(&alice), "journalEntries/list", json!({}))
        .await
        .ok();
    assert_eq!(titles(&live), vec!["three", "one"]);
    let trash = api
        .query(
            Some(&alice),
            "journalEntries/list",
            json!({"deleted": true}),
        )
        .await
        .ok();
    assert_eq!(titles(&trash), vec!["two"]);
    api.stop().await;
}

#[tokio::test]
async fn pages_are_stable_while_new_entries_arrive() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let mut old = Vec::new();
    for n in 0..25 {
        old.push(id(&entry(&api, &alice, &format!("old {n}")).await).to_owned());
    }
    old.reverse(); // newest first, as listed

    let page1 = api
        .query(Some(&alice), "journalEntries/list", json!({"limit": 10}))
        .await
        .ok();
    let ids = |page: &Value| -> Vec<String> {
        page["items"]
            .as_array()
            .unwrap()
            .iter()
            .map(|item| id(item).to_owned())
            .collect()
    };
    assert_eq!(ids(&page1), old[..10]);
    let cursor = page1["nextCursor"].as_str().unwrap().to_owned();

    for n in 0..5 {
        entry(&api, &alice, &format!("new {n}")).await;
    }

    let page2 = api
        .query(
            Some(&alice),
            "journalEntries/list",
            json!({"limit": 10, "cursor": cursor}),
        )
        .await
        .ok();
    let page3 = api
        .query(
            Some(&alice),
            "journalEntries/list",
            json!({"limit": 10, "cursor": page2["nextCursor"]}),
        )
        .await
        .ok();
    assert_eq!(ids(&page2), old[10..20]);
    assert_eq!(ids(&page3), old[20..25]);
    assert_eq!(page3["nextCursor"], Value::Null);
    let seen: HashSet<String> = [ids(&page1), ids(&page2), ids(&page3)]
        .concat()
        .into_iter()
        .collect();
    assert_eq!(seen.len(), 25);
    assert_eq!(seen, old.iter().cloned().collect::<HashSet<_>>());

    // Page 1 read now starts with the new ones; the default page size is 20.
    let fresh = api
        .query(Some(&alice), "journalEntries/list", Value::Null)
        .await
        .ok();
    assert_eq!(fresh["items"].as_array().unwrap().len(), 20);
    assert_eq!(
        titles(&fresh)[..5],
        ["new 4", "new 3", "new 2", "new 1", "new 0"]
    );
    api.stop().await;
}

#[tokio::test]
async fn entries_created_at_the_same_instant_are_paged_by_id() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let mut expected: Vec<String> = sqlx::query_scalar(
        "INSERT INTO journal_entries (author_user_id, title, content, created_at)
         SELECT $1, 'same ' || n, '', '2025-01-01T00:00:00Z' FROM generate_series(1, 5) n
         RETURNING journal_entry_id::text",
    )
    .bind(alice.user_id)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    expected.sort();
    expected.reverse();
    let mut seen = Vec::new();
    let mut cursor = Value::Null;
    loop {
        let mut input = json!({"limit": 2});
        if !cursor.is_null() {
            input["cursor"] = cursor.clone();
        }
        let page = api
            .query(Some(&alice), "journalEntries/list", input)
            .await
            .ok();
        seen.extend(
            page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| id(item).to_owned()),
        );
        cursor = page["nextCursor"].clone();
        if cursor.is_null() {
            break;
        }
    }
    assert_eq!(seen, expected);
    api.stop().await;
}

#[tokio::test]
async fn search_tag_and_date_filters() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    create(
        &api,
        &alice,
        json!({"title": "Morning", "content": "The quick brown fox jumps", "tags": ["nature", "run"],
               "entryDate": "2025-03-01"}),
    )
    .await;
    create(
        &api,
        &alice,
        json!({"title": "Evening walk", "content": "A lazy dog sleeps", "tags": ["nature"],
               "entryDate": "2025-03-05"}),
    )
    .await;
    let third = create(
        &api,
        &alice,
        json!({"title": "Work", "content": "Quarterly planning", "tags": ["work"]}),
    )
    .await;
    // Bob's entry mentions a fox too, and never shows up for alice.
    create(
        &api,
        &bob,
        json!({"title": "fox", "content": "fox fox", "tags": ["nature"]}),
    )
    .await;

    let list = |input: Value| {
        let api = &api;
        let alice = &alice;
        async move {
            titles(
                &api.query(Some(alice), "journalEntries/list", input)
                    .await
                    .ok(),
            )
        }
    };
    assert_eq!(list(json!({"q": "fox"})).await, vec!["Morning"]);
    assert_eq!(list(json!({"q": "brown FOX"})).await, vec!["Morning"]);
    assert_eq!(
        list(json!({"q": "walk"})).await,
        vec!["Evening walk"],
        "title too"
    );
    assert_eq!(
        list(json!({"q": "fox OR dog"})).await,
        vec!["Evening walk", "Morning"]
    );
    assert_eq!(list(json!({"q": "cat"})).await, Vec::<String>::new());
    assert_eq!(
        list(json!({"tag": "nature"})).await,
        vec!["Evening walk", "Morning"]
    );
    assert_eq!(list(json!({"tag": "work"})).await, vec!["Work"]);
    assert_eq!(list(json!({"tag": "natur"})).await, Vec::<String>::new());
    assert_eq!(
        list(json!({"entryDateFrom": "2025-03-01", "entryDateTo": "2025-03-04"})).await,
        vec!["Morning"]
    );
    assert_eq!(
        list(json!({"entryDateFrom": "2025-03-02"})).await,
        vec!["Evening walk"]
    );
    assert_eq!(
        list(json!({"entryDateTo": "2025-03-05"})).await,
        vec!["Evening walk", "Morning"],
        "inclusive; entries without a date are outside any date range"
    );
    assert_eq!(
        list(json!({"tag": "nature", "q": "dog", "entryDateFrom": "2025-03-05"})).await,
        vec!["Evening walk"]
    );
    let third_at = third["createdAt"].as_i64().unwrap();
    assert_eq!(
        list(json!({"createdAfter": third_at - 1})).await,
        vec!["Work"]
    );
    assert_eq!(
        list(json!({"createdAfter": third_at})).await,
        Vec::<String>::new(),
        "after an entry's own (millisecond) createdAt excludes it"
    );
    assert_eq!(
        list(json!({"createdBefore": third_at})).await,
        vec!["Evening walk", "Morning"]
    );
    api.stop().await;
}

#[tokio::test]
async fn stale_edits_answer_edit_conflict_with_the_current_version() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let created = entry(&api, &alice, "draft").await;
    let entry_id = id(&created).to_owned();
    let first = api
        .call(
            Some(&alice),
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "expectedVersion": 1, "content": "tab A"}),
        )
        .await
        .ok();
    assert_eq!(first["version"], 2);
    let stale = api
        .call(
            Some(&alice),
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "expectedVersion": 1, "content": "tab B"}),
        )
        .await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.code(), "EDIT_CONFLICT");
    assert_eq!(stale.json["defined"], true);
    assert_eq!(stale.json["data"]["currentVersion"], 2);
    assert_eq!(stale.json["data"]["currentUpdatedAt"], first["updatedAt"]);
    // Nothing changed; without expectedVersion the last write wins.
    let got = api
        .query(
            Some(&alice),
            "journalEntries/get",
            json!({"journalEntryId": entry_id}),
        )
        .await
        .ok();
    assert_eq!(got["content"], "tab A");
    let forced = api
        .call(
            Some(&alice),
            "journalEntries/update",
            json!({"journalEntryId": entry_id, "content": "tab B"}),
        )
        .await
        .ok();
    assert_eq!(forced["version"], 3);
    assert_eq!(api.events_named("journal_entry.updated").await, 2);
    api.stop().await;
}

#[tokio::test]
async fn entries_answer_prompts_the_author_can_see() {
    let api = TestApi::start().await;
    let alice = api.login("alice@example.com").await;
    let bob = api.login("bob@example.com").await;
    let team_id = api.team_with(&alice, &[(&bob, "member")]).await;
    let personal = api
        .call(
            Some(&alice),
            "prompts/create",
            json!({"text": "What went well?"}),
        )
        .await
        .ok();
    let team_prompt = api
        .call(
            Some(&alice),
            "prompts/create",
            json!({"text": "Team retro", "teamId": team_id}),
        )
        .await
        .ok();

    let answer = create(
        &api,
        &alice,
        json!({"title": "t", "content": "", "promptId": personal["promptId"]}),
    )
    .await;
    assert_eq!(answer["promptId"], personal["promptId"]);
    let team_answer = create(
        &api,
        &bob,
        json!({"title": "t", "content": "", "promptId": team_prompt["promptId"], "teamId": team_id}),
    )
    .await;
    assert_eq!(team_answer["promptId"], team_prompt["promptId"]);

    // Bob cannot use alice's personal prompt; nobody can use a deleted one.
    let foreign = api
        .call(
            Some(&bob),
            "journalEntries/create",
            json!({"title": "t", "content": "", "promptId": personal["promptId"]}),
        )
        .await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.code(), "NOT_FOUND");
    // A team entry answers only its team's prompts: other members could not resolve alice's.
    let personal_in_team = api
        .call(
            Some(&alice),
            "journalEntries/create",
            json!({"title": "t", "content": "", "promptId": personal["promptId"], "teamId": team_id}),
        )
        .await;
    assert_eq!(personal_in_team.code(), "NOT_FOUND");
    api.call(
        Some(&alice),
        "prompts/delete",
        json!({"promptId": personal["promptId"]}),
    )
    .await
    .ok();
    let deleted = api
        .call(
            Some(&alice),
            "journalEntries/create",
            json!({"title": "t", "content": "", "promptId": personal["promptId"]}),
        )
        .await;
    assert_eq!(deleted.code(), "NOT_FOUND");
    assert_eq!(api.events_named("journal_entry.created").await, 2);
    api.stop().await;
}
