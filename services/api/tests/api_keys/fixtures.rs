//! Helpers shared by the API key tests: teams with API access, keys, and `whoami` probes.

use serde_json::{Value, json};

use crate::common::{TestApi, TestUser};

/// `{status, body, retry-after}` of a `GET /api/v1/whoami`.
#[derive(Debug)]
pub(crate) struct Probe {
    pub(crate) status: u16,
    pub(crate) body: Value,
    pub(crate) retry_after: Option<u64>,
}

impl Probe {
    pub(crate) fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

pub(crate) async fn whoami(api: &TestApi, key: &str, forwarded_for: Option<&str>) -> Probe {
    let mut request = api
        .client
        .get(format!("{}/api/v1/whoami", api.base_url))
        .header("x-api-key", key);
    if let Some(forwarded_for) = forwarded_for {
        request = request.header("x-forwarded-for", forwarded_for);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get("retry-after")
        .map(|value| value.to_str().unwrap().parse().unwrap());
    let body = response.json().await.unwrap_or(Value::Null);
    Probe {
        status,
        body,
        retry_after,
    }
}

/// A team owned by a fresh user, with API access enabled.
pub(crate) async fn api_team(api: &TestApi, email: &str) -> (TestUser, String) {
    let owner = api.login(email).await;
    let team_id = api.team_with(&owner, &[]).await;
    api.call(
        Some(&owner),
        "apiTeams/enable",
        json!({ "teamId": team_id }),
    )
    .await
    .ok();
    // `/api/v1/whoami` is metered like every open API route: the pro plan's 50 requests per
    // second keep the free plan's 2 from throttling these verification bursts.
    sqlx::query(
        "UPDATE subscriptions SET plan_id = 'pro'
          WHERE api_team_id = (SELECT api_team_id FROM api_teams WHERE team_id = $1::uuid)",
    )
    .bind(&team_id)
    .execute(&api.pool)
    .await
    .unwrap();
    (owner, team_id)
}

/// `apiKeys.create` → (the full key, the output).
pub(crate) async fn create_key(
    api: &TestApi,
    user: &TestUser,
    team_id: &str,
    name: &str,
) -> (String, Value) {
    let created = api
        .call(
            Some(user),
            "apiKeys/create",
            json!({ "teamId": team_id, "name": name }),
        )
        .await
        .ok();
    (created["key"].as_str().unwrap().to_owned(), created)
}

pub(crate) async fn set_allowlist(
    api: &TestApi,
    user: &TestUser,
    team_id: &str,
    cidrs: &[&str],
) -> Value {
    api.call(
        Some(user),
        "apiTeams/setIpAllowlist",
        json!({ "teamId": team_id, "cidrs": cidrs }),
    )
    .await
    .ok()
}

/// A well-formed key that no team holds.
pub(crate) fn random_key() -> String {
    let alphabet: Vec<char> = ('0'..='9').chain('A'..='Z').chain('a'..='z').collect();
    let pick = |n: usize| -> String {
        (0..n)
            .map(|_| alphabet[rand::random_range(0..alphabet.len())])
            .collect()
    };
    format!("jk_live_{}_{}", pick(8), pick(43))
}

/// The same prefix with another secret.
pub(crate) fn wrong_secret(key: &str) -> String {
    let (prefix, _) = key.split_at(17);
    let other = random_key();
    format!("{prefix}{}", &other[17..])
}
