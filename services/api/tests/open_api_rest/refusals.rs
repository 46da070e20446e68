//! Client mistakes, quota exhaustion and rate limits: 4xx JSON with codes and field paths.

use serde_json::{Value, json};
use uuid::Uuid;

use crate::common::TestApi;
use crate::fixtures::{api_team, assert_rate_headers, get, post, send};

#[tokio::test]
async fn client_mistakes_are_4xx_json_with_codes_and_field_paths() {
    let api = TestApi::start().await;
    let team = api_team(&api, "mistakes@rest.test", false).await;
    let path = "/api/v1/journal-entries";

    let invalid = post(
        &api,
        path,
        &team.key,
        json!({ "title": "", "content": "x", "mood": 9, "tags": ["ok", ""] }),
    )
    .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(invalid.code(), "BAD_REQUEST");
    assert_eq!(invalid.issue_paths(), ["title", "mood", "tags.1"]);

    let wrong_type = post(&api, path, &team.key, json!({ "title": 5, "content": "x" })).await;
    assert_eq!(wrong_type.status, 400);
    assert_eq!(wrong_type.issue_paths(), ["title"]);

    let unknown = post(
        &api,
        path,
        &team.key,
        json!({ "title": "t", "content": "x", "colour": "red" }),
    )
    .await;
    assert_eq!(unknown.status, 400, "{:?}", unknown.body);
    assert_eq!(unknown.code(), "BAD_REQUEST");

    // The team is the key's, never the client's.
    let team_field = post(
        &api,
        path,
        &team.key,
        json!({ "title": "t", "content": "x", "teamId": Uuid::new_v4() }),
    )
    .await;
    assert_eq!(team_field.status, 400);

    let malformed = send(
        &api,
        reqwest::Method::POST,
        path,
        Some(&team.key),
        Some("{\"title\": ".to_owned()),
    )
    .await;
    assert_eq!(malformed.status, 400);
    assert_eq!(malformed.code(), "BAD_REQUEST");

    let not_object = send(
        &api,
        reqwest::Method::POST,
        path,
        Some(&team.key),
        Some("[1]".to_owned()),
    )
    .await;
    assert_eq!(not_object.status, 400);

    let oversized = send(
        &api,
        reqwest::Method::POST,
        path,
        Some(&team.key),
        Some(format!(
            "{{\"title\":\"t\",\"content\":\"{}\"}}",
            "x".repeat(2 * 1024 * 1024)
        )),
    )
    .await;
    assert_eq!(oversized.status, 413);
    assert_eq!(oversized.code(), "PAYLOAD_TOO_LARGE");

    let bad_limit = get(&api, "/api/v1/journal-entries?limit=abc", &team.key).await;
    assert_eq!(bad_limit.status, 400);
    assert_eq!(bad_limit.issue_paths(), ["limit"]);
    let big_limit = get(&api, "/api/v1/journal-entries?limit=1000", &team.key).await;
    assert_eq!(big_limit.issue_paths(), ["limit"]);
    let bad_cursor = get(&api, "/api/v1/journal-entries?cursor=nope", &team.key).await;
    assert_eq!(bad_cursor.issue_paths(), ["cursor"]);

    let entry = post(
        &api,
        path,
        &team.key,
        json!({ "title": "t", "content": "x" }),
    )
    .await;
    let entry_path = format!("{path}/{}", entry.body["journalEntryId"].as_str().unwrap());
    let patch = |body: Value| {
        send(
            &api,
            reqwest::Method::PATCH,
            &entry_path,
            Some(&team.key),
            Some(body.to_string()),
        )
    };
    let bad_patch = patch(json!({ "mood": 0, "tags": [""], "title": null })).await;
    assert_eq!(bad_patch.status, 400, "{:?}", bad_patch.body);
    assert_eq!(
        bad_patch.issue_paths(),
        ["title"],
        "typing fails first: null title"
    );
    let bad_patch = patch(json!({ "mood": 0, "tags": [""] })).await;
    assert_eq!(bad_patch.issue_paths(), ["mood", "tags.0"]);
    let id_in_body = patch(json!({ "journalEntryId": Uuid::new_v4() })).await;
    assert_eq!(id_in_body.status, 400);
    let stale = patch(json!({ "title": "x", "expectedVersion": 7 })).await;
    assert_eq!(stale.status, 409);
    assert_eq!(stale.code(), "EDIT_CONFLICT");

    let bad_id = get(&api, "/api/v1/journal-entries/not-a-uuid", &team.key).await;
    assert_eq!(bad_id.status, 404);
    let wrong_method = send(
        &api,
        reqwest::Method::PUT,
        "/api/v1/usage",
        Some(&team.key),
        None,
    )
    .await;
    assert_eq!(wrong_method.status, 405);
    assert_eq!(wrong_method.code(), "METHOD_NOT_SUPPORTED");
    assert_rate_headers(&wrong_method);
    let unknown_route = get(&api, "/api/v1/nothing-here", &team.key).await;
    assert_eq!(unknown_route.status, 404);
    assert_eq!(unknown_route.code(), "NOT_FOUND");

    api.stop().await;
}

#[tokio::test]
async fn quota_exhaustion_and_rate_limit_answer_429_with_retry_after() {
    let api = TestApi::start().await;
    let team = api_team(&api, "quota@rest.test", false).await;
    sqlx::query("UPDATE subscriptions SET usage_count = 999999 WHERE api_team_id = $1")
        .bind(team.api_team_id)
        .execute(&api.pool)
        .await
        .unwrap();
    let last = get(&api, "/api/v1/usage", &team.key).await;
    assert_eq!(last.status, 200);
    assert_eq!(last.header("x-ratelimit-remaining"), Some("0"));
    let refused = get(&api, "/api/v1/usage", &team.key).await;
    assert_eq!(refused.status, 429);
    assert_eq!(refused.code(), "USAGE_EXCEEDED");
    assert!(
        refused
            .header("retry-after")
            .unwrap()
            .parse::<u64>()
            .unwrap()
            >= 1
    );
    assert_eq!(refused.header("x-ratelimit-limit"), Some("1000000"));
    assert_eq!(refused.header("x-ratelimit-remaining"), Some("0"));
    let count: i64 =
        sqlx::query_scalar("SELECT usage_count FROM subscriptions WHERE api_team_id = $1")
            .bind(team.api_team_id)
            .fetch_one(&api.pool)
            .await
            .unwrap();
    assert_eq!(count, 1_000_000, "a refused request is not counted");

    // The free plan: 2 requests per second per key.
    let free = api_team(&api, "free@rest.test", true).await;
    let mut statuses = Vec::new();
    let mut rate_limited = None;
    for _ in 0..4 {
        let reply = get(&api, "/api/v1/usage", &free.key).await;
        statuses.push(reply.status);
        if reply.status == 429 {
            rate_limited = Some(reply);
        }
    }
    let rate_limited = rate_limited.unwrap_or_else(|| panic!("never limited: {statuses:?}"));
    assert_eq!(rate_limited.code(), "RATE_LIMITED");
    assert!(rate_limited.header("retry-after").is_some());
    api.stop().await;
}
