//! Listing entries: the trash, stable paging, and the search, tag and date filters.

use std::collections::HashSet;

use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{create, entry, id, list_entries, restore_entry, titles};

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
    let live = list_entries(&api, &alice, Value::Null).await.ok();
    assert_eq!(titles(&live), vec!["three"]);
    assert_eq!(live["nextCursor"], Value::Null);
    let trash = list_entries(&api, &alice, json!({"deleted": true}))
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
    restore_entry(&api, &alice, id(&one)).await.ok();
    let live = list_entries(&api, &alice, json!({})).await.ok();
    assert_eq!(titles(&live), vec!["three", "one"]);
    let trash = list_entries(&api, &alice, json!({"deleted": true}))
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

    let page1 = list_entries(&api, &alice, json!({"limit": 10})).await.ok();
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

    let page2 = list_entries(&api, &alice, json!({"limit": 10, "cursor": cursor}))
        .await
        .ok();
    let page3 = list_entries(
        &api,
        &alice,
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
    let fresh = list_entries(&api, &alice, Value::Null).await.ok();
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
        let page = list_entries(&api, &alice, input).await.ok();
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
        async move { titles(&list_entries(api, alice, input).await.ok()) }
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
