//! Streams that are reset or closed (expired cursors, slow clients, revocation, expiry,
//! shutdown) and a replica taking the materializer over.

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::fixtures::{QUIET, assert_in_sync, follow, stop};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_cursor_gets_a_reset_then_a_full_catch_up() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |config| {
        config.sync.tombstone_retention = Duration::from_secs(1);
        config.sync.purge_interval = Duration::from_secs(1);
    })
    .await;
    let ada = api.login(&unique_email("ada")).await;
    let kept = api
        .call(Some(&ada), "journalEntries/create", entry("kept"))
        .await
        .ok();
    let gone = api
        .call(Some(&ada), "journalEntries/create", entry("gone"))
        .await
        .ok();
    settle(&api).await;
    let cursor = last_change_seq(&api).await;
    api.call(
        Some(&ada),
        "journalEntries/delete",
        json!({"journalEntryId": gone["journalEntryId"]}),
    )
    .await
    .ok();
    settle(&api).await;
    let purged = test_support::eventually(Duration::from_secs(15), || async {
        let horizon: i64 = sqlx::query_scalar("SELECT horizon FROM sync.materializer_state")
            .fetch_one(&api.pool)
            .await
            .unwrap();
        horizon as u64 > cursor
    })
    .await;
    assert!(purged, "the tombstone was purged and the horizon moved");

    let token = sync_token(&api, &ada).await;
    let mut sse = open_stream(&streamer.base_url, &token, Some(&cursor.to_string())).await;
    let mut copy = LocalCopy::default();
    // The client held both entries.
    copy.rows.insert(
        format!(
            "journal_entries/{}",
            gone["journalEntryId"].as_str().unwrap()
        ),
        gone.clone(),
    );
    let kinds = drain(&mut sse, &mut copy, QUIET).await;
    assert_eq!(
        kinds.first().map(String::as_str),
        Some("reset"),
        "{kinds:?}"
    );
    assert!(copy.caught_up);
    assert_in_sync(&copy, &api, &ada).await;
    assert!(copy.rows.contains_key(&format!(
        "journal_entries/{}",
        kept["journalEntryId"].as_str().unwrap()
    )));

    // A cursor after the horizon is not reset.
    let mut sse = open_stream(
        &streamer.base_url,
        &token,
        Some(&copy.cursor.unwrap().to_string()),
    )
    .await;
    let mut again = LocalCopy::default();
    let kinds = drain(&mut sse, &mut again, QUIET).await;
    assert!(!kinds.contains(&"reset".to_owned()), "{kinds:?}");

    stop(streamer, api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_and_resumes_from_its_cursor() {
    let api = TestApi::start().await;
    let streamer =
        Streamer::start(&api, |config| config.sync.client_buffer_bytes = 64 * 1024).await;
    let ada = api.login(&unique_email("ada")).await;
    let token = sync_token(&api, &ada).await;
    let (mut sse, mut copy) =
        follow(&streamer.base_url, &token, None, Duration::from_millis(300)).await;
    // The client stops reading while the api writes ~20 MB of entries.
    let big = "x".repeat(90_000);
    for index in 0..220 {
        api.call(
            Some(&ada),
            "journalEntries/create",
            json!({"title": format!("big {index}"), "content": big}),
        )
        .await
        .ok();
    }
    settle(&api).await;
    let kinds = drain(&mut sse, &mut copy, Duration::from_secs(5)).await;
    assert_eq!(
        copy.closed.as_deref(),
        Some("slow_client"),
        "frames: {}",
        kinds.len()
    );
    assert!(copy.live().len() < 221, "it was cut off before the end");
    // It resumes from its cursor and converges.
    let mut sse = open_stream(
        &streamer.base_url,
        &token,
        Some(&copy.cursor.unwrap().to_string()),
    )
    .await;
    drain(&mut sse, &mut copy, QUIET).await;
    assert_in_sync(&copy, &api, &ada).await;

    stop(streamer, api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_expiry_and_shutdown_close_streams() {
    let api = TestApi::start_with(|config| config.sync_token_ttl = Duration::from_secs(3)).await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;

    // Expiry.
    let (_sse, copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &ada).await,
        None,
        Duration::from_secs(6),
    )
    .await;
    assert_eq!(copy.closed.as_deref(), Some("token_expired"));

    // Revocation (logout revokes the session the token came from).
    let (mut sse, mut copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &ada).await,
        None,
        Duration::from_millis(300),
    )
    .await;
    let token = sync_token(&api, &ada).await;
    api.call(Some(&ada), "auth/logout", Value::Null).await.ok();
    drain(&mut sse, &mut copy, Duration::from_secs(5)).await;
    assert_eq!(copy.closed.as_deref(), Some("session_revoked"));
    // A token of the revoked session is refused from now on.
    let refused = open_stream(&streamer.base_url, &token, None).await;
    assert_eq!(refused.status, 401);
    assert_eq!(refused.error.unwrap()["code"], "SESSION_REVOKED");

    // Shutdown.
    let bob = api.login(&unique_email("bob")).await;
    let (mut sse, mut copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        None,
        Duration::from_millis(300),
    )
    .await;
    let stopping = tokio::spawn(streamer.stop());
    drain(&mut sse, &mut copy, Duration::from_secs(5)).await;
    assert_eq!(copy.closed.as_deref(), Some("shutdown"));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_replica_takes_the_materializer_over_when_the_leader_dies() {
    let api = TestApi::start().await;
    let first = Streamer::start(&api, |_| {}).await;
    let second = Streamer::start(&api, |_| {}).await;
    let leaders = test_support::eventually(Duration::from_secs(30), || async {
        first.leadership.is_leader() != second.leadership.is_leader()
    })
    .await;
    assert!(leaders, "exactly one leader");
    let (leader, follower) = if first.leadership.is_leader() {
        (first, second)
    } else {
        (second, first)
    };
    let ada = api.login(&unique_email("ada")).await;
    api.call(Some(&ada), "journalEntries/create", entry("before"))
        .await
        .ok();
    settle(&api).await;

    let killed_at = std::time::Instant::now();
    leader.kill();
    // Generous for a busy machine; the takeover time (about one lease) is a benchmark's
    // business.
    let took_over = test_support::eventually(Duration::from_secs(30), || async {
        follower.leadership.is_leader()
    })
    .await;
    assert!(took_over, "no takeover within 30 s");
    println!("takeover after {:?}", killed_at.elapsed());
    api.call(Some(&ada), "journalEntries/create", entry("after"))
        .await
        .ok();
    settle(&api).await;
    let (_sse, copy) = follow(
        &follower.base_url,
        &sync_token(&api, &ada).await,
        None,
        QUIET,
    )
    .await;
    assert_in_sync(&copy, &api, &ada).await;

    follower.stop().await;
    api.stop().await;
}
