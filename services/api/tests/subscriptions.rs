//! Subscriptions against real Postgres and NATS: the plans, a team's subscription and usage
//! history (RPC and REST), plan changes (owners only, limits followed by every replica, a
//! downgrade below usage refusing the next request, no race past a small quota), periods
//! kept when they roll over, API access disabled and restored, and the events.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::{TestApi, TestUser};
use messages::journal::v1::{
    SubscriptionApiAccessChanged, SubscriptionPeriodClosed, SubscriptionPlanChanged,
};
use prost::Message;
use serde_json::{Value, json};

/// `{status, body}` of an open API request.
#[derive(Debug)]
struct Rest {
    status: u16,
    body: Value,
    limit_header: Option<i64>,
}

impl Rest {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }
}

async fn rest(api: &TestApi, key: &str, path_and_query: &str) -> Rest {
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
async fn api_team(api: &TestApi, members: &[(&TestUser, &str)]) -> (TestUser, String, String) {
    let owner = api
        .login(&format!("owner-{}@example.com", uuid::Uuid::new_v4()))
        .await;
    let team_id = api.team_with(&owner, members).await;
    let key = api.api_key_of(&owner, &team_id, "integration").await.key;
    (owner, team_id, key)
}

async fn change_plan(api: &TestApi, user: &TestUser, team_id: &str, plan_id: &str) -> Value {
    api.call(
        Some(user),
        "subscriptions/changePlan",
        json!({ "teamId": team_id, "planId": plan_id }),
    )
    .await
    .ok()
}

async fn usage_count(api: &TestApi, team_id: &str) -> i64 {
    sqlx::query_scalar(
        "SELECT s.usage_count FROM subscriptions s
           JOIN api_teams a ON a.api_team_id = s.api_team_id WHERE a.team_id = $1::uuid",
    )
    .bind(team_id)
    .fetch_one(&api.pool)
    .await
    .unwrap()
}

async fn set_subscription(api: &TestApi, team_id: &str, set: &str) {
    sqlx::query(&format!(
        "UPDATE subscriptions SET {set}
          WHERE api_team_id = (SELECT api_team_id FROM api_teams WHERE team_id = $1::uuid)"
    ))
    .bind(team_id)
    .execute(&api.pool)
    .await
    .unwrap();
}

async fn age_sessions(api: &TestApi, user: &TestUser) {
    sqlx::query("UPDATE sessions SET created_at = now() - interval '2 days' WHERE user_id = $1")
        .bind(user.user_id)
        .execute(&api.pool)
        .await
        .unwrap();
    api.forget_cached_sessions();
}

async fn events<M: Message + Default>(api: &TestApi, name: &str) -> Vec<M> {
    api.emitted("EVENTS", &format!("events.{name}"))
        .await
        .into_iter()
        .filter(|message| message.name == name)
        .map(|message| M::decode(message.payload.as_slice()).unwrap())
        .collect()
}

#[tokio::test]
async fn plans_are_listed_with_their_limits_to_anyone_signed_in() {
    let api = TestApi::start().await;
    let user = api.login("plans@example.com").await;
    let plans = api
        .query(Some(&user), "subscriptions/plans", Value::Null)
        .await
        .ok();
    assert_eq!(
        plans,
        json!([
            {"planId": "free", "name": "Free", "monthlyRequestQuota": 10_000, "requestsPerSecond": 2},
            {"planId": "pro", "name": "Pro", "monthlyRequestQuota": 1_000_000, "requestsPerSecond": 50},
        ])
    );
    let anonymous = api.query(None, "subscriptions/plans", Value::Null).await;
    assert_eq!(anonymous.status, 401);
    api.stop().await;
}

#[tokio::test]
async fn members_read_the_subscription_and_integrators_read_it_over_rest() {
    let api = TestApi::start().await;
    let member = api.login("member@example.com").await;
    let outsider = api.login("outsider@example.com").await;
    let (owner, team_id, key) = api_team(&api, &[(&member, "member")]).await;

    // Two requests (the free plan's burst) are counted.
    for _ in 0..2 {
        assert_eq!(rest(&api, &key, "/api/v1/whoami").await.status, 200);
    }
    let status = api
        .query(
            Some(&member),
            "subscriptions/get",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(status["teamId"], team_id.as_str());
    assert_eq!(status["plan"]["planId"], "free");
    assert_eq!(status["plan"]["monthlyRequestQuota"], 10_000);
    assert_eq!(status["usageCount"], 2);
    assert_eq!(status["remaining"], 9_998);
    assert_eq!(status["apiAccessEnabled"], true);
    assert!(status["apiAccessDisabledAt"].is_null());
    let (start, end) = (
        status["periodStart"].as_i64().unwrap(),
        status["periodEnd"].as_i64().unwrap(),
    );
    let now = chrono::Utc::now().timestamp_millis();
    assert!(start <= now && now < end, "{start} <= {now} < {end}");

    let hidden = api
        .query(
            Some(&outsider),
            "subscriptions/get",
            json!({ "teamId": team_id }),
        )
        .await;
    assert_eq!((hidden.status, hidden.code()), (404, "NOT_FOUND"));
    let plain_team = api.team_with(&owner, &[]).await;
    let none = api
        .query(
            Some(&owner),
            "subscriptions/get",
            json!({ "teamId": plain_team }),
        )
        .await
        .ok();
    assert!(none.is_null(), "API access never enabled: {none}");

    // Over REST: the same subscription, this request included; nothing closed yet.
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let over_rest = rest(&api, &key, "/api/v1/subscription").await;
    assert_eq!(over_rest.status, 200, "{:?}", over_rest.body);
    assert_eq!(over_rest.body["usageCount"], 3);
    assert_eq!(over_rest.body["plan"]["requestsPerSecond"], 2);
    assert_eq!(over_rest.body["periodEnd"], end);
    let history = rest(&api, &key, "/api/v1/usage/history").await;
    assert_eq!(history.status, 200);
    assert_eq!(history.body, json!({"items": [], "nextBefore": null}));
    api.stop().await;
}

#[tokio::test]
async fn only_owners_change_the_plan_with_a_fresh_session_and_the_change_is_an_event() {
    let api = TestApi::start().await;
    let admin = api.login("admin@example.com").await;
    let member = api.login("member@example.com").await;
    let outsider = api.login("outsider@example.com").await;
    let (owner, team_id, _key) = api_team(&api, &[(&admin, "admin"), (&member, "member")]).await;
    set_subscription(&api, &team_id, "usage_count = 1234").await;

    for (user, status, code) in [
        (&admin, 403, "FORBIDDEN"),
        (&member, 403, "FORBIDDEN"),
        (&outsider, 404, "NOT_FOUND"),
    ] {
        let refused = api
            .call(
                Some(user),
                "subscriptions/changePlan",
                json!({ "teamId": team_id, "planId": "pro" }),
            )
            .await;
        assert_eq!((refused.status, refused.code()), (status, code));
    }
    let unknown = api
        .call(
            Some(&owner),
            "subscriptions/changePlan",
            json!({ "teamId": team_id, "planId": "platinum" }),
        )
        .await;
    assert_eq!((unknown.status, unknown.code()), (400, "BAD_REQUEST"));
    assert_eq!(unknown.issue_paths(), ["planId"]);
    let plain_team = api.team_with(&owner, &[]).await;
    let not_enabled = api
        .call(
            Some(&owner),
            "subscriptions/changePlan",
            json!({ "teamId": plain_team, "planId": "pro" }),
        )
        .await;
    assert_eq!(
        (not_enabled.status, not_enabled.code()),
        (409, "API_NOT_ENABLED")
    );
    assert!(
        events::<SubscriptionPlanChanged>(&api, "subscription.plan_changed")
            .await
            .is_empty()
    );

    // The owner: the plan changes, the period and its count stay.
    let before = api
        .query(
            Some(&owner),
            "subscriptions/get",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    let changed = change_plan(&api, &owner, &team_id, "pro").await;
    assert_eq!(changed["plan"]["planId"], "pro");
    assert_eq!(changed["usageCount"], 1234);
    assert_eq!(changed["remaining"], 1_000_000 - 1234);
    assert_eq!(changed["periodStart"], before["periodStart"]);
    assert_eq!(changed["periodEnd"], before["periodEnd"]);
    // The same plan again: unchanged, no second event.
    change_plan(&api, &owner, &team_id, "pro").await;
    let events = events::<SubscriptionPlanChanged>(&api, "subscription.plan_changed").await;
    assert_eq!(events.len(), 1, "{events:?}");
    let event = &events[0];
    assert_eq!(event.team_id, team_id);
    assert_eq!(event.api_team_id, changed["apiTeamId"].as_str().unwrap());
    assert_eq!(
        (event.previous_plan_id.as_str(), event.plan_id.as_str()),
        ("free", "pro")
    );
    assert_eq!(event.changed_by_user_id, owner.user_id.to_string());
    assert_eq!(event.usage_count, 1234);
    assert_eq!(
        (event.monthly_request_quota, event.requests_per_second),
        (1_000_000, 50)
    );
    assert_eq!(event.period_end_ms, changed["periodEnd"].as_i64().unwrap());
    // The API team's view follows.
    let api_team = api
        .query(Some(&member), "apiTeams/get", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(api_team["plan"]["planId"], "pro");

    // Sensitive: an owner's stale session is refused.
    age_sessions(&api, &owner).await;
    let stale = api
        .call(
            Some(&owner),
            "subscriptions/changePlan",
            json!({ "teamId": team_id, "planId": "free" }),
        )
        .await;
    assert_eq!((stale.status, stale.code()), (403, "SESSION_NOT_FRESH"));
    api.stop().await;
}

/// A plan change made through one replica: the other follows the new rate within the
/// broadcast's delay (not the 30 s of its cache), and the new quota on its very next request.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn limits_follow_a_plan_change_on_every_replica_and_a_downgrade_refuses_at_once() {
    let api = TestApi::start().await;
    let other = api.replica(|_| {}).await;
    let (owner, team_id, key) = api_team(&api, &[]).await;

    // On `free` (2 per second), the other replica refuses a third request in a burst; its
    // cache now holds the free rate.
    let mut burst = Vec::new();
    for _ in 0..3 {
        burst.push(rest(&other, &key, "/api/v1/whoami").await.status);
    }
    assert_eq!(burst, [200, 200, 429]);

    let changed_at = Instant::now();
    change_plan(&api, &owner, &team_id, "pro").await;
    // `pro` allows 50 per second: a burst of 8 passes once the other replica has heard.
    let mut followed = None;
    while changed_at.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(1_050)).await;
        let mut statuses = Vec::new();
        for _ in 0..8 {
            statuses.push(rest(&other, &key, "/api/v1/whoami").await.status);
        }
        if statuses.iter().all(|status| *status == 200) {
            followed = Some(changed_at.elapsed());
            break;
        }
    }
    let followed = followed.expect("the other replica kept the free rate for 10 s");
    assert!(
        followed < Duration::from_secs(3),
        "followed after {followed:?}"
    );

    // Used past the free quota on `pro`: still admitted …
    set_subscription(&api, &team_id, "usage_count = 10000").await;
    let admitted = rest(&other, &key, "/api/v1/whoami").await;
    assert_eq!(admitted.status, 200);
    assert_eq!(admitted.limit_header, Some(1_000_000));
    // … then downgraded through the first replica: the other refuses the next request.
    change_plan(&api, &owner, &team_id, "free").await;
    tokio::time::sleep(Duration::from_millis(1_050)).await;
    let refused = rest(&other, &key, "/api/v1/whoami").await;
    assert_eq!(
        (refused.status, refused.code()),
        (429, "USAGE_EXCEEDED"),
        "{:?}",
        refused.body
    );
    assert_eq!(refused.limit_header, Some(10_000));
    // The period's count was kept through both changes and the refusal is not counted.
    assert_eq!(usage_count(&api, &team_id).await, 10_001);
    let status = api
        .query(
            Some(&owner),
            "subscriptions/get",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(
        (status["usageCount"].as_i64(), status["remaining"].as_i64()),
        (Some(10_001), Some(0))
    );
    other.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_on_two_replicas_never_pass_a_small_quota() {
    let api = TestApi::start().await;
    let other = api.replica(|_| {}).await;
    let (owner, team_id, key) = api_team(&api, &[]).await;
    // A plan with a tiny quota and a rate that never gets in the way.
    sqlx::query(
        "INSERT INTO plans (plan_id, name, monthly_request_quota, requests_per_second)
         VALUES ('tiny', 'Tiny', 5, 1000)",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    change_plan(&api, &owner, &team_id, "tiny").await;

    let replicas = [&api, &other];
    let requests = (0..40).map(|index| rest(replicas[index % 2], &key, "/api/v1/whoami"));
    let answers = futures::future::join_all(requests).await;
    let admitted = answers.iter().filter(|answer| answer.status == 200).count();
    let refused = answers
        .iter()
        .filter(|answer| answer.status == 429 && answer.code() == "USAGE_EXCEEDED")
        .count();
    assert_eq!((admitted, refused), (5, 35), "{answers:?}");
    assert_eq!(usage_count(&api, &team_id).await, 5);
    other.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_closed_period_is_kept_with_its_count() {
    let api = TestApi::start().await;
    let member = api.login("member@example.com").await;
    let (_owner, team_id, key) = api_team(&api, &[(&member, "member")]).await;

    // A period that ended two days ago with 42 requests: the next request rolls it over.
    set_subscription(
        &api,
        &team_id,
        "period_start = now() - interval '1 month 2 days', period_end = now() - interval '2 days',
         usage_count = 42",
    )
    .await;
    let (old_start, old_end): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as(
            "SELECT s.period_start, s.period_end FROM subscriptions s
               JOIN api_teams a ON a.api_team_id = s.api_team_id WHERE a.team_id = $1::uuid",
        )
        .bind(&team_id)
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert_eq!(rest(&api, &key, "/api/v1/whoami").await.status, 200);
    assert_eq!(usage_count(&api, &team_id).await, 1);

    // The next one ends now with 7 (a period shorter than a month, as only tests make), and
    // the scheduled task rolls it over; running it again does nothing.
    set_subscription(
        &api,
        &team_id,
        "period_end = now() - interval '1 second', usage_count = 7",
    )
    .await;
    assert_eq!(
        api::modules::subscriptions::metering::roll_over_periods(&api.pool)
            .await
            .unwrap(),
        1
    );
    assert_eq!(
        api::modules::subscriptions::metering::roll_over_periods(&api.pool)
            .await
            .unwrap(),
        0
    );

    let history = api
        .query(
            Some(&member),
            "subscriptions/usageHistory",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    let items = history["items"].as_array().unwrap();
    assert_eq!(items.len(), 2, "{history}");
    assert_eq!(
        items
            .iter()
            .map(|item| item["usageCount"].as_i64().unwrap())
            .collect::<Vec<_>>(),
        [7, 42],
        "newest first"
    );
    assert_eq!(items[1]["planId"], "free");
    assert_eq!(items[1]["monthlyRequestQuota"], 10_000);
    assert_eq!(items[1]["periodStart"], old_start.timestamp_millis());
    assert_eq!(items[1]["periodEnd"], old_end.timestamp_millis());
    assert!(items[0]["periodStart"].as_i64() >= items[1]["periodEnd"].as_i64());
    assert!(history["nextBefore"].is_null());

    // The current period is a fresh one that contains now.
    let status = api
        .query(
            Some(&member),
            "subscriptions/get",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(status["usageCount"], 0);
    assert!(status["periodStart"].as_i64() >= items[0]["periodEnd"].as_i64());

    // Over REST, a page at a time.
    let page = rest(&api, &key, "/api/v1/usage/history?limit=1").await;
    assert_eq!(page.status, 200, "{:?}", page.body);
    assert_eq!(page.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(page.body["items"][0]["usageCount"], 7);
    let next = page.body["nextBefore"].as_i64().unwrap();
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    let older = rest(
        &api,
        &key,
        &format!("/api/v1/usage/history?limit=1&before={next}"),
    )
    .await;
    assert_eq!(older.body["items"][0]["usageCount"], 42);
    assert!(older.body["nextBefore"].is_null());
    tokio::time::sleep(Duration::from_millis(1_100)).await;
    for query in ["limit=0", "limit=x", "before=-1", "page=2"] {
        let bad = rest(&api, &key, &format!("/api/v1/usage/history?{query}")).await;
        assert_eq!((bad.status, bad.code()), (400, "BAD_REQUEST"), "{query}");
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    // Each closed period was announced once.
    let closed = events::<SubscriptionPeriodClosed>(&api, "subscription.period_closed").await;
    assert_eq!(
        closed
            .iter()
            .map(|event| event.usage_count)
            .collect::<Vec<_>>(),
        [42, 7]
    );
    assert_eq!(closed[0].team_id, team_id);
    assert_eq!(closed[0].period_end_ms, old_end.timestamp_millis());
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disabled_api_access_refuses_the_teams_keys_on_every_replica_until_enabled() {
    let api = TestApi::start().await;
    let other = api.replica(|_| {}).await;
    let admin = api.login("admin@example.com").await;
    let member = api.login("member@example.com").await;
    let (owner, team_id, key) = api_team(&api, &[(&admin, "admin"), (&member, "member")]).await;
    change_plan(&api, &owner, &team_id, "pro").await;
    // Both replicas have the key cached.
    for replica in [&api, &other] {
        assert_eq!(rest(replica, &key, "/api/v1/whoami").await.status, 200);
    }

    let refused = api
        .call(
            Some(&member),
            "subscriptions/disableApiAccess",
            json!({ "teamId": team_id }),
        )
        .await;
    assert_eq!((refused.status, refused.code()), (403, "FORBIDDEN"));
    let disabled = api
        .call(
            Some(&admin),
            "subscriptions/disableApiAccess",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(disabled["apiAccessEnabled"], false);
    assert!(disabled["apiAccessDisabledAt"].is_i64());
    let used = usage_count(&api, &team_id).await;

    // At once, on both replicas, every route: 403 with the stable code, not counted.
    for replica in [&api, &other] {
        for path in ["/api/v1/whoami", "/api/v1/subscription", "/api/v1/prompts"] {
            let answer = rest(replica, &key, path).await;
            assert_eq!(
                (answer.status, answer.code()),
                (403, "API_ACCESS_DISABLED"),
                "{path}: {:?}",
                answer.body
            );
            assert!(
                answer.body["message"]
                    .as_str()
                    .unwrap()
                    .contains("disabled")
            );
        }
    }
    assert_eq!(usage_count(&api, &team_id).await, used);
    let api_team = api
        .query(Some(&member), "apiTeams/get", json!({ "teamId": team_id }))
        .await
        .ok();
    assert_eq!(api_team["apiAccessEnabled"], false);
    assert_eq!(
        api_team["apiAccessDisabledByUserId"],
        admin.user_id.to_string()
    );
    // Disabling again changes nothing.
    api.call(
        Some(&owner),
        "subscriptions/disableApiAccess",
        json!({ "teamId": team_id }),
    )
    .await
    .ok();

    // Sensitive: a stale session cannot switch it back.
    age_sessions(&api, &admin).await;
    let stale = api
        .call(
            Some(&admin),
            "subscriptions/enableApiAccess",
            json!({ "teamId": team_id }),
        )
        .await;
    assert_eq!((stale.status, stale.code()), (403, "SESSION_NOT_FRESH"));
    let enabled = api
        .call(
            Some(&owner),
            "subscriptions/enableApiAccess",
            json!({ "teamId": team_id }),
        )
        .await
        .ok();
    assert_eq!(enabled["apiAccessEnabled"], true);
    for replica in [&api, &other] {
        assert_eq!(rest(replica, &key, "/api/v1/whoami").await.status, 200);
    }

    let events =
        events::<SubscriptionApiAccessChanged>(&api, "subscription.api_access_changed").await;
    assert_eq!(
        events
            .iter()
            .map(|event| (event.enabled, event.changed_by_user_id.clone()))
            .collect::<Vec<_>>(),
        [
            (false, admin.user_id.to_string()),
            (true, owner.user_id.to_string())
        ]
    );
    assert_eq!(events[0].team_id, team_id);
    other.stop().await;
    api.stop().await;
}
