//! The open API's REST endpoints against real Postgres and NATS: CRUD in the API team's team
//! scope, validation and malformed bodies as 4xx JSON, the monthly quota and the per-key rate
//! (429 with `Retry-After`), `X-RateLimit-*` headers, and one complete request log row per
//! request, refused ones included, without the key in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{TestApi, TestUser};
use serde_json::{Value, json};
use uuid::Uuid;

/// An app team with API access (on the `pro` plan unless `free`) and one key.
struct ApiTeam {
    owner: TestUser,
    team_id: String,
    api_team_id: Uuid,
    key: String,
}

async fn api_team(api: &TestApi, email: &str, free: bool) -> ApiTeam {
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
struct Reply {
    status: u16,
    headers: reqwest::header::HeaderMap,
    body: Value,
}

impl Reply {
    fn code(&self) -> &str {
        self.body["code"].as_str().unwrap_or_default()
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).map(|value| value.to_str().unwrap())
    }

    fn issue_paths(&self) -> Vec<String> {
        self.body["issues"]
            .as_array()
            .map(|issues| {
                issues
                    .iter()
                    .map(|issue| {
                        issue["path"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|segment| match segment {
                                Value::String(key) => key.clone(),
                                other => other.to_string(),
                            })
                            .collect::<Vec<_>>()
                            .join(".")
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}

async fn send(
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

async fn get(api: &TestApi, path: &str, key: &str) -> Reply {
    send(api, reqwest::Method::GET, path, Some(key), None).await
}

async fn post(api: &TestApi, path: &str, key: &str, body: Value) -> Reply {
    send(
        api,
        reqwest::Method::POST,
        path,
        Some(key),
        Some(body.to_string()),
    )
    .await
}

fn assert_rate_headers(reply: &Reply) {
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
async fn entries_crud_in_the_team_scope_with_events_changesets_and_headers() {
    let api = TestApi::start().await;
    let team = api_team(&api, "owner@rest.test", false).await;
    let other = api_team(&api, "other@rest.test", false).await;
    let changesets_before = api.changesets().await.len();

    let created = post(
        &api,
        "/api/v1/journal-entries",
        &team.key,
        json!({ "title": " From CI ", "content": "hello", "mood": 4, "tags": ["ci"],
                "entryDate": "2026-11-24" }),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_rate_headers(&created);
    let entry = &created.body;
    let id = entry["journalEntryId"].as_str().unwrap().to_owned();
    assert_eq!(entry["title"], "From CI");
    assert_eq!(entry["teamId"], team.team_id.as_str());
    assert_eq!(entry["authorUserId"], team.owner.user_id.to_string());
    assert!(entry["createdAt"].is_i64(), "epoch ms");
    assert_eq!(api.events_named("journal_entry.created").await, 1);

    let read = get(&api, &format!("/api/v1/journal-entries/{id}"), &team.key).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["journalEntryId"], id.as_str());
    assert_rate_headers(&read);

    // Another API team's key sees nothing of it.
    let foreign = get(&api, &format!("/api/v1/journal-entries/{id}"), &other.key).await;
    assert_eq!(foreign.status, 404);
    assert_eq!(foreign.code(), "NOT_FOUND");
    let foreign_patch = send(
        &api,
        reqwest::Method::PATCH,
        &format!("/api/v1/journal-entries/{id}"),
        Some(&other.key),
        Some(json!({ "title": "mine" }).to_string()),
    )
    .await;
    assert_eq!(foreign_patch.status, 404);
    let foreign_list = get(&api, "/api/v1/journal-entries", &other.key).await;
    assert_eq!(foreign_list.body["items"].as_array().unwrap().len(), 0);

    for n in 0..2 {
        post(
            &api,
            "/api/v1/journal-entries",
            &team.key,
            json!({ "title": format!("more {n}"), "content": "" }),
        )
        .await;
    }
    let first = get(&api, "/api/v1/journal-entries?limit=2", &team.key).await;
    assert_eq!(first.status, 200, "{:?}", first.body);
    assert_eq!(first.body["items"].as_array().unwrap().len(), 2);
    let cursor = first.body["nextCursor"].as_str().unwrap().to_owned();
    let second = get(
        &api,
        &format!("/api/v1/journal-entries?limit=2&cursor={cursor}"),
        &team.key,
    )
    .await;
    assert_eq!(second.body["items"].as_array().unwrap().len(), 1);
    assert_eq!(second.body["items"][0]["journalEntryId"], id.as_str());
    assert!(second.body["nextCursor"].is_null());

    let patched = send(
        &api,
        reqwest::Method::PATCH,
        &format!("/api/v1/journal-entries/{id}"),
        Some(&team.key),
        Some(json!({ "title": "Edited", "mood": null, "expectedVersion": 1 }).to_string()),
    )
    .await;
    assert_eq!(patched.status, 200, "{:?}", patched.body);
    assert_eq!(patched.body["title"], "Edited");
    assert!(patched.body["mood"].is_null());
    assert_eq!(patched.body["version"], 2);
    assert_eq!(api.events_named("journal_entry.updated").await, 1);

    let deleted = send(
        &api,
        reqwest::Method::DELETE,
        &format!("/api/v1/journal-entries/{id}"),
        Some(&team.key),
        None,
    )
    .await;
    assert_eq!(deleted.status, 204);
    assert_rate_headers(&deleted);
    assert_eq!(api.events_named("journal_entry.deleted").await, 1);
    let gone = get(&api, &format!("/api/v1/journal-entries/{id}"), &team.key).await;
    assert_eq!(gone.status, 404);
    // The app sees the soft-deleted row with its tombstone.
    let in_app = api
        .query(
            Some(&team.owner),
            "journalEntries/get",
            json!({ "journalEntryId": id }),
        )
        .await
        .ok();
    assert!(in_app["deletedAt"].is_i64());
    // insert + update + delete of the first entry, two more inserts: one changeset each.
    assert_eq!(api.changesets().await.len(), changesets_before + 5);

    api.stop().await;
}

#[tokio::test]
async fn prompts_and_usage() {
    let api = TestApi::start().await;
    let team = api_team(&api, "prompts@rest.test", false).await;
    let created = post(
        &api,
        "/api/v1/prompts",
        &team.key,
        json!({ "text": "What went well?",
                "schedule": { "time": "09:00", "timezone": "Europe/Paris", "weekdays": [1, 3] } }),
    )
    .await;
    assert_eq!(created.status, 201, "{:?}", created.body);
    assert_eq!(created.body["teamId"], team.team_id.as_str());
    let listed = get(&api, "/api/v1/prompts", &team.key).await;
    assert_eq!(listed.status, 200);
    assert_eq!(listed.body["items"].as_array().unwrap().len(), 1);
    let bad = post(&api, "/api/v1/prompts", &team.key, json!({ "text": "" })).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.issue_paths(), ["text"]);

    let usage = get(&api, "/api/v1/usage", &team.key).await;
    assert_eq!(usage.status, 200, "{:?}", usage.body);
    assert_eq!(usage.body["planId"], "pro");
    assert_eq!(usage.body["limit"], 1_000_000);
    assert_eq!(
        usage.body["used"], 4,
        "every request counts, this one included"
    );
    assert_eq!(usage.body["remaining"], 1_000_000 - 4);
    assert!(
        usage.body["periodStart"].as_i64().unwrap() < usage.body["periodEnd"].as_i64().unwrap()
    );
    assert_eq!(usage.header("x-ratelimit-remaining"), Some("999996"));
    api.stop().await;
}

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

/// The served OpenAPI document equals the committed snapshot; `UPDATE_SNAPSHOTS=1` rewrites
/// the snapshot (so a change to the contract shows up in review).
#[tokio::test]
async fn the_openapi_document_matches_its_snapshot_and_is_served_without_a_key() {
    let api = TestApi::start().await;
    let served = send(
        &api,
        reqwest::Method::GET,
        "/api/v1/openapi.json",
        None,
        None,
    )
    .await;
    assert_eq!(served.status, 200);
    assert_eq!(served.body["openapi"], "3.1.0");
    assert!(served.header("x-ratelimit-limit").is_none(), "not metered");
    let generated = serde_json::to_value(api::routers::open_api::docs::document()).unwrap();
    assert_eq!(served.body, generated);

    // Every endpoint documents the key and its errors with the error schema.
    for (path, operations) in generated["paths"].as_object().unwrap() {
        for (method, operation) in operations.as_object().unwrap() {
            let responses = operation["responses"].as_object().unwrap();
            for status in ["401", "403", "429"] {
                assert_eq!(
                    responses[status]["content"]["application/json"]["schema"]["$ref"],
                    "#/components/schemas/ErrorBody",
                    "{method} {path} {status}"
                );
            }
            assert_eq!(
                operation["security"][0]["api_key"],
                json!([]),
                "{method} {path}"
            );
        }
    }
    assert_eq!(
        generated["components"]["securitySchemes"]["api_key"]["name"],
        "x-api-key"
    );

    let docs = api
        .client
        .get(format!("{}/api/docs", api.base_url))
        .send()
        .await
        .unwrap();
    assert_eq!(docs.status(), 200);
    // The page loads the vendored reference, which reads the document (tests/docs_page.rs).
    assert!(
        docs.text()
            .await
            .unwrap()
            .contains(api::routers::open_api::docs::SCALAR_BUNDLE_PATH)
    );

    let snapshot =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/snapshots/openapi.json");
    let pretty = format!("{}\n", serde_json::to_string_pretty(&generated).unwrap());
    if std::env::var("UPDATE_SNAPSHOTS").as_deref() == Ok("1") {
        std::fs::create_dir_all(snapshot.parent().unwrap()).unwrap();
        std::fs::write(&snapshot, &pretty).unwrap();
    }
    let committed = std::fs::read_to_string(&snapshot)
        .expect("tests/snapshots/openapi.json (run with UPDATE_SNAPSHOTS=1 to create it)");
    assert!(
        committed == pretty,
        "the OpenAPI document changed; review it and run with UPDATE_SNAPSHOTS=1"
    );
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
