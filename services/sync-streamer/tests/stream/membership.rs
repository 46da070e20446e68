//! Membership changes on a stream: a member's own row, joining a team, and a removal that a
//! resuming client must not lose.

use std::collections::HashSet;
use std::time::Duration;

use serde_json::{Value, json};
use sync_protocol::changes::Scope;
use sync_protocol::cursor::Cursor;
use sync_streamer::catchup::CatchUp;

use crate::common::*;
use crate::fixtures::{
    QUIET, assert_in_sync, follow, invite_and_accept, read_until, remove_member, start, stop,
    team_entry, users,
};

/// A member's own membership row lives in the team's scope and in the member's: the member
/// receives each of its versions once (catch-up and live), while the other members still get
/// it from the team's scope.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_members_own_membership_row_arrives_once_per_version() {
    let (api, streamer) = start().await;
    let [ada, bob, carol] = users(&api, ["ada", "bob", "carol"]).await;
    let team_id = api
        .team_with(&ada, &[(&bob, "member"), (&carol, "member")])
        .await;
    settle(&api).await;
    let bob_membership = format!("team_members/{team_id}:{}", bob.user_id);

    let (mut bob_sse, mut bob_copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        None,
        Duration::from_millis(500),
    )
    .await;
    let (mut carol_sse, mut carol_copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &carol).await,
        None,
        Duration::from_millis(500),
    )
    .await;
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
    assert_in_sync(&bob_copy, &api, &bob).await;

    stop(streamer, api).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_team_reconnects_the_stream_into_the_teams_rows() {
    let (api, streamer) = start().await;
    let [ada, bob] = users(&api, ["ada", "bob"]).await;
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
    let (mut sse, mut copy) = follow(
        &streamer.base_url,
        &sync_token(&api, &bob).await,
        None,
        Duration::from_millis(500),
    )
    .await;
    assert_in_sync(&copy, &api, &bob).await;
    // Bob joins: his stream closes (scopes_changed); his old token is now stale.
    let old_token = sync_token(&api, &bob).await;
    invite_and_accept(&api, &ada, &team_id, &bob).await;
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

    stop(streamer, api).await;
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
    let [ada, bob] = users(&api, ["ada", "bob"]).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let team_entry = team_entry("for the team", &team_id);
    for _ in 0..2 {
        api.call(Some(&ada), "journalEntries/create", team_entry.clone())
            .await
            .ok();
    }
    settle(&api).await;
    // A token that lists the team, as bob's app holds it.
    let token = sync_token(&api, &bob).await;
    let (mut sse, mut copy) = follow(&streamer.base_url, &token, None, QUIET).await;
    assert_in_sync(&copy, &api, &bob).await;

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
    remove_member(&api, &ada, &team_id, &bob).await;
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
    invite_and_accept(&api, &ada, &team_id, &bob).await;
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
    assert_in_sync(&copy, &api, &bob).await;

    stop(streamer, api).await;
}

/// A removal reaches a client before the changeset that carries the membership's tombstone,
/// with the cursor before it: a client cut off between the two frames is told again when it
/// resumes. It was once sent after that changeset with the changeset's cursor, so a client cut
/// off in between resumed past the removal and kept the team's rows.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removal_cut_off_mid_way_is_sent_again() {
    let (api, streamer) = start().await;
    let [ada, bob] = users(&api, ["ada", "bob"]).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let team_entry = team_entry("for the team", &team_id);
    api.call(Some(&ada), "journalEntries/create", team_entry)
        .await
        .ok();
    settle(&api).await;
    let token = sync_token(&api, &bob).await;
    let (mut sse, mut copy) = follow(&streamer.base_url, &token, None, QUIET).await;
    let holds_team_rows = |copy: &LocalCopy| {
        copy.rows.values().any(|row| {
            row["teamId"].as_str() == Some(team_id.as_str()) && row["deletedAt"].is_null()
        })
    };
    assert!(holds_team_rows(&copy));

    remove_member(&api, &ada, &team_id, &bob).await;
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
    assert_in_sync(&copy, &api, &bob).await;

    stop(streamer, api).await;
}

/// The catch-up reads its pages after the stream's snapshot, from a read model that may have
/// moved on. A member removed in between was once sent the team's rows without its own
/// membership row (the row had changed past the watermark, so the pages left it out), and then
/// the team's live changes, until the removal arrived: a copy holding a team's rows but not
/// its membership. The snapshot's membership row now goes out with the pages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_catch_up_read_after_a_removal_still_sends_the_membership_of_its_snapshot() {
    let (api, streamer) = start().await;
    let [ada, bob] = users(&api, ["ada", "bob"]).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    api.call(
        Some(&ada),
        "journalEntries/create",
        team_entry("for the team", &team_id),
    )
    .await
    .ok();
    settle(&api).await;
    let sync_db = platform::db::connect(
        &secrecy::SecretString::from(api.db.url().to_owned()),
        "sync",
        2,
    )
    .await
    .unwrap();
    let bob_id = domain::ids::UserId::from_uuid(bob.user_id);
    let team: domain::ids::TeamId = team_id.parse().unwrap();
    let snapshot = sync_streamer::catchup::snapshot(&sync_db, bob_id)
        .await
        .unwrap();

    // Bob is removed after the snapshot and before the pages are read.
    remove_member(&api, &ada, &team_id, &bob).await;
    settle(&api).await;
    let watermark: i64 = sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
        .fetch_one(&api.pool)
        .await
        .unwrap();
    assert!(
        watermark as u64 > snapshot.watermark,
        "the read model moved on"
    );

    // A fresh client whose token lists the team, as the stream plans it.
    let scopes = || {
        vec![
            (Scope::User(bob_id).key(), Cursor::default()),
            (Scope::Team(team).key(), Cursor::default()),
        ]
    };
    let pinned = snapshot.pinned_memberships(&Cursor::default(), &HashSet::from([team]));
    assert_eq!(pinned.len(), 1, "bob's one active membership");
    let pages = |pinned| {
        let catch_up = CatchUp::new(scopes(), snapshot.watermark, 2, false, None, pinned);
        every_row(&sync_db, catch_up, snapshot.watermark)
    };
    let bobs_membership = format!("team_members/{team_id}:{}", bob.user_id);
    // Without the snapshot's copy, the pages carry the team's entry and not bob's membership:
    // the race this test stages.
    let unpinned = pages(Vec::new()).await;
    assert!(
        unpinned
            .iter()
            .any(|(key, row)| key.starts_with("journal_entries/") && row["teamId"] == team_id)
    );
    assert!(!unpinned.iter().any(|(key, _)| *key == bobs_membership));

    let rows = pages(pinned).await;
    let memberships: Vec<&Value> = rows
        .iter()
        .filter(|(key, _)| *key == bobs_membership)
        .map(|(_, row)| row)
        .collect();
    assert_eq!(memberships.len(), 1, "bob's membership, once: {rows:?}");
    assert!(
        memberships[0]["deletedAt"].is_null(),
        "as of the snapshot: active"
    );
    let keys: HashSet<&String> = rows.iter().map(|(key, _)| key).collect();
    assert_eq!(keys.len(), rows.len(), "each row once: {rows:?}");
    assert_eq!(
        keys.len(),
        unpinned.len() + 1,
        "the same rows and bob's membership"
    );

    stop(streamer, api).await;
}

/// Every row of `catch_up`'s pages, keyed as a client keys them.
async fn every_row(
    db: &sqlx::PgPool,
    mut catch_up: CatchUp,
    watermark: u64,
) -> Vec<(String, Value)> {
    let mut rows = Vec::new();
    while let Some(page) = catch_up.next_page(db).await.unwrap() {
        for row in page {
            assert!(row.seq <= watermark, "a row past the snapshot");
            let data: Value = serde_json::from_str(row.data.get()).unwrap();
            rows.push((row_key(&row.table, &data), data));
        }
    }
    rows
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
