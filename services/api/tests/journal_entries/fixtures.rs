//! Helpers shared by the journal entry tests.

use serde_json::{Value, json};

use crate::common::{TestApi, TestUser};

pub(crate) async fn create(api: &TestApi, user: &TestUser, input: Value) -> Value {
    api.call(Some(user), "journalEntries/create", input)
        .await
        .ok()
}

pub(crate) async fn entry(api: &TestApi, user: &TestUser, title: &str) -> Value {
    create(api, user, json!({"title": title, "content": "text"})).await
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
