//! Helpers shared by the open API tests: a team with API access and a key, requests and
//! their replies.

use serde_json::Value;
use uuid::Uuid;

use crate::common::{TestApi, TestUser, issue_paths};

/// An app team with API access (on the `pro` plan unless `free`) and one key.
pub(crate) struct ApiTeam {
    pub(crate) owner: TestUser,
    pub(crate) team_id: String,
    pub(crate) api_team_id: Uuid,
    pub(crate) key: String,
}

pub(crate) async fn api_team(api: &TestApi, email: &str, free: bool) -> ApiTeam {
    let owner = api.login(email).await;
    let team_id = api.team_with(&owner, &[]).await;
    let api_key = api.api_key_of(&owner, &team_id, "ci").await;
    if !free {
        // The free plan's 2 requests per second would throttle the tests themselves.
        api.set_plan(api_key.api_team_id, "pro").await;
    }
    ApiTeam {
        owner,
        team_id,
        api_team_id: api_key.api_team_id,
        key: api_key.key,
    }
}

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: reqwest::header::HeaderMap,
    pub(crate) body: Value,
}

impl Reply {
    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    pub(crate) fn issue_paths(&self) -> Vec<String> {
        issue_paths(&self.body["issues"])
    }
}

pub(crate) async fn send(
    api: &TestApi,
    method: reqwest::Method,
    path: &str,
    key: Option<&str>,
    body: Option<String>,
) -> Reply {
    let mut request = api
        .client
        .request(method, format!("{}{path}", api.base_url))
        .header("user-agent", "open-api-test/1.0")
        .header("x-request-id", "req-test-1");
    if let Some(key) = key {
        request = request.header("x-api-key", key);
    }
    if let Some(body) = body {
        request = request
            .header("content-type", "application/json")
            .body(body);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let body = response.json().await.unwrap_or(Value::Null);
    Reply {
        status,
        headers,
        body,
    }
}

pub(crate) async fn get(api: &TestApi, path: &str, key: &str) -> Reply {
    send(api, reqwest::Method::GET, path, Some(key), None).await
}

pub(crate) async fn post(api: &TestApi, path: &str, key: &str, body: Value) -> Reply {
    send(
        api,
        reqwest::Method::POST,
        path,
        Some(key),
        Some(body.to_string()),
    )
    .await
}

pub(crate) fn assert_rate_headers(reply: &Reply) {
    for name in [
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
    ] {
        let value = reply
            .header(name)
            .unwrap_or_else(|| panic!("{name} missing"));
        assert!(value.parse::<i64>().is_ok(), "{name}: {value}");
    }
}
