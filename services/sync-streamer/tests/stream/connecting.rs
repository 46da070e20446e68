//! Opening a stream: the delta then live frames of the user's scopes, bad requests, and the
//! browser's `EventSource` (query token, `Last-Event-ID`).

use std::time::Duration;

use serde_json::{Value, json};

use crate::common::*;
use crate::fixtures::{
    QUIET, assert_in_sync, follow, remove_member, start, stop, team_entry, users,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delta_then_live_filtered_to_the_users_scopes() {
    let (api, streamer) = start().await;
    let [ada, bob, eve] = users(&api, ["ada", "bob", "eve"]).await;
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
    let team_entry = team_entry("for the team", &team_id);
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
    assert_in_sync(&ada_copy, &api, &ada).await;
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

    let (mut bob_sse, mut bob_copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        None,
        QUIET,
    )
    .await;
    assert_in_sync(&bob_copy, &api, &bob).await;

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
    assert_in_sync(&bob_copy, &api, &bob).await;
    drain(&mut ada_sse, &mut ada_copy, QUIET).await;
    assert_in_sync(&ada_copy, &api, &ada).await;

    // Removal: bob leaves the team's scope and is told to drop its rows.
    remove_member(&api, &ada, &team_id, &bob).await;
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
    assert_in_sync(&bob_copy, &api, &bob).await;
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
    let (_sse, resumed) = follow(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        Some(&before.to_string()),
        QUIET,
    )
    .await;
    let titles: Vec<_> = resumed
        .rows
        .values()
        .map(|row| row["title"].clone())
        .collect();
    assert_eq!(titles, vec![json!("bob later")]);

    stop(streamer, api).await;
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
        user_id: domain::ids::UserId::from_uuid(ada.user_id),
        session_id: domain::ids::SessionId::generate(),
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

    stop(streamer, api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn browser_event_source_query_token_and_last_event_id_reconnect() {
    let (api, streamer) = start().await;
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

    stop(streamer, api).await;
}
