//! Request logs against real Postgres: the batch writer (every row written, backpressure
//! instead of loss, drained at the end, no secrets stored) and `logs.list` (roles, filters,
//! keyset pages).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::net::IpAddr;
use std::time::Duration;

use api::modules::logs::types::RedactedHeaders;
use api::modules::logs::types::RequestLog;
use api::modules::logs::{self as request_logs};
use axum::http::{HeaderMap, HeaderValue};
use chrono::{DateTime, Utc};
use common::TestApi;
use serde_json::{Value, json};
use uuid::Uuid;

fn log(team_id: Uuid, at: DateTime<Utc>, status: u16, path: &str, prefix: &str) -> RequestLog {
    let mut headers = HeaderMap::new();
    headers.insert(
        "x-api-key",
        HeaderValue::from_str(&format!("{prefix}_TOPSECRETKEYMATERIAL")).unwrap(),
    );
    headers.insert("user-agent", HeaderValue::from_static("integration/1.0"));
    RequestLog {
        request_log_id: Uuid::now_v7(),
        created_at: at,
        team_id: Some(domain::ids::TeamId::from_uuid(team_id)),
        api_team_id: None,
        api_key_prefix: Some(prefix.to_owned()),
        method: "POST".to_owned(),
        path: path.to_owned(),
        status,
        duration: Duration::from_micros(1_234),
        client_ip: "2001:db8::7".parse::<IpAddr>().unwrap(),
        user_agent: Some("integration/1.0".to_owned()),
        request_id: Some(Uuid::new_v4().to_string()),
        request_bytes: 42,
        response_bytes: 420,
        error_code: (status >= 400).then(|| "USAGE_EXCEEDED".to_owned()),
        request_headers: RedactedHeaders::from_headers(&headers, Some(prefix)),
    }
}

/// `ids` at these positions.
fn pick(ids: &[String], positions: &[usize]) -> Vec<String> {
    positions
        .iter()
        .map(|&position| ids[position].clone())
        .collect()
}

async fn count(api: &TestApi, team_id: Uuid) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM request_logs WHERE team_id = $1")
        .bind(team_id)
        .fetch_one(&api.pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_row_is_written_in_batches_and_the_writer_drains_at_the_end() {
    let api = TestApi::start().await;
    let team_id = Uuid::new_v4();
    let (sink, writer) = request_logs::spawn_writer(api.pool.clone(), 64);
    let now = Utc::now();
    let senders: Vec<_> = (0..8)
        .map(|task| {
            let sink = sink.clone();
            tokio::spawn(async move {
                for n in 0..125 {
                    let at = now + chrono::TimeDelta::microseconds(task * 1_000 + n);
                    sink.record(log(
                        team_id,
                        at,
                        200,
                        "/api/v1/journal-entries",
                        "jk_aaaa1111",
                    ))
                    .await;
                }
            })
        })
        .collect();
    for sender in senders {
        sender.await.unwrap();
    }
    drop(sink);
    writer.finish(Duration::from_secs(10)).await;
    assert_eq!(count(&api, team_id).await, 1_000);

    let stored: Vec<(Value, String)> = sqlx::query_as(
        "SELECT request_headers, host(client_ip) FROM request_logs WHERE team_id = $1 LIMIT 5",
    )
    .bind(team_id)
    .fetch_all(&api.pool)
    .await
    .unwrap();
    for (headers, client_ip) in stored {
        assert!(!headers.to_string().contains("TOPSECRET"), "{headers}");
        assert_eq!(headers["x-api-key"], "jk_aaaa1111…[redacted]");
        assert_eq!(headers["user-agent"], "integration/1.0");
        assert_eq!(client_ip, "2001:db8::7");
    }
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_database_slows_callers_down_and_loses_nothing() {
    let api = TestApi::start().await;
    let team_id = Uuid::new_v4();
    let (sink, writer) = request_logs::spawn_writer(api.pool.clone(), 4);

    // Hold the table: the writer's insert waits, its queue of 4 fills.
    let mut blocker = api.pool.begin().await.unwrap();
    sqlx::query("LOCK TABLE request_logs IN ACCESS EXCLUSIVE MODE")
        .execute(&mut *blocker)
        .await
        .unwrap();
    let recorded = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producer = {
        let sink = sink.clone();
        let recorded = std::sync::Arc::clone(&recorded);
        tokio::spawn(async move {
            for n in 0..20 {
                let at = Utc::now() + chrono::TimeDelta::microseconds(n);
                sink.record(log(team_id, at, 200, "/api/v1/prompts", "jk_bbbb2222"))
                    .await;
                recorded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            }
        })
    };
    // Wait until the writer's INSERT waits for the lock and the producer has filled the
    // queue behind it (its first batch, then 4 more); then the producer must be stuck.
    let stalled = test_support::eventually(Duration::from_secs(30), || async {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity
              WHERE wait_event_type = 'Lock' AND query ILIKE 'INSERT INTO request_logs%'",
        )
        .fetch_one(&api.pool)
        .await
        .unwrap();
        waiting > 0 && recorded.load(std::sync::atomic::Ordering::SeqCst) >= 5
    })
    .await;
    assert!(stalled, "the writer never waited for the locked table");
    assert!(
        !producer.is_finished() && recorded.load(std::sync::atomic::Ordering::SeqCst) < 20,
        "recording 20 rows through a queue of 4 must wait while the table is locked"
    );
    blocker.rollback().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), producer)
        .await
        .expect("the producer resumes once the writer catches up")
        .unwrap();
    drop(sink);
    writer.finish(Duration::from_secs(10)).await;
    assert_eq!(count(&api, team_id).await, 20, "no row was dropped");
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn team_admins_list_their_logs_newest_first_with_filters() {
    let api = TestApi::start().await;
    let (owner, admin, member, outsider, team_id) = api.team_of_every_role().await;
    let team_id: Uuid = team_id.parse().unwrap();
    let other_team = Uuid::new_v4();

    let (sink, writer) = request_logs::spawn_writer(api.pool.clone(), 16);
    let start = DateTime::from_timestamp_millis(Utc::now().timestamp_millis()).unwrap();
    let at = |seconds: i64| start + chrono::TimeDelta::seconds(seconds);
    let rows = [
        log(team_id, at(0), 200, "/api/v1/journal-entries", "jk_key1"),
        log(team_id, at(1), 201, "/api/v1/journal-entries", "jk_key2"),
        log(team_id, at(2), 429, "/api/v1/journal-entries", "jk_key1"),
        log(team_id, at(3), 200, "/api/v1/prompts", "jk_key1"),
        log(team_id, at(4), 401, "/api/v1/usage", "jk_key2"),
        log(other_team, at(5), 200, "/api/v1/usage", "jk_key9"),
    ];
    let ids: Vec<String> = rows
        .iter()
        .map(|row| row.request_log_id.to_string())
        .collect();
    for row in rows {
        sink.record(row).await;
    }
    drop(sink);
    writer.finish(Duration::from_secs(10)).await;

    let list = |input: Value| {
        let api = &api;
        let admin = &admin;
        async move {
            let page = api.query(Some(admin), "logs/list", input).await.ok();
            let found: Vec<String> = page["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|item| item["requestLogId"].as_str().unwrap().to_owned())
                .collect();
            (found, page)
        }
    };
    let (all, page) = list(json!({"teamId": team_id})).await;
    assert_eq!(
        all,
        pick(&ids, &[4, 3, 2, 1, 0]),
        "newest first, own team only"
    );
    let first = &page["items"][0];
    assert_eq!(first["status"], 401);
    assert_eq!(first["path"], "/api/v1/usage");
    assert_eq!(first["apiKeyPrefix"], "jk_key2");
    assert_eq!(first["clientIp"], "2001:db8::7");
    assert_eq!(first["durationUs"], 1_234);
    assert_eq!(first["errorCode"], "USAGE_EXCEEDED");
    assert_eq!(first["createdAt"], at(4).timestamp_millis());
    assert!(!page.to_string().contains("TOPSECRET"));

    assert_eq!(
        list(json!({"teamId": team_id, "status": 200})).await.0,
        pick(&ids, &[3, 0])
    );
    assert_eq!(
        list(json!({"teamId": team_id, "statusClass": 4})).await.0,
        pick(&ids, &[4, 2])
    );
    assert_eq!(
        list(json!({"teamId": team_id, "pathPrefix": "/api/v1/journal"}))
            .await
            .0,
        pick(&ids, &[2, 1, 0])
    );
    assert_eq!(
        list(json!({"teamId": team_id, "apiKeyPrefix": "jk_key2"}))
            .await
            .0,
        pick(&ids, &[4, 1])
    );
    assert_eq!(
        list(json!({"teamId": team_id, "from": at(1).timestamp_millis(), "to": at(3).timestamp_millis()}))
            .await
            .0,
        pick(&ids, &[2, 1])
    );

    // Pages of two: stable, complete, and the last one says so.
    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut input = json!({"teamId": team_id, "limit": 2});
        if let Some(cursor) = &cursor {
            input["cursor"] = json!(cursor);
        }
        let (found, page) = list(input).await;
        paged.extend(found);
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, all);

    // The owner reads them too; a member may not; an outsider does not learn the team exists.
    let by_owner = api
        .query(Some(&owner), "logs/list", json!({"teamId": team_id}))
        .await;
    assert_eq!(by_owner.status, 200);
    let by_member = api
        .query(Some(&member), "logs/list", json!({"teamId": team_id}))
        .await;
    assert_eq!((by_member.status, by_member.code()), (403, "FORBIDDEN"));
    let by_outsider = api
        .query(Some(&outsider), "logs/list", json!({"teamId": team_id}))
        .await;
    assert_eq!((by_outsider.status, by_outsider.code()), (404, "NOT_FOUND"));

    let invalid = api
        .query(
            Some(&admin),
            "logs/list",
            json!({"teamId": team_id, "limit": 0, "statusClass": 9, "cursor": "nope!", "from": 5, "to": 1}),
        )
        .await;
    assert_eq!(invalid.status, 400);
    assert_eq!(
        invalid.issue_paths(),
        ["limit", "cursor", "statusClass", "to"]
    );
    api.stop().await;
}
