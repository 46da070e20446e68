//! The walking skeleton, end to end with the real `api` and `worker` binaries: an RPC call
//! writes an entry and its `journal_entry.created` event in one transaction; the relay
//! publishes it; the worker's handler records it in the `worker` schema.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::process::Command;
use std::time::Duration;

use e2e_tests::ServiceProcess;
use serde_json::{Value, json};
use test_support::{TestDb, binary, eventually, nats_url};

async fn rpc(
    client: &reqwest::Client,
    base: &str,
    procedure: &str,
    token: Option<&str>,
    input: Value,
) -> (u16, Value) {
    let mut request = client
        .post(format!("{base}/rpc/{procedure}"))
        .json(&json!({ "json": input }));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn entry_created_over_rpc_reaches_the_worker_through_the_outbox_and_jetstream() {
    let db = TestDb::new().await;
    let namespace = e2e_tests::unique_namespace();
    let dev_login = [("AUTH_DEV_LOGIN", "true".to_owned())];
    let api = ServiceProcess::start("api", db.url(), &namespace, &dev_login).await;
    let worker = ServiceProcess::start("worker", db.url(), &namespace, &[]).await;
    let client = reqwest::Client::new();

    let login = e2e_tests::dev_login(&client, &api.base_url, "ada@example.com", "Ada").await;
    let token = login.token;
    let user_id = login.user_id.to_string();

    let (status, body) = rpc(
        &client,
        &api.base_url,
        "journalEntries/create",
        Some(&token),
        json!({"title": "First entry", "content": "Hello", "mood": 4, "tags": ["start"], "entryDate": "2026-11-24"}),
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let entry = &body["json"];
    assert_eq!(
        entry["authorUserId"],
        user_id.as_str(),
        "the author comes from the session"
    );
    assert_eq!(entry["version"], 1);
    assert!(
        entry["createdAt"].is_i64(),
        "timestamps are epoch milliseconds: {entry}"
    );
    let journal_entry_id = entry["journalEntryId"].as_str().unwrap().to_owned();

    let pool = db.pool().await;
    let recorded = eventually(Duration::from_secs(20), || {
        let pool = pool.clone();
        let journal_entry_id = journal_entry_id.clone();
        async move {
            sqlx::query_scalar::<_, i64>(
                "SELECT count(*) FROM worker.journal_entry_activity WHERE journal_entry_id::text = $1",
            )
            .bind(journal_entry_id)
            .fetch_one(&pool)
            .await
            .unwrap()
                == 1
        }
    })
    .await;
    assert!(recorded, "the worker never recorded the entry");
    let (author, message_id): (String, String) = sqlx::query_as(
        "SELECT a.author_user_id::text, a.message_id FROM worker.journal_entry_activity a",
    )
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(author, user_id);
    // The relay deletes what it publishes: the outbox id is in the stream, as Nats-Msg-Id.
    let jetstream = async_nats::jetstream::new(async_nats::connect(nats_url()).await.unwrap());
    let events = jetstream
        .get_stream(format!("{}_EVENTS", namespace.to_ascii_uppercase()))
        .await
        .unwrap();
    let published = events
        .get_last_raw_message_by_subject(&format!("{namespace}.events.journal_entry.created"))
        .await
        .unwrap();
    let outbox_id = published
        .headers
        .get(bus::headers::MESSAGE_ID)
        .unwrap()
        .as_str()
        .to_owned();
    assert_eq!(
        message_id, outbox_id,
        "the message id the worker saw is the outbox id"
    );
    let left: i64 =
        sqlx::query_scalar("SELECT count(*) FROM api.outbox WHERE outbox_id::text = $1")
            .bind(&outbox_id)
            .fetch_one(&pool)
            .await
            .unwrap();
    assert_eq!(left, 0, "a published row is deleted");

    // Client mistakes are 4xx in oRPC's error shape, never 500.
    let (status, body) = rpc(
        &client,
        &api.base_url,
        "journalEntries/create",
        Some(&token),
        json!({"title": "", "content": "x"}),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["json"]["code"], "BAD_REQUEST");
    assert_eq!(body["json"]["data"]["issues"][0]["path"][0], "title");
    let (status, body) = rpc(
        &client,
        &api.base_url,
        "journalEntries/create",
        None,
        json!({"title": "t", "content": "x"}),
    )
    .await;
    assert_eq!(
        (status, body["json"]["code"].as_str()),
        (401, Some("UNAUTHORIZED"))
    );
    let (status, _) = rpc(
        &client,
        &api.base_url,
        "journalEntries/create",
        Some("not-a-session"),
        json!({"title": "t", "content": "x"}),
    )
    .await;
    assert_eq!(status, 401);
    let (status, body) = rpc(
        &client,
        &api.base_url,
        "nothing/here",
        Some(&token),
        json!({}),
    )
    .await;
    assert_eq!(
        (status, body["json"]["code"].as_str()),
        (404, Some("NOT_FOUND"))
    );
    let malformed = client
        .post(format!("{}/rpc/journalEntries/create", api.base_url))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(malformed.status(), 400);

    // Nothing failed, so the operator command lists no dead letters.
    let listing = Command::new(binary("worker"))
        .args(["dead-letters", "list"])
        .env("DATABASE_URL", db.url())
        .output()
        .unwrap();
    assert!(
        listing.status.success(),
        "{}",
        String::from_utf8_lossy(&listing.stderr)
    );
    assert!(String::from_utf8_lossy(&listing.stdout).contains("0 dead letter(s)"));

    api.stop().await;
    worker.stop().await;
    e2e_tests::delete_namespace(&nats_url(), &namespace).await;
}
