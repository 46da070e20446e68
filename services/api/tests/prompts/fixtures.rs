//! Helpers shared by the prompt tests.

use serde_json::{Value, json};

use crate::common::{TestApi, TestUser};

pub(crate) async fn create(api: &TestApi, user: &TestUser, input: Value) -> Value {
    api.call(Some(user), "prompts/create", input).await.ok()
}

pub(crate) fn texts(list: &Value) -> Vec<String> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|item| item["text"].as_str().unwrap().to_owned())
        .collect()
}

pub(crate) async fn today(api: &TestApi, user: &TestUser, date: &str) -> Value {
    let answer = api
        .query(Some(user), "prompts/today", json!({"date": date}))
        .await
        .ok();
    assert_eq!(answer["date"], date);
    answer
}
