//! Closed usage periods are kept with their counts.

use std::time::Duration;

use messages::journal::v1::SubscriptionPeriodClosed;
use serde_json::json;

use crate::common::TestApi;
use crate::fixtures::{api_team, events, rest, set_subscription, usage_count};

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
