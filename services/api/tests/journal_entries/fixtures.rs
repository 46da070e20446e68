//! Helpers shared by the journal entry tests.

use serde_json::{Value, json};

use crate::common::{Answer, TestApi, TestUser};

/// `journalEntries.create`, which must succeed: the new entry.
pub(crate) async fn create(api: &TestApi, user: &TestUser, input: Value) -> Value {
    try_create(api, user, input).await.ok()
}

/// `journalEntries.create`, whatever it answers.
pub(crate) async fn try_create(api: &TestApi, user: &TestUser, input: Value) -> Answer {
    api.call(Some(user), "journalEntries/create", input).await
}

/// `journalEntries.get` of `entry_id`, as `user`.
pub(crate) async fn get_entry(api: &TestApi, user: &TestUser, entry_id: &str) -> Answer {
    api.query(
        Some(user),
        "journalEntries/get",
        json!({"journalEntryId": entry_id}),
    )
    .await
}

/// `journalEntries.update` with `input`, as `user`.
pub(crate) async fn update_entry(api: &TestApi, user: &TestUser, input: Value) -> Answer {
    api.call(Some(user), "journalEntries/update", input).await
}

/// `journalEntries.delete` of `entry_id`, as `user`.
pub(crate) async fn delete_entry(api: &TestApi, user: &TestUser, entry_id: &str) -> Answer {
    api.call(
        Some(user),
        "journalEntries/delete",
        json!({"journalEntryId": entry_id}),
    )
    .await
}

/// `journalEntries.restore` of `entry_id`, as `user`.
pub(crate) async fn restore_entry(api: &TestApi, user: &TestUser, entry_id: &str) -> Answer {
    api.call(
        Some(user),
        "journalEntries/restore",
        json!({"journalEntryId": entry_id}),
    )
    .await
}

/// `journalEntries.list` with `input`, as `user`.
pub(crate) async fn list_entries(api: &TestApi, user: &TestUser, input: Value) -> Answer {
    api.query(Some(user), "journalEntries/list", input).await
}

pub(crate) async fn entry(api: &TestApi, user: &TestUser, title: &str) -> Value {
    create(api, user, json!({"title": title, "content": "text"})).await
}

/// `base` with each of `fields` added or replaced.
pub(crate) fn with_fields(mut base: Value, fields: Value) -> Value {
    for (key, value) in fields.as_object().unwrap() {
        base[key] = value.clone();
    }
    base
}

pub(crate) fn id(row: &Value) -> &str {
    row["journalEntryId"].as_str().unwrap()
}

pub(crate) fn titles(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["title"].as_str().unwrap().to_owned())
        .collect()
}
