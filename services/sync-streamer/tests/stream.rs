//! The sync stream end to end: the api writes through its outbox, the relay publishes
//! CHANGES, the streamer materializes and streams; clients read SSE over HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::*;
use serde_json::{Value, json};

const QUIET: Duration = Duration::from_millis(1500);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_then_live_filtered_to_the_users_scopes() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let eve = api.login(&unique_email("eve")).await;
    let ada_entry = api
        .call(Some(&ada), "journalEntries/create", entry("ada's"))
        .await
        .ok();
    api.call(Some(&bob), "journalEntries/create", entry("bob's own"))
        .await
        .ok();
    api.call(Some(&eve), "journalEntries/create", entry("eve's own"))
        .await
        .ok();
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let mut team_entry = entry("for the team");
    team_entry["teamId"] = json!(team_id);
    api.call(Some(&bob), "journalEntries/create", team_entry.clone())
        .await
        .ok();
    settle(&api).await;

    // Catch-up: ada's own rows and the team's, nobody else's.
    let mut ada_copy = LocalCopy::default();
    let mut ada_sse = open_stream(&streamer.base_url, &sync_token(&api, &ada).await, None).await;
    assert_eq!(ada_sse.status, 200);
    let first = ada_sse.next(Duration::from_secs(20)).await.unwrap();
    assert!(
        first.retry.is_some(),
        "the first frame carries a retry hint"
    );
    ada_copy.apply(&first);
    drain(&mut ada_sse, &mut ada_copy, QUIET).await;
    assert!(ada_copy.caught_up);
    assert_eq!(ada_copy.live(), expected_rows(&api, ada.user_id).await);
    assert!(ada_copy.rows.contains_key(&format!(
        "journal_entries/{}",
        ada_entry["journalEntryId"].as_str().unwrap()
    )));
    assert!(
        ada_copy
            .rows
            .values()
            .all(|row| row["title"] != "bob's own" && row["title"] != "eve's own"),
        "another user's personal rows leaked"
    );

    let mut bob_copy = LocalCopy::default();
    let mut bob_sse = open_stream(&streamer.base_url, &sync_token(&api, &bob).await, None).await;
    drain(&mut bob_sse, &mut bob_copy, QUIET).await;
    assert_eq!(bob_copy.live(), expected_rows(&api, bob.user_id).await);

    // Live: a team entry reaches both, a personal one only its author, one frame per changeset.
    let shared = api
        .call(Some(&ada), "journalEntries/create", team_entry.clone())
        .await
        .ok();
    api.call(Some(&eve), "journalEntries/create", entry("eve again"))
        .await
        .ok();
    api.call(
        Some(&ada),
        "journalEntries/update",
        json!({"journalEntryId": shared["journalEntryId"], "title": "renamed"}),
    )
    .await
    .ok();
    let kinds = drain(&mut bob_sse, &mut bob_copy, QUIET).await;
    assert_eq!(
        kinds,
        vec!["change", "change"],
        "bob sees the create and the update"
    );
    assert_eq!(bob_copy.live(), expected_rows(&api, bob.user_id).await);
    drain(&mut ada_sse, &mut ada_copy, QUIET).await;
    assert_eq!(ada_copy.live(), expected_rows(&api, ada.user_id).await);

    // Removal: bob leaves the team's scope and is told to drop its rows.
    api.call(
        Some(&ada),
        "teams/removeMember",
        json!({"teamId": team_id, "userId": bob.user_id}),
    )
    .await
    .ok();
    let kinds = drain(&mut bob_sse, &mut bob_copy, QUIET).await;
    assert!(
        kinds.contains(&"scope_removed".to_owned()),
        "bob got {kinds:?}"
    );
    // All that is left of the team is the tombstone of bob's own membership, which comes
    // right after the removal (as it does in a catch-up after a removal at connect).
    let team_rows: Vec<(&String, &Value)> = bob_copy
        .rows
        .iter()
        .filter(|(_, row)| row["teamId"].as_str() == Some(team_id.as_str()))
        .collect();
    assert!(
        team_rows.iter().all(|(key, row)| {
            **key == format!("team_members/{team_id}:{}", bob.user_id)
                && !row["deletedAt"].is_null()
        }),
        "bob still holds the team's rows: {team_rows:?}"
    );
    assert_eq!(bob_copy.live(), expected_rows(&api, bob.user_id).await);
    // Later team writes never reach bob.
    api.call(Some(&ada), "journalEntries/create", team_entry.clone())
        .await
        .ok();
    let kinds = drain(&mut bob_sse, &mut bob_copy, QUIET).await;
    assert!(kinds.is_empty(), "bob got {kinds:?} after leaving");

    // Resuming from a cursor sends only what changed after it.
    let before = bob_copy.cursor.unwrap();
    api.call(Some(&bob), "journalEntries/create", entry("bob later"))
        .await
        .ok();
    settle(&api).await;
    let mut resumed = LocalCopy::default();
    let mut sse = open_stream(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        Some(&before.to_string()),
    )
    .await;
    drain(&mut sse, &mut resumed, QUIET).await;
    let titles: Vec<_> = resumed
        .rows
        .values()
        .map(|row| row["title"].clone())
        .collect();
    assert_eq!(titles, vec![json!("bob later")]);

    streamer.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_clear_errors() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |config| config.sync.max_streams_per_user = 2).await;
    let ada = api.login(&unique_email("ada")).await;
    let token = sync_token(&api, &ada).await;
    let client = reqwest::Client::new();
    let url = format!("{}/sync/stream", streamer.base_url);

    let missing = Sse::open(client.get(&url)).await;
    assert_eq!(missing.status, 401);
    assert_eq!(missing.error.unwrap()["code"], "UNAUTHORIZED");
    let forged = Sse::open(client.get(&url).bearer_auth(format!("{token}x"))).await;
    assert_eq!(forged.status, 401);
    assert_eq!(forged.error.unwrap()["code"], "INVALID_SYNC_TOKEN");
    let session = Sse::open(
        client
            .get(&url)
            .bearer_auth(&api.login(&unique_email("x")).await.token),
    )
    .await;
    assert_eq!(session.status, 401, "a session token is not a sync token");
    // Issue 15: a token for ada, from a made-up session, valid ten years (as anyone holding
    // the secret could sign) is refused for its lifetime; so is one issued in the future.
    let key = sync_protocol::TokenKey::new(secrecy::SecretString::from(
        sync_protocol::DEVELOPMENT_SECRET,
    ));
    let now = chrono::Utc::now().timestamp_millis();
    let mut claims = sync_protocol::SyncClaims {
        user_id: ada.user_id,
        session_id: uuid::Uuid::new_v4(),
        team_ids: Vec::new(),
        issued_at: now,
        expires_at: now + 10 * 365 * 24 * 3600 * 1000,
    };
    let ten_years = Sse::open(client.get(&url).bearer_auth(key.sign(&claims))).await;
    assert_eq!(ten_years.status, 401);
    assert_eq!(
        ten_years.error.unwrap()["code"],
        "SYNC_TOKEN_LIFETIME_TOO_LONG"
    );
    claims.issued_at = now + 3600 * 1000;
    let future = Sse::open(client.get(&url).bearer_auth(key.sign(&claims))).await;
    assert_eq!(future.status, 401);
    assert_eq!(future.error.unwrap()["code"], "SYNC_TOKEN_NOT_YET_VALID");
    let bad_since = Sse::open(client.get(format!("{url}?since=abc")).bearer_auth(&token)).await;
    assert_eq!(bad_since.status, 400);
    assert_eq!(bad_since.error.as_ref().unwrap()["data"]["field"], "since");
    let bad_table = Sse::open(
        client
            .get(format!("{url}?tables=secrets"))
            .bearer_auth(&token),
    )
    .await;
    assert_eq!(bad_table.status, 400);
    assert_eq!(bad_table.error.as_ref().unwrap()["data"]["field"], "tables");
    let bad_event_id = Sse::open(
        client
            .get(&url)
            .bearer_auth(&token)
            .header("last-event-id", "-1"),
    )
    .await;
    assert_eq!(
        bad_event_id.error.as_ref().unwrap()["data"]["field"],
        "Last-Event-ID"
    );

    // The per-user cap.
    let first = open_stream(&streamer.base_url, &token, None).await;
    let second = open_stream(&streamer.base_url, &token, None).await;
    let third = open_stream(&streamer.base_url, &token, None).await;
    assert_eq!((first.status, second.status, third.status), (200, 200, 429));
    assert_eq!(third.error.unwrap()["code"], "TOO_MANY_STREAMS");
    drop(first);
    let freed = test_support::eventually(Duration::from_secs(5), || async {
        open_stream(&streamer.base_url, &token, None).await.status == 200
    })
    .await;
    assert!(freed, "a closed stream frees its place");

    streamer.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_event_source_query_token_and_last_event_id_reconnect() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;
    for index in 0..3 {
        api.call(
            Some(&ada),
            "journalEntries/create",
            entry(&format!("entry {index}")),
        )
        .await
        .ok();
    }
    settle(&api).await;
    let token = sync_token(&api, &ada).await;
    let client = reqwest::Client::new();
    // EventSource cannot set headers: the token travels in the query.
    let url = format!(
        "{}/sync/stream?token={token}&tables=journal_entries",
        streamer.base_url
    );
    let mut copy = LocalCopy::default();
    let mut sse = Sse::open(client.get(&url).header("accept", "text/event-stream")).await;
    drain(&mut sse, &mut copy, QUIET).await;
    assert_eq!(copy.rows.len(), 3, "only journal entries (the filter)");
    assert!(
        copy.rows
            .keys()
            .all(|key| key.starts_with("journal_entries/"))
    );
    drop(sse);
    let last_event_id = copy.cursor.unwrap().to_string();
    api.call(Some(&ada), "journalEntries/create", entry("while away"))
        .await
        .ok();
    api.call(Some(&ada), "users/update", json!({"name": "Ada L."}))
        .await
        .ok();
    // The browser reconnects to the same URL with Last-Event-ID (it overrides `since`).
    let mut sse = Sse::open(
        client
            .get(format!("{url}&since=0"))
            .header("last-event-id", &last_event_id),
    )
    .await;
    let mut resumed = LocalCopy::default();
    drain(&mut sse, &mut resumed, QUIET).await;
    let titles: Vec<Value> = resumed
        .rows
        .values()
        .map(|row| row["title"].clone())
        .collect();
    assert_eq!(titles, vec![json!("while away")]);
    assert!(
        resumed
            .cursors
            .iter()
            .all(|cursor| *cursor >= copy.cursor.unwrap())
    );

    streamer.stop().await;
    api.stop().await;
}

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
    assert_eq!(copy.live(), expected_rows(&api, ada.user_id).await);
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

    streamer.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_disconnected_and_resumes_from_its_cursor() {
    let api = TestApi::start().await;
    let streamer =
        Streamer::start(&api, |config| config.sync.client_buffer_bytes = 64 * 1024).await;
    let ada = api.login(&unique_email("ada")).await;
    let token = sync_token(&api, &ada).await;
    let mut sse = open_stream(&streamer.base_url, &token, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, Duration::from_millis(300)).await;
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
    assert_eq!(copy.live(), expected_rows(&api, ada.user_id).await);

    streamer.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_expiry_and_shutdown_close_streams() {
    let api = TestApi::start_with(|config| config.sync_token_ttl = Duration::from_secs(3)).await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;

    // Expiry.
    let mut sse = open_stream(&streamer.base_url, &sync_token(&api, &ada).await, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, Duration::from_secs(6)).await;
    assert_eq!(copy.closed.as_deref(), Some("token_expired"));

    // Revocation (logout revokes the session the token came from).
    let mut sse = open_stream(&streamer.base_url, &sync_token(&api, &ada).await, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, Duration::from_millis(300)).await;
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
    let mut sse = open_stream(&streamer.base_url, &sync_token(&api, &bob).await, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, Duration::from_millis(300)).await;
    let stopping = tokio::spawn(streamer.stop());
    drain(&mut sse, &mut copy, Duration::from_secs(5)).await;
    assert_eq!(copy.closed.as_deref(), Some("shutdown"));
    tokio::time::timeout(Duration::from_secs(10), stopping)
        .await
        .unwrap()
        .unwrap();
    api.stop().await;
}

/// A member's own membership row lives in the team's scope and in the member's: the member
/// receives each of its versions once (catch-up and live), while the other members still get
/// it from the team's scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_own_membership_row_arrives_once_per_version() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let carol = api.login(&unique_email("carol")).await;
    let team_id = api
        .team_with(&ada, &[(&bob, "member"), (&carol, "member")])
        .await;
    settle(&api).await;
    let bob_membership = format!("team_members/{team_id}:{}", bob.user_id);

    let mut bob_sse = open_stream(&streamer.base_url, &sync_token(&api, &bob).await, None).await;
    let mut bob_copy = LocalCopy::default();
    drain(&mut bob_sse, &mut bob_copy, Duration::from_millis(500)).await;
    let mut carol_sse =
        open_stream(&streamer.base_url, &sync_token(&api, &carol).await, None).await;
    let mut carol_copy = LocalCopy::default();
    drain(&mut carol_sse, &mut carol_copy, Duration::from_millis(500)).await;
    assert_eq!(bob_copy.received[&bob_membership].len(), 1, "catch-up");

    // Live: the role changes (a new version of the row, in both scopes): one transaction,
    // one frame for bob, who follows both.
    let bob_changes_before = bob_copy.kinds.get("change").copied().unwrap_or_default();
    let changed = api
        .call(
            Some(&ada),
            "teams/changeRole",
            json!({"teamId": team_id, "userId": bob.user_id, "role": "admin"}),
        )
        .await;
    assert_eq!(changed.status, 200, "{:?}", changed.json);
    drain(&mut bob_sse, &mut bob_copy, Duration::from_secs(2)).await;
    drain(&mut carol_sse, &mut carol_copy, Duration::from_secs(2)).await;
    let versions = &bob_copy.received[&bob_membership];
    assert_eq!(versions.len(), 2, "bob got versions {versions:?}");
    assert_eq!(
        bob_copy.kinds.get("change").copied().unwrap_or_default(),
        bob_changes_before + 1,
        "the role change reached bob as one frame"
    );
    assert!(versions[1] > versions[0]);
    assert_eq!(
        carol_copy.received[&bob_membership], *versions,
        "the other members still follow the row"
    );
    assert_eq!(bob_copy.live(), expected_rows(&api, bob.user_id).await);

    streamer.stop().await;
    api.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_team_reconnects_the_stream_into_the_teams_rows() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let team_id = api.team_with(&ada, &[]).await;
    for index in 0..3 {
        api.call(
            Some(&ada),
            "journalEntries/create",
            json!({"title": format!("team {index}"), "content": "", "teamId": team_id}),
        )
        .await
        .ok();
    }
    settle(&api).await;
    let mut sse = open_stream(&streamer.base_url, &sync_token(&api, &bob).await, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, Duration::from_millis(500)).await;
    assert_eq!(copy.live(), expected_rows(&api, bob.user_id).await);
    // Bob joins: his stream closes (scopes_changed); his old token is now stale.
    let old_token = sync_token(&api, &bob).await;
    api.call(
        Some(&ada),
        "teams/invite",
        json!({"teamId": team_id, "email": bob.email}),
    )
    .await
    .ok();
    let invitations = api
        .query(Some(&bob), "teams/listInvitations", Value::Null)
        .await
        .ok();
    api.call(
        Some(&bob),
        "teams/acceptInvitation",
        json!({"teamInvitationId": invitations[0]["teamInvitationId"]}),
    )
    .await
    .ok();
    drain(&mut sse, &mut copy, Duration::from_secs(5)).await;
    assert_eq!(copy.closed.as_deref(), Some("scopes_changed"));
    let cursor = copy.cursor.unwrap().to_string();
    let stale = open_stream(&streamer.base_url, &old_token, Some(&cursor)).await;
    assert_eq!(stale.status, 401);
    assert_eq!(stale.error.unwrap()["code"], "SYNC_TOKEN_STALE");
    // With a new token, resuming from the cursor brings the whole team.
    let mut sse = open_stream(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        Some(&cursor),
    )
    .await;
    copy.closed = None;
    copy.caught_up = false;
    drain(&mut sse, &mut copy, QUIET).await;
    let expected = expected_rows(&api, bob.user_id).await;
    assert_eq!(copy.live(), expected);
    assert_eq!(
        expected
            .keys()
            .filter(|key| key.starts_with("journal_entries/"))
            .count(),
        3
    );

    streamer.stop().await;
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
    let mut sse = open_stream(&follower.base_url, &sync_token(&api, &ada).await, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, QUIET).await;
    assert_eq!(copy.live(), expected_rows(&api, ada.user_id).await);

    follower.stop().await;
    api.stop().await;
}

/// A client that saw its removal live (from the tail) and resumes before the materializer has
/// written that removal into the read model: the stream must not take the read model's stale
/// membership for the truth. It once did: the team was served again (later team writes reached
/// the removed member), and a re-join did not close the stream, so the rows dropped at the
/// removal never came back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_resuming_ahead_of_the_read_model_stays_removed() {
    removed_member_resuming_ahead_of_the_read_model(None).await;
}

/// The same when the replica's ring no longer holds what lies between the read model and the
/// client's cursor (it is read from JetStream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_member_resuming_ahead_of_the_read_model_stays_removed_past_the_ring() {
    removed_member_resuming_ahead_of_the_read_model(Some(1)).await;
}

async fn removed_member_resuming_ahead_of_the_read_model(ring_capacity: Option<usize>) {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |config| {
        if let Some(capacity) = ring_capacity {
            config.sync.ring_capacity = capacity;
        }
    })
    .await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let mut team_entry = entry("for the team");
    team_entry["teamId"] = json!(team_id);
    for _ in 0..2 {
        api.call(Some(&ada), "journalEntries/create", team_entry.clone())
            .await
            .ok();
    }
    settle(&api).await;
    // A token that lists the team, as bob's app holds it.
    let token = sync_token(&api, &bob).await;
    let mut sse = open_stream(&streamer.base_url, &token, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, QUIET).await;
    assert_eq!(copy.live(), expected_rows(&api, bob.user_id).await);

    // The materializer stops (another holder takes its lease, as after a takeover that has
    // not written anything yet); the tail goes on.
    sqlx::query(
        "UPDATE sync.leases SET holder = gen_random_uuid(),
                expires_at = now() + interval '1 hour' WHERE name = 'materializer'",
    )
    .execute(&api.pool)
    .await
    .unwrap();
    let stopped = test_support::eventually(Duration::from_secs(30), || async {
        !streamer.leadership.is_leader()
    })
    .await;
    assert!(stopped, "the materializer kept leading");

    // Bob is removed; his stream tells him live, and he drops the team's rows.
    api.call(
        Some(&ada),
        "teams/removeMember",
        json!({"teamId": team_id, "userId": bob.user_id}),
    )
    .await
    .ok();
    let before = copy.cursor.unwrap();
    read_until(&mut sse, &mut copy, "scope_removed").await;
    let tombstone_seq = last_own_changeset(&api, bob.user_id, before).await.unwrap();
    read_to_cursor(&mut sse, &mut copy, tombstone_seq).await;
    // (His own membership's tombstone, which came after the removal, aside.)
    assert!(
        copy.rows
            .values()
            .all(|row| row["teamId"].as_str() != Some(team_id.as_str())
                || !row["deletedAt"].is_null())
    );
    drop(sse);
    let cursor = copy.cursor.unwrap();
    let watermark: i64 = sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert!(
        (watermark as u64) < cursor,
        "the read model must lag behind bob's cursor for this test"
    );

    // He resumes with the same token (it still lists the team) from his cursor.
    let mut sse = open_stream(&streamer.base_url, &token, Some(&cursor.to_string())).await;
    assert_eq!(sse.status, 200);
    drain(&mut sse, &mut copy, QUIET).await;
    // A team write, then one of bob's own once the tail has the team's: the stream delivers in
    // sequence order, so a team frame would come first.
    api.call(Some(&ada), "journalEntries/create", team_entry.clone())
        .await
        .ok();
    let team_write = last_change_seq(&api).await;
    assert!(
        streamer
            .hub
            .wait_for(team_write, Duration::from_secs(30))
            .await
    );
    api.call(Some(&bob), "journalEntries/create", entry("bob's own"))
        .await
        .ok();
    let mut frames = Vec::new();
    while let Some(event) = sse.next(Duration::from_secs(30)).await {
        let kind = copy.apply(&event);
        if kind == "heartbeat" {
            continue;
        }
        frames.push(event.data.clone());
        if event.data.to_string().contains("bob's own") {
            break;
        }
    }
    assert_eq!(
        frames.len(),
        1,
        "after his removal bob got only his own entry, not {frames:?}"
    );

    // The materializer comes back; bob re-joins: his stream closes (scopes_changed) and the
    // reconnect brings the whole team again.
    sqlx::query("DELETE FROM sync.leases WHERE name = 'materializer'")
        .execute(&api.pool)
        .await
        .unwrap();
    api.call(
        Some(&ada),
        "teams/invite",
        json!({"teamId": team_id, "email": bob.email}),
    )
    .await
    .ok();
    let invitations = api
        .query(Some(&bob), "teams/listInvitations", Value::Null)
        .await
        .ok();
    api.call(
        Some(&bob),
        "teams/acceptInvitation",
        json!({"teamInvitationId": invitations[0]["teamInvitationId"]}),
    )
    .await
    .ok();
    read_until(&mut sse, &mut copy, "closed").await;
    assert_eq!(copy.closed.as_deref(), Some("scopes_changed"));
    settle(&api).await;
    let mut sse = open_stream(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        Some(&copy.cursor.unwrap().to_string()),
    )
    .await;
    copy.closed = None;
    copy.caught_up = false;
    drain(&mut sse, &mut copy, QUIET).await;
    assert_eq!(copy.live(), expected_rows(&api, bob.user_id).await);

    streamer.stop().await;
    api.stop().await;
}

/// A removal reaches a client before the changeset that carries the membership's tombstone,
/// with the cursor before it: a client cut off between the two frames is told again when it
/// resumes. It was once sent after that changeset with the changeset's cursor, so a client cut
/// off in between resumed past the removal and kept the team's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_cut_off_mid_way_is_sent_again() {
    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |_| {}).await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let mut team_entry = entry("for the team");
    team_entry["teamId"] = json!(team_id);
    api.call(Some(&ada), "journalEntries/create", team_entry)
        .await
        .ok();
    settle(&api).await;
    let token = sync_token(&api, &bob).await;
    let mut sse = open_stream(&streamer.base_url, &token, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, QUIET).await;
    let holds_team_rows = |copy: &LocalCopy| {
        copy.rows.values().any(|row| {
            row["teamId"].as_str() == Some(team_id.as_str()) && row["deletedAt"].is_null()
        })
    };
    assert!(holds_team_rows(&copy));

    api.call(
        Some(&ada),
        "teams/removeMember",
        json!({"teamId": team_id, "userId": bob.user_id}),
    )
    .await
    .ok();
    settle(&api).await;
    // Bob's connection breaks right after the frame with the cursor of the changeset of his
    // own scope that carries the tombstone.
    let tombstone_seq = last_own_changeset(&api, bob.user_id, copy.cursor.unwrap())
        .await
        .unwrap();
    read_to_cursor(&mut sse, &mut copy, tombstone_seq).await;
    drop(sse);
    // Either he dropped the team's rows already, or his resume tells him to.
    let mut sse = open_stream(
        &streamer.base_url,
        &token,
        Some(&copy.cursor.unwrap().to_string()),
    )
    .await;
    copy.caught_up = false;
    drain(&mut sse, &mut copy, QUIET).await;
    assert!(
        !holds_team_rows(&copy),
        "bob still holds the team's rows: {:?}",
        copy.rows.keys().collect::<Vec<_>>()
    );
    assert_eq!(copy.live(), expected_rows(&api, bob.user_id).await);

    streamer.stop().await;
    api.stop().await;
}

/// A client cut off while a transaction waits for a part, resuming from the cursor of a frame
/// sent past the waiting part: the waiting transaction arrives whole, and what was sent past
/// it never again (live: the changesets come from the hub or JetStream).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_a_waiting_transaction_repeats_nothing_live() {
    resume_past_a_waiting_transaction(Duration::from_secs(30)).await;
}

/// The same, when the read model has passed the waiting transaction (its wait ended) by the
/// time the client resumes: the catch-up leaves out what the cursor lists.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_past_a_waiting_transaction_repeats_nothing_in_the_catch_up() {
    resume_past_a_waiting_transaction(Duration::from_millis(400)).await;
}

async fn resume_past_a_waiting_transaction(transaction_wait: Duration) {
    use messages::sync::v1::{ChangeOp, Changeset, RowChange};
    use prost::Message;

    let api = TestApi::start().await;
    let streamer = Streamer::start(&api, |config| {
        config.sync.transaction_wait = transaction_wait;
    })
    .await;
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    settle(&api).await;
    let token = sync_token(&api, &bob).await;
    let mut sse = open_stream(&streamer.base_url, &token, None).await;
    let mut copy = LocalCopy::default();
    drain(&mut sse, &mut copy, Duration::from_millis(500)).await;
    assert!(copy.caught_up);

    // Changesets as a relay publishes them: a transaction of two parts (bob's scope and the
    // team's) whose second part is late, and another transaction between the two.
    let nats = async_nats::connect(test_support::nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(nats);
    let user_scope = format!("user.{}", bob.user_id);
    let team_scope = format!("team.{team_id}");
    let entry_row = |title: &str, team: Option<&str>| {
        let journal_entry_id = uuid::Uuid::now_v7();
        let data = json!({
            "journalEntryId": journal_entry_id, "userId": bob.user_id, "teamId": team,
            "title": title, "content": "", "version": 1, "deletedAt": null,
            "createdAt": 1, "updatedAt": 1,
        });
        RowChange {
            table: "journal_entries".to_owned(),
            op: ChangeOp::Insert as i32,
            row_id: journal_entry_id.to_string(),
            version: 1,
            row_json: data.to_string().into_bytes(),
        }
    };
    let transaction_id = uuid::Uuid::now_v7().to_string();
    let part = |index: u32, scope: &str, change: RowChange| Changeset {
        scope: scope.to_owned(),
        changes: vec![change],
        written_at_ms: 1,
        transaction_id: transaction_id.clone(),
        part_index: index,
        part_count: 2,
        transaction_scopes: vec![user_scope.clone(), team_scope.clone()],
    };
    let publish = |scope: String, changeset: Changeset| {
        let jetstream = jetstream.clone();
        let subject = format!("{}.changes.{scope}", api.namespace);
        async move {
            jetstream
                .publish(subject, changeset.encode_to_vec().into())
                .await
                .unwrap()
                .await
                .unwrap()
                .sequence
        }
    };
    let first_part = publish(
        user_scope.clone(),
        part(0, &user_scope, entry_row("first part", None)),
    )
    .await;
    let between = publish(
        team_scope.clone(),
        Changeset {
            scope: team_scope.clone(),
            changes: vec![entry_row("between", Some(&team_id))],
            written_at_ms: 1,
            ..Changeset::default()
        },
    )
    .await;
    assert_eq!(between, first_part + 1);

    // The frame past the waiting part: its cursor holds everything before that part, and it.
    read_until(&mut sse, &mut copy, "change").await;
    let cursor = copy.position.clone().unwrap();
    assert_eq!(cursor, format!("{}.{between}", first_part - 1));
    assert_eq!(titles(&copy), ["between"]);
    drop(sse);

    if transaction_wait < Duration::from_secs(5) {
        // The read model stops waiting for the late part and passes both changesets.
        let passed = test_support::eventually(Duration::from_secs(30), || async {
            let watermark: Option<i64> =
                sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
                    .fetch_optional(&api.pool)
                    .await
                    .unwrap();
            watermark.unwrap_or(0) as u64 >= between
        })
        .await;
        assert!(
            passed,
            "the materializer did not pass the split transaction"
        );
    }

    // The client resumes from that cursor, as a browser's EventSource does.
    let mut sse = Sse::open(
        reqwest::Client::new()
            .get(format!("{}/sync/stream", streamer.base_url))
            .bearer_auth(&token)
            .header("last-event-id", &cursor),
    )
    .await;
    let mut resumed = LocalCopy::default();
    drain(&mut sse, &mut resumed, Duration::from_millis(700)).await;
    let late_part = publish(
        team_scope.clone(),
        part(1, &team_scope, entry_row("late part", Some(&team_id))),
    )
    .await;
    read_until(&mut sse, &mut resumed, "change").await;
    drain(&mut sse, &mut resumed, Duration::from_millis(700)).await;
    assert!(
        !titles(&resumed).contains(&"between".to_owned()),
        "the changeset sent before the cut came again: {:?}",
        resumed.received
    );
    let mut got = titles(&resumed);
    got.sort();
    assert_eq!(got, ["first part", "late part"]);
    assert!(
        resumed
            .received
            .values()
            .all(|versions| versions.len() == 1),
        "a row version twice: {:?}",
        resumed.received
    );
    if transaction_wait >= Duration::from_secs(5) {
        // Live, the waiting transaction arrives whole: one frame with both parts.
        assert_eq!(resumed.kinds.get("change"), Some(&1), "{:?}", resumed.kinds);
    }
    assert_eq!(
        resumed.position.as_deref(),
        Some(late_part.to_string().as_str())
    );

    streamer.stop().await;
    api.stop().await;
}

/// The titles of the journal entries in a local copy.
fn titles(copy: &LocalCopy) -> Vec<String> {
    copy.rows
        .iter()
        .filter(|(key, _)| key.starts_with("journal_entries/"))
        .filter_map(|(_, row)| row["title"].as_str().map(str::to_owned))
        .collect()
}

/// Read frames into `copy` until one of type `kind` (within 60 s); returns the types read
/// (heartbeats aside).
async fn read_until(sse: &mut Sse, copy: &mut LocalCopy, kind: &str) -> Vec<String> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let mut kinds = Vec::new();
    loop {
        let event = sse
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap_or_else(|| panic!("no `{kind}` frame within 60 s, after {kinds:?}"));
        let seen = copy.apply(&event);
        if seen == "heartbeat" {
            continue;
        }
        kinds.push(seen.clone());
        if seen == kind {
            return kinds;
        }
    }
}

/// Read frames into `copy` until its cursor reaches `seq` (within 60 s).
async fn read_to_cursor(sse: &mut Sse, copy: &mut LocalCopy, seq: u64) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while copy.cursor.is_none_or(|cursor| cursor < seq) {
        let event = sse
            .next(deadline.saturating_duration_since(tokio::time::Instant::now()))
            .await
            .unwrap_or_else(|| panic!("the cursor did not reach {seq} within 60 s"));
        copy.apply(&event);
    }
}

/// The sequence of the last changeset of `user_id`'s own scope after `after` in CHANGES.
async fn last_own_changeset(api: &TestApi, user_id: uuid::Uuid, after: u64) -> Option<u64> {
    let nats = async_nats::connect(test_support::nats_url()).await.unwrap();
    let stream = async_nats::jetstream::new(nats)
        .get_stream(format!("{}_CHANGES", api.namespace.to_ascii_uppercase()))
        .await
        .unwrap();
    let mut found = None;
    for seq in after + 1..=last_change_seq(api).await {
        let message = stream.get_raw_message(seq).await.unwrap();
        let changeset =
            <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
                .unwrap();
        if changeset.scope == format!("user.{user_id}") {
            found = Some(seq);
        }
    }
    found
}
