//! Helpers shared by the subscription tests: teams with API access, REST calls, plans and
//! usage.

use prost::Message;
use serde_json::{Value, json};

use crate::common::{TestApi, TestUser};

/// `{status, body}` of an open API request.
#[derive(Debug)]
pub(crate) struct Rest {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) limit_header: Option<i64>,
}

impl Rest {
    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

pub(crate) async fn rest(api: &TestApi, key: &str, path_and_query: &str) -> Rest {
    let response = api
        .client
        .get(format!("{}{path_and_query}", api.base_url))
        .header("x-api-key", key)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let limit_header = response
        .headers()
        .get("x-ratelimit-limit")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    Rest {
        status,
        body,
        limit_header,
    }
}

/// A team owned by a fresh user with `members`, API access enabled (free plan), and a key.
pub(crate) async fn api_team(
    api: &TestApi,
    members: &[(&TestUser, &str)],
) -> (TestUser, String, String) {
    let owner = api
        .login(&format!("owner-{}@example.com", uuid::Uuid::new_v4()))
        .await;
    let team_id = api.team_with(&owner, members).await;
    let key = api.api_key_of(&owner, &team_id, "integration").await.key;
    (owner, team_id, key)
}

pub(crate) async fn change_plan(
    api: &TestApi,
    user: &TestUser,
    team_id: &str,
    plan_id: &str,
) -> Value {
    api.call(
        Some(user),
        "subscriptions/changePlan",
        json!({ "teamId": team_id, "planId": plan_id }),
    )
    .await
    .ok()
}

pub(crate) async fn usage_count(api: &TestApi, team_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT s.usage_count FROM subscriptions s
           JOIN api_teams a ON a.api_team_id = s.api_team_id WHERE a.team_id = $1::uuid",
    )
    .bind(team_id)
    .fetch_one(&api.pool)
    .await
    .unwrap()
}

pub(crate) async fn set_subscription(api: &TestApi, team_id: &str, set: &str) {
    sqlx::query(&format!(
        "UPDATE subscriptions SET {set}
          WHERE api_team_id = (SELECT api_team_id FROM api_teams WHERE team_id = $1::uuid)"
    ))
    .bind(team_id)
    .execute(&api.pool)
    .await
    .unwrap();
}

pub(crate) async fn events<M: Message + Default>(api: &TestApi, name: &str) -> Vec<M> {
    api.emitted("EVENTS", &format!("events.{name}"))
        .await
        .into_iter()
        .filter(|message| message.name == name)
        .map(|message| M::decode(message.payload.as_slice()).unwrap())
        .collect()
}
