//! Clients get every write across a NATS restart, a replica that tailed nothing yet included.

use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use test_support::{PrivateNats, eventually};

use crate::client::{Client, ClientLog, readyz};
use crate::common::*;
use crate::fixtures::{
    Changes, WAIT, assert_no_gap, assert_ready_means_tailing, assert_unready_while_nats_is_down,
    in_scope, settled, start_on_nats, unsent,
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_get_every_write_across_a_nats_restart_and_the_streamer_recovers() {
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let (api, streamer) = start_on_nats(&nats_url, |_| {}).await;
    let changes = Changes::new(&nats_url, &api.namespace);
    let ada = api.login(&unique_email("ada")).await;
    let bob = api.login(&unique_email("bob")).await;
    let team_id = api.team_with(&ada, &[(&bob, "member")]).await;
    let team_entry = |title: &str| {
        let mut input = entry(title);
        input["teamId"] = json!(team_id);
        input
    };
    let create = |user: &TestUser, input: Value| {
        let api = &api;
        let user = user.clone();
        async move {
            api.call(Some(&user), "journalEntries/create", input)
                .await
                .ok()["journalEntryId"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    let update = |user: &TestUser, entry_id: &str, title: &str| {
        let api = &api;
        let user = user.clone();
        let input = json!({"journalEntryId": entry_id, "title": title});
        async move {
            api.call(Some(&user), "journalEntries/update", input)
                .await
                .ok();
        }
    };
    let delete = |user: &TestUser, entry_id: &str| {
        let api = &api;
        let user = user.clone();
        let input = json!({"journalEntryId": entry_id});
        async move {
            api.call(Some(&user), "journalEntries/delete", input)
                .await
                .ok();
        }
    };

    // Before: rows the catch-up sends, then rows that arrive live.
    let mut ada_entries = vec![
        create(&ada, entry("ada 1")).await,
        create(&ada, entry("ada 2")).await,
    ];
    let mut team_entries = vec![create(&bob, team_entry("team 1")).await];
    assert!(
        eventually(WAIT, || settled(&api, &changes, &streamer)).await,
        "the first writes never settled"
    );
    let ada_scopes = vec![format!("user.{}", ada.user_id), format!("team.{team_id}")];
    let bob_scopes = vec![format!("user.{}", bob.user_id), format!("team.{team_id}")];
    let ada_token = sync_token(&api, &ada).await;
    let bob_token = sync_token(&api, &bob).await;
    // Ada stays connected throughout; bob drops his connection during the first outage and
    // comes back with his cursor.
    let mut ada_client = Client::spawn(
        &streamer.base_url,
        &ada_token,
        Arc::new(Mutex::new(ClientLog::default())),
        false,
        "ada",
    );
    let bob_client = Client::spawn(
        &streamer.base_url,
        &bob_token,
        Arc::new(Mutex::new(ClientLog::default())),
        false,
        "bob",
    );
    ada_entries.push(create(&ada, entry("ada live")).await);
    team_entries.push(create(&ada, team_entry("team live")).await);
    update(&bob, &team_entries[0], "team 1 renamed").await;
    let converged = |client: &Client, user_id: uuid::Uuid| {
        let live = client.live();
        let api = &api;
        async move { live == expected_rows(api, user_id).await }
    };
    assert!(
        eventually(WAIT, || converged(&ada_client, ada.user_id)).await,
        "ada's copy never matched the database before the outage"
    );
    assert!(
        eventually(WAIT, || converged(&bob_client, bob.user_id)).await,
        "bob's copy never matched the database before the outage"
    );
    let bob_log = bob_client.disconnect().await;
    let bob_cursor = bob_log.lock().unwrap().copy.cursor.unwrap();

    let mut bob_client = None;
    for outage in 1..=2 {
        // NATS goes away: the streamer says so on /readyz and keeps serving what it has.
        let heartbeats = ada_client.heartbeats();
        nats.stop();
        assert_unready_while_nats_is_down(&streamer).await;

        // Writes during the outage commit in Postgres; they wait in the outbox.
        let unsent_before = unsent(&api).await;
        ada_entries.push(create(&ada, entry(&format!("ada during {outage}"))).await);
        update(&ada, &ada_entries[0], &format!("ada 1 during {outage}")).await;
        team_entries.push(create(&bob, team_entry(&format!("team during {outage}"))).await);
        update(
            &ada,
            &team_entries[1],
            &format!("team live during {outage}"),
        )
        .await;
        if outage == 1 {
            delete(&ada, &ada_entries[1]).await;
        } else {
            delete(&bob, &team_entries[0]).await;
        }
        assert!(
            unsent(&api).await >= unsent_before + 5,
            "outage {outage}: the writes were published with NATS down?"
        );
        if outage == 1 {
            // Bob reconnects with his cursor while NATS is still down: his catch-up comes
            // from the read model, his live changes once the tail resumes.
            bob_client = Some(Client::spawn(
                &streamer.base_url,
                &bob_token,
                bob_log.clone(),
                true,
                "bob",
            ));
        }
        let bob_stream = bob_client.as_ref().unwrap();
        assert!(
            eventually(WAIT, || async { bob_stream.caught_up() }).await,
            "outage {outage}: bob's stream did not catch up with NATS down: {:?}",
            bob_log.lock().unwrap().sessions
        );
        // Ada's stream stays open through the outage (heartbeats keep coming).
        assert!(
            eventually(WAIT, || async { ada_client.heartbeats() >= heartbeats + 3 }).await,
            "outage {outage}: ada's stream went quiet with NATS down"
        );
        ada_client.assert_reading("ada").await;

        nats.resume();
        assert_ready_means_tailing(&streamer, &changes).await;

        // After: more writes, live again.
        ada_entries.push(create(&ada, entry(&format!("ada after {outage}"))).await);
        team_entries.push(create(&ada, team_entry(&format!("team after {outage}"))).await);
        update(
            &bob,
            &team_entries[2],
            &format!("team during, after {outage}"),
        )
        .await;

        assert!(
            eventually(WAIT, || settled(&api, &changes, &streamer)).await,
            "outage {outage}: the outbox, the materializer or the tail never caught up \
             (unsent {}, hub at {})",
            unsent(&api).await,
            streamer.hub.position()
        );
        for (name, client, user_id) in [
            ("ada", &ada_client, ada.user_id),
            ("bob", bob_stream, bob.user_id),
        ] {
            let matched = eventually(WAIT, || converged(client, user_id)).await;
            let expected = expected_rows(&api, user_id).await;
            assert!(
                matched,
                "outage {outage}: {name}'s copy differs from the database:\n copy {:?}\n \
                 database {expected:?}",
                client.live()
            );
        }
        ada_client.assert_reading("ada").await;
        assert!(
            streamer.is_running(),
            "outage {outage}: the streamer or one of its tasks exited"
        );
    }

    // No gap, no duplicate: each stream's live frames are exactly its scopes' changesets.
    let changes = changes.scopes().await;
    {
        let ada_log = ada_client.log.lock().unwrap();
        assert_eq!(
            ada_log.sessions.len(),
            1,
            "ada stayed on one stream: {:?}",
            ada_log.sessions
        );
        assert_eq!(ada_log.sessions[0].ended, None, "ada's stream ended");
        assert_no_gap("ada", &ada_log, &in_scope(&changes, &ada_scopes));
        assert!(
            ada_log.refusals.is_empty(),
            "ada was refused: {:?}",
            ada_log.refusals
        );
        assert!(!ada_log.copy.kinds.contains_key("reset"), "ada was reset");
    }
    {
        let bob_log = bob_log.lock().unwrap();
        let bob_in_scope = in_scope(&changes, &bob_scopes);
        assert_no_gap("bob", &bob_log, &bob_in_scope);
        assert_eq!(
            bob_log.sessions.len(),
            2,
            "bob's stream from the first outage on stayed open: {:?}",
            bob_log.sessions
        );
        assert!(
            bob_log.sessions[1].ended.is_none(),
            "bob's last stream ended: {:?}",
            bob_log.sessions
        );
        // The reconnect resumed from bob's cursor (no reset, no full resend).
        let resumed = &bob_log.sessions[1];
        assert!(
            resumed.caught_up_at.unwrap() >= bob_cursor,
            "bob's reconnect went back before his cursor {bob_cursor}: {resumed:?}"
        );
        assert!(!bob_log.copy.kinds.contains_key("reset"), "bob was reset");
        assert!(
            bob_log.refusals.is_empty(),
            "bob's reconnect with NATS down was refused: {:?}",
            bob_log.refusals
        );
        println!(
            "ada: {} frames; bob: {} sessions, {} refusals, {} frames",
            ada_log_frames(&ada_client),
            bob_log.sessions.len(),
            bob_log.refusals.len(),
            bob_log.copy.frames
        );
    }

    let (status, _) = readyz(&streamer).await;
    assert_eq!(status, 200);
    assert!(
        streamer.is_running(),
        "the streamer or one of its tasks exited"
    );
    ada_client.task.abort();
    if let Some(bob) = bob_client {
        bob.task.abort();
    }
    streamer.stop().await;
    api.stop().await;
}

fn ada_log_frames(client: &Client) -> usize {
    client.log.lock().unwrap().copy.frames
}

/// A replica that started on an empty CHANGES (a new deployment) and has tailed nothing yet
/// when NATS restarts: the first changesets, written during the outage, still reach its
/// clients. (The tail took position 0 for "never started" and, restarting after the outage,
/// skipped to the stream's end, past them.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_first_changes_written_while_nats_is_down_reach_a_replica_that_tailed_none_yet() {
    let mut nats = PrivateNats::start();
    let nats_url = nats.url();
    let (api, streamer) = start_on_nats(&nats_url, |_| {}).await;
    let changes = Changes::new(&nats_url, &api.namespace);
    assert_eq!(changes.last_seq().await, 0, "CHANGES starts empty");

    nats.stop();
    assert_unready_while_nats_is_down(&streamer).await;
    // The first user signs up and writes while NATS is away; a client follows from the start.
    let ada = api.login(&unique_email("ada")).await;
    let token = sync_token(&api, &ada).await;
    let log = Arc::new(Mutex::new(ClientLog::default()));
    let mut client = Client::spawn(&streamer.base_url, &token, Arc::clone(&log), true, "ada");
    let mut entries = Vec::new();
    for title in ["first", "second", "third"] {
        let created = api
            .call(Some(&ada), "journalEntries/create", entry(title))
            .await
            .ok();
        entries.push(created["journalEntryId"].as_str().unwrap().to_owned());
    }
    api.call(
        Some(&ada),
        "journalEntries/update",
        json!({"journalEntryId": entries[0], "title": "first, renamed"}),
    )
    .await
    .ok();
    assert!(unsent(&api).await >= 5, "nothing can be published yet");
    assert!(
        eventually(WAIT, || async { client.caught_up() }).await,
        "ada's stream did not open with NATS down: {:?}",
        log.lock().unwrap()
    );

    nats.resume();
    assert_ready_means_tailing(&streamer, &changes).await;
    api.call(Some(&ada), "journalEntries/create", entry("after"))
        .await
        .ok();
    assert!(
        eventually(WAIT, || settled(&api, &changes, &streamer)).await,
        "the outbox, the materializer or the tail never caught up (unsent {}, hub at {})",
        unsent(&api).await,
        streamer.hub.position()
    );
    let matched = eventually(WAIT, || async {
        client.live() == expected_rows(&api, ada.user_id).await
    })
    .await;
    assert!(
        matched,
        "ada's copy differs from the database:\n copy {:?}\n database {:?}",
        client.live(),
        expected_rows(&api, ada.user_id).await
    );
    client.assert_reading("ada").await;
    let in_scope = in_scope(&changes.scopes().await, &[format!("user.{}", ada.user_id)]);
    {
        let log = log.lock().unwrap();
        assert_no_gap("ada", &log, &in_scope);
        assert!(!log.copy.kinds.contains_key("reset"), "ada was reset");
        assert!(
            log.refusals.is_empty(),
            "ada was refused: {:?}",
            log.refusals
        );
        assert_eq!(
            log.sessions.len(),
            1,
            "ada's stream closed: {:?}",
            log.sessions
        );
    }
    assert!(
        streamer.is_running(),
        "the streamer or one of its tasks exited"
    );
    client.task.abort();
    streamer.stop().await;
    api.stop().await;
}
