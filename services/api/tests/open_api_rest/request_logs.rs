//! The request log: every request is logged, keyless floods are sampled, and a key is never
//! stored.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::TestApi;
use crate::fixtures::{api_team, get, send};

/// The request log rows of `path` (written off the request path: waits for `count`).
async fn log_rows(api: &TestApi, path: &str, count: usize) -> Vec<Value> {
    for _ in 0..100 {
        let rows: Vec<(Value,)> = sqlx::query_as(
            "SELECT to_jsonb(r) FROM request_logs r WHERE path = $1 ORDER BY created_at",
        )
        .bind(path)
        .fetch_all(&api.pool)
        .await
        .unwrap();
        if rows.len() >= count {
            return rows.into_iter().map(|(row,)| row).collect();
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("{count} request log rows of {path} never appeared");
}

#[tokio::test]
async fn every_request_is_logged_refused_ones_included_without_the_key() {
    let api = TestApi::start().await;
    let team = api_team(&api, "logs@rest.test", false).await;

    let ok = get(&api, "/api/v1/usage", &team.key).await;
    assert_eq!(ok.status, 200);
    let rows = log_rows(&api, "/api/v1/usage", 1).await;
    let row = &rows[0];
    assert_eq!(row["method"], "GET");
    assert_eq!(row["status"], 200);
    assert_eq!(row["api_team_id"], team.api_team_id.to_string());
    assert_eq!(row["team_id"], team.team_id.as_str());
    assert!(
        row["api_key_prefix"]
            .as_str()
            .unwrap()
            .starts_with("jk_live_")
    );
    assert_eq!(row["user_agent"], "open-api-test/1.0");
    assert_eq!(row["request_id"], "req-test-1");
    assert!(row["response_bytes"].as_i64().unwrap() > 0);
    assert!(row["duration_us"].as_i64().unwrap() > 0);
    assert!(row["error_code"].is_null());
    assert!(row["client_ip"].is_string());
    let logged_key = row["request_headers"]["x-api-key"].as_str().unwrap();
    assert!(
        logged_key.starts_with(row["api_key_prefix"].as_str().unwrap())
            && logged_key.ends_with("[redacted]"),
        "{logged_key}"
    );

    // Refused without a key: still one row, with its code.
    let body = json!({ "title": "t", "content": "x" }).to_string();
    let unauthenticated = send(
        &api,
        reqwest::Method::POST,
        "/api/v1/journal-entries",
        None,
        Some(body.clone()),
    )
    .await;
    assert_eq!(unauthenticated.status, 401);
    assert!(unauthenticated.header("x-ratelimit-limit").is_none());
    let rows = log_rows(&api, "/api/v1/journal-entries", 1).await;
    assert_eq!(rows[0]["status"], 401);
    assert_eq!(rows[0]["error_code"], "INVALID_API_KEY");
    assert!(rows[0]["team_id"].is_null());
    assert_eq!(rows[0]["request_bytes"], body.len());

    // A chunked body (no Content-Length): the bytes read are logged.
    let chunks = [r#"{"title":"chunked","#, r#""content":"in two chunks"}"#];
    let mut request = format!(
        "POST /api/v1/journal-entries HTTP/1.1\r\nhost: api\r\nx-api-key: {}\r\n\
         content-type: application/json\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n",
        team.key
    );
    for chunk in chunks {
        request.push_str(&format!("{:x}\r\n{chunk}\r\n", chunk.len()));
    }
    request.push_str("0\r\n\r\n");
    let address = api.base_url.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    tokio::io::AsyncWriteExt::write_all(&mut stream, request.as_bytes())
        .await
        .unwrap();
    let mut response = String::new();
    tokio::io::AsyncReadExt::read_to_string(&mut stream, &mut response)
        .await
        .unwrap();
    assert!(response.starts_with("HTTP/1.1 201"), "{response}");
    let rows = log_rows(&api, "/api/v1/journal-entries", 2).await;
    let created = rows.iter().find(|row| row["status"] == 201).unwrap();
    assert_eq!(created["request_bytes"], chunks.concat().len());

    // A wrong key: logged, the key redacted.
    let wrong = format!("{}x", team.key);
    send(
        &api,
        reqwest::Method::GET,
        "/api/v1/prompts",
        Some(&wrong),
        None,
    )
    .await;
    // Over quota: logged with USAGE_EXCEEDED.
    sqlx::query("UPDATE subscriptions SET usage_count = 1000000 WHERE api_team_id = $1")
        .bind(team.api_team_id)
        .execute(&api.pool)
        .await
        .unwrap();
    let refused = get(&api, "/api/v1/prompts", &team.key).await;
    assert_eq!(refused.status, 429);
    let rows = log_rows(&api, "/api/v1/prompts", 2).await;
    let codes: Vec<&str> = rows
        .iter()
        .map(|row| row["error_code"].as_str().unwrap())
        .collect();
    assert!(
        codes.contains(&"INVALID_API_KEY") && codes.contains(&"USAGE_EXCEEDED"),
        "{codes:?}"
    );

    let all: Vec<(String,)> = sqlx::query_as("SELECT to_jsonb(r)::text FROM request_logs r")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    let secret = team.key.rsplit('_').next().unwrap();
    for (row,) in &all {
        assert!(
            !row.contains(secret),
            "the key's secret is in a log row: {row}"
        );
    }
    api.stop().await;
}

/// Issue 15: 500 keyless requests with 30 KB of junk headers wrote 500 rows of ~31.6 KB.
/// Now keyless requests write a bounded sample per client IP, and every row is small.
#[tokio::test]
async fn keyless_floods_write_a_bounded_sample_of_small_rows() {
    let api = TestApi::start().await;
    let team = api_team(&api, "flood@rest.test", false).await;
    let junk = "j".repeat(1_500);
    for _ in 0..60 {
        let mut request = api
            .client
            .get(format!("{}/api/v1/nonexistent", api.base_url))
            .header("user-agent", "u".repeat(5_000));
        for index in 0..20 {
            request = request.header(format!("x-junk-{index}"), junk.as_str());
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status().as_u16(), 401);
    }
    // One keyed request after them: the writer keeps order, so once its row is there every
    // row of the flood that was going to be written is too.
    assert_eq!(get(&api, "/api/v1/usage", &team.key).await.status, 200);
    log_rows(&api, "/api/v1/usage", 1).await;
    let sizes: Vec<i32> = sqlx::query_scalar(
        "SELECT octet_length(to_jsonb(r)::text) FROM request_logs r WHERE path = '/api/v1/nonexistent'",
    )
    .fetch_all(&api.pool)
    .await
    .unwrap();
    assert!(
        !sizes.is_empty() && sizes.len() <= 20,
        "{} keyless rows from one IP",
        sizes.len()
    );
    assert!(sizes.iter().all(|size| *size < 4_096), "{sizes:?}");
    api.stop().await;
}

/// Issue 15: a full key sent as `api-key:` (not `x-api-key`) was stored in the log row.
#[tokio::test]
async fn a_key_under_any_header_name_or_in_the_path_is_never_stored() {
    let api = TestApi::start().await;
    let team = api_team(&api, "misplaced@rest.test", false).await;
    let secret = team.key.rsplit('_').next().unwrap().to_owned();
    // First, so its row is written before the ones waited for below (the writer keeps order).
    api.client
        .get(format!("{}/api/v1/{}", api.base_url, team.key))
        .header("x-api-key", team.key.as_str())
        .send()
        .await
        .unwrap();
    for (header, value) in [
        ("api-key", team.key.clone()),
        ("user-agent", format!("sdk/1 {}", team.key)),
        ("x-forwarded-authorization", format!("Bearer {}", team.key)),
    ] {
        api.client
            .get(format!("{}/api/v1/usage", api.base_url))
            .header("x-api-key", team.key.as_str())
            .header(header, value)
            .send()
            .await
            .unwrap();
    }
    log_rows(&api, "/api/v1/usage", 3).await;
    let all: Vec<(String,)> = sqlx::query_as("SELECT to_jsonb(r)::text FROM request_logs r")
        .fetch_all(&api.pool)
        .await
        .unwrap();
    assert_eq!(all.len(), 4);
    for (row,) in &all {
        assert!(
            !row.contains(&secret),
            "the key's secret is in a log row: {row}"
        );
    }
    api.stop().await;
}
