//! Metering against real Postgres: the quota is exact under concurrency, a refused request is
//! not counted, and period rollover is lazy on the request path and idempotent as a task.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use api::modules::subscriptions::metering::{self, Usage};
use common::TestApi;
use domain::ids::ApiTeamId;
use uuid::Uuid;

/// An app team with API access on `plan_id`, its period `[start, end)` relative to now.
async fn api_team(api: &TestApi, plan_id: &str, start: &str, end: &str, used: i64) -> ApiTeamId {
    let owner = api.login(&format!("{}@example.com", Uuid::new_v4())).await;
    let team_id: Uuid = api.team_with(&owner, &[]).await.parse().unwrap();
    let api_team_id: ApiTeamId = sqlx::query_scalar(
        "INSERT INTO api_teams (team_id, enabled_by_user_id) VALUES ($1, $2) RETURNING api_team_id",
    )
    .bind(team_id)
    .bind(owner.user_id)
    .fetch_one(&api.pool)
    .await
    .unwrap();
    sqlx::query(&format!(
        "INSERT INTO subscriptions (api_team_id, plan_id, period_start, period_end, usage_count)
         VALUES ($1, $2, now() + interval '{start}', now() + interval '{end}', $3)"
    ))
    .bind(api_team_id)
    .bind(plan_id)
    .bind(used)
    .execute(&api.pool)
    .await
    .unwrap();
    api_team_id
}

async fn count(api: &TestApi, api_team_id: ApiTeamId) -> Usage {
    let mut conn = api.pool.acquire().await.unwrap();
    metering::count_request(&mut conn, api_team_id)
        .await
        .unwrap()
}

async fn usage_count(api: &TestApi, api_team_id: ApiTeamId) -> i64 {
    sqlx::query_scalar("SELECT usage_count FROM subscriptions WHERE api_team_id = $1")
        .bind(api_team_id)
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_requests_never_exceed_the_quota_and_refusals_are_not_counted() {
    let api = TestApi::start().await;
    // The free plan allows 10,000 a month; start 10 short of it.
    let api_team_id = api_team(&api, "free", "-1 day", "29 days", 9_990).await;
    let first = count(&api, api_team_id).await;
    assert_eq!(
        (first.limit, first.used, first.exceeded, first.remaining()),
        (10_000, 9_991, false, 9)
    );

    let tasks: Vec<_> = (0..30)
        .map(|_| {
            let pool = api.pool.clone();
            tokio::spawn(async move {
                let mut conn = pool.acquire().await.unwrap();
                metering::count_request(&mut conn, api_team_id)
                    .await
                    .unwrap()
            })
        })
        .collect();
    let mut allowed = 0;
    let mut refused = 0;
    for task in tasks {
        let usage = task.await.unwrap();
        if usage.exceeded {
            refused += 1;
            assert_eq!(usage.remaining(), 0);
            assert!(usage.retry_after_seconds(chrono::Utc::now()) > 28 * 86_400);
        } else {
            allowed += 1;
        }
    }
    assert_eq!((allowed, refused), (9, 21), "exactly the rest of the quota");
    assert_eq!(usage_count(&api, api_team_id).await, 10_000);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_ended_period_rolls_over_once_on_the_request_path_or_by_the_task() {
    let api = TestApi::start().await;
    // Ended (and used up) two and a half months into a monthly plan.
    let lazy = api_team(&api, "free", "-75 days", "-45 days", 10_000).await;
    let usage = count(&api, lazy).await;
    assert!(!usage.exceeded, "a new period starts with a fresh quota");
    assert_eq!(usage.used, 1);
    let (start, end): (chrono::DateTime<chrono::Utc>, chrono::DateTime<chrono::Utc>) =
        sqlx::query_as("SELECT period_start, period_end FROM subscriptions WHERE api_team_id = $1")
            .bind(lazy)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    let now = chrono::Utc::now();
    assert!(start <= now && now < end, "{start} .. {end} contains now");
    assert!(end - start >= chrono::TimeDelta::days(28));

    // The scheduled task: rolls every ended period once; running it again changes nothing.
    let scheduled = api_team(&api, "pro", "-40 days", "-10 days", 500).await;
    let current = api_team(&api, "pro", "-1 day", "29 days", 7).await;
    assert_eq!(metering::roll_over_periods(&api.pool).await.unwrap(), 1);
    assert_eq!(metering::roll_over_periods(&api.pool).await.unwrap(), 0);
    assert_eq!(usage_count(&api, scheduled).await, 0);
    assert_eq!(
        usage_count(&api, current).await,
        7,
        "a running period is left alone"
    );
    api.stop().await;
}

#[tokio::test]
async fn a_team_without_a_subscription_is_refused() {
    let api = TestApi::start().await;
    let mut conn = api.pool.acquire().await.unwrap();
    let error = metering::count_request(&mut conn, ApiTeamId::generate())
        .await
        .expect_err("no subscription");
    assert_eq!(error.code(), "FORBIDDEN");
    drop(conn);
    let counter = metering::QuotaCounter::default();
    let error = counter
        .count(&api.pool, ApiTeamId::generate())
        .await
        .expect_err("no subscription");
    assert_eq!(error.code(), "FORBIDDEN", "the counter keeps the refusal");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_counts_from_two_replicas_grant_exactly_the_rest_of_the_quota() {
    let api = TestApi::start().await;
    let api_team_id = api_team(&api, "free", "-1 day", "29 days", 9_980).await;
    // Two replicas' counters, 40 requests at once: each counter folds its team's concurrent
    // requests into fewer updates.
    let replicas = [
        std::sync::Arc::new(metering::QuotaCounter::default()),
        std::sync::Arc::new(metering::QuotaCounter::default()),
    ];
    let tasks: Vec<_> = (0..40)
        .map(|index| {
            let counter = std::sync::Arc::clone(&replicas[index % 2]);
            let pool = api.pool.clone();
            tokio::spawn(async move { counter.count(&pool, api_team_id).await.unwrap() })
        })
        .collect();
    let mut granted_counts = Vec::new();
    let mut refused = 0;
    for task in tasks {
        let usage = task.await.unwrap();
        assert_eq!(usage.limit, 10_000);
        if usage.exceeded {
            refused += 1;
            assert_eq!(usage.remaining(), 0);
        } else {
            granted_counts.push(usage.used);
        }
    }
    granted_counts.sort_unstable();
    assert_eq!(
        granted_counts,
        (9_981..=10_000).collect::<Vec<i64>>(),
        "each admitted request got its own place in the count"
    );
    assert_eq!(refused, 20);
    assert_eq!(usage_count(&api, api_team_id).await, 10_000);

    // Once used up, a counter refuses without counting.
    let usage = replicas[0].count(&api.pool, api_team_id).await.unwrap();
    assert!(usage.exceeded);
    assert_eq!(usage_count(&api, api_team_id).await, 10_000);
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_of_one_team_is_counted_in_fewer_updates_than_requests() {
    let api = TestApi::start().await;
    let api_team_id = api_team(&api, "pro", "-1 day", "29 days", 0).await;
    // A row trigger counts the row versions written to the subscription, exactly and at
    // once (the statistics views lag behind by up to a second per backend).
    sqlx::raw_sql(
        "CREATE TABLE public.subscription_row_updates (n bigint NOT NULL);
         INSERT INTO public.subscription_row_updates VALUES (0);
         CREATE FUNCTION public.count_subscription_update() RETURNS trigger LANGUAGE plpgsql AS
           $$ BEGIN UPDATE public.subscription_row_updates SET n = n + 1; RETURN NULL; END $$;
         CREATE TRIGGER count_updates AFTER UPDATE ON api.subscriptions
           FOR EACH ROW EXECUTE FUNCTION public.count_subscription_update();",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    let counter = std::sync::Arc::new(metering::QuotaCounter::default());
    let tasks: Vec<_> = (0..64)
        .map(|_| {
            let counter = std::sync::Arc::clone(&counter);
            let pool = api.pool.clone();
            tokio::spawn(async move { counter.count(&pool, api_team_id).await.unwrap() })
        })
        .collect();
    for task in tasks {
        assert!(!task.await.unwrap().exceeded);
    }
    assert_eq!(usage_count(&api, api_team_id).await, 64);
    let update_statements: i64 =
        sqlx::query_scalar("SELECT n FROM public.subscription_row_updates")
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert!(
        update_statements > 0 && update_statements < 64,
        "64 concurrent requests took {update_statements} updates"
    );
    api.stop().await;
}
