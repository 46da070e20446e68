//! Limits and API access across replicas: plan changes, quotas under concurrency, disabled
//! API access.

use std::time::{Duration, Instant};

use messages::journal::v1::SubscriptionApiAccessChanged;
use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{api_team, change_plan, events, rest, set_subscription, usage_count};

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
    api.age_sessions(&admin).await;
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
