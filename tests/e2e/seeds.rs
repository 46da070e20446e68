//! The demo data, seeded through the api's own procedures (`demo-seed`, what `cargo xtask dev`
//! and `cargo xtask db seed` run) against the five services: it reaches the demo user's sync
//! catch-up and the worker's insights, and seeding twice creates nothing the second time.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::Duration;

use e2e_tests::{delete_namespace, dev_login, start_all, unique_namespace, wait_ready_status};
use serde_json::Value;
use test_support::{TestDb, nats_url};

/// The demo user's catch-up from cursor 0: the rows of every `delta` frame, by table, until
/// the frame marked `isLastChunk`.
async fn catch_up(
    client: &reqwest::Client,
    sync_url: &str,
    token: &str,
) -> BTreeMap<String, Vec<Value>> {
    let mut response = client
        .get(format!("{sync_url}/sync/stream?since=0"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let mut tables: BTreeMap<String, Vec<Value>> = BTreeMap::new();
    let mut buffer = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .expect("the catch-up did not end within 30 s")
            .unwrap()
            .expect("the stream ended before the catch-up did");
        buffer.push_str(&String::from_utf8_lossy(&chunk));
        while let Some(end) = buffer.find("\n\n") {
            let event: String = buffer.drain(..end + 2).collect();
            for line in event.lines() {
                let Some(data) = line.strip_prefix("data:") else {
                    continue;
                };
                let frame: Value = serde_json::from_str(data.trim()).unwrap();
                if frame["type"] != "delta" {
                    continue;
                }
                if let Some(table) = frame["table"].as_str() {
                    tables
                        .entry(table.to_owned())
                        .or_default()
                        .extend(frame["data"].as_array().unwrap().iter().cloned());
                }
                if frame["isLastChunk"] == true {
                    return tables;
                }
            }
        }
    }
}

fn titles(rows: &[Value]) -> Vec<String> {
    let mut titles: Vec<String> = rows
        .iter()
        .map(|row| row["title"].as_str().unwrap().to_owned())
        .collect();
    titles.sort();
    titles
}

#[tokio::test]
async fn demo_data_seeded_through_the_api_syncs_reaches_the_worker_and_is_seeded_once() {
    let db = TestDb::new().await;
    let namespace = unique_namespace();
    let services = start_all(db.url(), &nats_url(), &namespace).await;
    wait_ready_status(&services, 200, Duration::from_secs(60)).await;
    let url_of = |name: &str| {
        services
            .iter()
            .find(|service| service.name == name)
            .unwrap()
            .base_url
            .clone()
    };
    let api_url = url_of("api");
    let sync_url = url_of("sync-streamer");
    let client = reqwest::Client::new();

    let first = demo_seed::seed(&client, &api_url).await.unwrap();
    // The team, Sam's membership, two prompts, four entries.
    assert_eq!(first.created, 8, "{first:?}");
    let second = demo_seed::seed(&client, &api_url).await.unwrap();
    assert_eq!(
        second.created, 0,
        "a second run creates nothing: {second:?}"
    );
    assert_eq!(second.team_id, first.team_id);
    assert_eq!(second.demo_user_id, first.demo_user_id);
    let pool = db.pool().await;
    let mut counts = Vec::new();
    for table in [
        "users",
        "teams",
        "team_members",
        "prompts",
        "journal_entries",
    ] {
        let count: i64 = sqlx::query_scalar(&format!("SELECT count(*) FROM api.{table}"))
            .fetch_one(&pool)
            .await
            .unwrap();
        counts.push(count);
    }
    assert_eq!(counts, [2, 1, 2, 2, 4]);
    // Written like a client's writes: one `journal_entry.created` per entry went through the
    // outbox to the worker, which computed the demo user's insights.
    e2e_tests::wait_settled(db.url(), &namespace).await;
    let demo_id: uuid::Uuid = first.demo_user_id.parse().unwrap();
    let insights: Option<(i32, i64, i64)> = sqlx::query_as(
        "SELECT entry_count, word_count, version FROM worker.entry_insights WHERE user_id = $1",
    )
    .bind(demo_id)
    .fetch_optional(&pool)
    .await
    .unwrap();
    let (entry_count, word_count, version) = insights.expect("no insights for the demo user");
    assert_eq!(entry_count, 3);
    assert!(word_count > 0 && version > 0);

    // The demo user's apps get all of it in the sync catch-up.
    let demo = dev_login(
        &client,
        &api_url,
        demo_seed::DEMO_EMAIL,
        demo_seed::DEMO_NAME,
    )
    .await;
    let token =
        test_support::rpc_ok(&client, &api_url, &demo.token, "sync/token", Value::Null).await;
    let sync_token = token["token"].as_str().unwrap().to_owned();
    let mut expected: Vec<String> = demo_seed::DEMO_ENTRIES
        .iter()
        .map(|entry| entry.title.to_owned())
        .chain([demo_seed::TEAM_ENTRY.title.to_owned()])
        .collect();
    expected.sort();
    // The materializer and the worker run on their own: poll until the read model has it.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    let last = loop {
        let tables = catch_up(&client, &sync_url, &sync_token).await;
        let entries = tables.get("journal_entries").cloned().unwrap_or_default();
        let insights = tables.get("entry_insights").cloned().unwrap_or_default();
        let synced = titles(&entries) == expected
            && insights
                .iter()
                .any(|row| row["userId"] == first.demo_user_id.as_str() && row["entryCount"] == 3);
        if synced {
            break tables;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the demo data never reached the catch-up: {tables:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let prompts = last.get("prompts").cloned().unwrap_or_default();
    assert_eq!(prompts.len(), 2, "{prompts:#?}");
    let teams = last.get("teams").cloned().unwrap_or_default();
    assert!(
        teams
            .iter()
            .any(|team| team["name"] == demo_seed::TEAM_NAME),
        "{teams:#?}"
    );

    pool.close().await;
    for service in services {
        service.stop().await.unwrap();
    }
    delete_namespace(&nats_url(), &namespace).await;
}
