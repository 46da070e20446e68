//! Plans and the subscription: listing plans, reading the subscription, changing the plan.

use std::time::Duration;

use messages::journal::v1::SubscriptionPlanChanged;
use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{api_team, change_plan, events, rest, set_subscription};

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
    api.age_sessions(&owner).await;
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
