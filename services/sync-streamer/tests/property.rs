//! The property that matters most (issue 6): concurrent writers (creates, updates, deletes,
//! restores, membership changes, multi-row transactions) while clients connect, disconnect
//! at random points and resume from their last cursor, across two streamer replicas with the
//! materializer leader killed in the middle. At the end every client's copy equals the
//! database's state for its scopes, every client's cursors only increased, and every
//! `change` frame carried its whole changeset.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::*;
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};

const WRITE_PHASE: Duration = Duration::from_secs(10);
/// How long a final resume waits without a frame before it counts as caught up.
const QUIET: Duration = Duration::from_millis(2500);

struct Shared {
    api: TestApi,
    users: Vec<TestUser>,
    teams: Vec<String>,
    /// Live replica URLs.
    replicas: Mutex<Vec<String>>,
    /// Entries created so far: (id, author index).
    entries: Mutex<Vec<(String, usize)>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_converge_across_replicas_writers_and_a_leader_handover() {
    let seed: u64 = std::env::var("SYNC_PROPERTY_SEED")
        .ok()
        .and_then(|seed| seed.parse().ok())
        .unwrap_or_else(rand::random);
    println!("seed {seed} (SYNC_PROPERTY_SEED={seed} repeats this run)");
    let api = TestApi::start().await;
    // Small pages exercise the paging (pages cut on whole changesets); a small ring on one
    // replica makes its handoff gaps come from JetStream rather than the ring.
    let first = Streamer::start(&api, |config| config.sync.chunk_rows = 7).await;
    let second = Streamer::start(&api, |config| {
        config.sync.chunk_rows = 7;
        config.sync.ring_capacity = 20;
    })
    .await;
    let mut users = Vec::new();
    for index in 0..4 {
        users.push(api.login(&unique_email(&format!("user{index}"))).await);
    }
    let team_a = api
        .team_with(&users[0], &[(&users[1], "member"), (&users[2], "admin")])
        .await;
    let team_b = api.team_with(&users[3], &[(&users[0], "member")]).await;
    let shared = Arc::new(Shared {
        replicas: Mutex::new(vec![first.base_url.clone(), second.base_url.clone()]),
        api,
        users,
        teams: vec![team_a, team_b],
        entries: Mutex::new(Vec::new()),
    });

    let deadline = Instant::now() + WRITE_PHASE;
    let mut writers = Vec::new();
    for writer in 0..3 {
        let shared = Arc::clone(&shared);
        writers.push(tokio::spawn(write(
            shared,
            StdRng::seed_from_u64(seed + writer),
            deadline,
        )));
    }
    writers.push(tokio::spawn(change_memberships(
        Arc::clone(&shared),
        StdRng::seed_from_u64(seed + 10),
        deadline,
    )));
    let mut clients = Vec::new();
    for index in 0..shared.users.len() {
        let shared = Arc::clone(&shared);
        clients.push(tokio::spawn(follow(
            shared,
            index,
            StdRng::seed_from_u64(seed + 20 + index as u64),
            deadline,
        )));
    }

    // The handover: kill whichever replica leads, half-way through.
    tokio::time::sleep(WRITE_PHASE / 2).await;
    let (leader, survivor) = if first.leadership.is_leader() {
        (first, second)
    } else {
        (second, first)
    };
    shared
        .replicas
        .lock()
        .unwrap()
        .retain(|url| *url == survivor.base_url);
    leader.kill();
    let took_over = test_support::eventually(Duration::from_secs(5), || async {
        survivor.leadership.is_leader()
    })
    .await;
    assert!(
        took_over,
        "the surviving replica did not take over within 5 s"
    );

    println!("leader killed; waiting for the writers");
    for writer in writers {
        writer.await.unwrap();
    }
    println!("writers done; waiting for the clients");
    let copies: Vec<Client> = futures::future::join_all(clients)
        .await
        .into_iter()
        .map(Result::unwrap)
        .collect();
    println!("clients done; settling");
    settle(&shared.api).await;

    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(format!(
            "{}_CHANGES",
            shared.api.namespace.to_ascii_uppercase()
        ))
        .await
        .unwrap();
    let mut all_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (index, mut client) in copies.into_iter().enumerate() {
        // A last resume from the cursor, once everything is written.
        println!("user {index}: final resume");
        client.session(&shared, &survivor.base_url, None).await;
        let expected = expected_rows(&shared.api, shared.users[index].user_id).await;
        assert_eq!(
            client.copy.live(),
            expected,
            "user {index}'s copy differs from the database"
        );
        assert!(
            client
                .copy
                .cursors
                .windows(2)
                .all(|pair| pair[0] <= pair[1])
        );
        // No transaction arrives partially: each change frame holds its whole changeset.
        for (seq, count) in &client.change_sizes {
            let message = stream.get_raw_message(*seq).await.unwrap();
            let changeset =
                <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
                    .unwrap();
            assert_eq!(
                changeset.changes.len(),
                *count,
                "changeset {seq} arrived partially"
            );
        }
        println!(
            "user {index}: {} rows, {} sessions, {} frames, {} change frames, last cursor {:?}",
            expected.len(),
            client.sessions,
            client.copy.frames,
            client.change_sizes.len(),
            client.copy.cursor
        );
        assert!(client.sessions >= 3, "the client reconnected several times");
        println!("user {index}: frames by type {:?}", client.copy.kinds);
        for (kind, count) in &client.copy.kinds {
            *all_kinds.entry(kind.clone()).or_default() += count;
        }
    }
    // The run exercised what it is meant to: membership moves reached clients both ways.
    assert!(
        all_kinds
            .get("scope_removed")
            .is_some_and(|count| *count > 0),
        "{all_kinds:?}"
    );
    assert!(
        all_kinds
            .get("closed:scopes_changed")
            .is_some_and(|count| *count > 0),
        "{all_kinds:?}"
    );
    survivor.stop().await;
    let shared = Arc::into_inner(shared).unwrap_or_else(|| panic!("still shared"));
    shared.api.stop().await;
}

/// Entries: create (personal or team), update, delete, restore.
async fn write(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
    let api = &shared.api;
    while Instant::now() < deadline {
        let author = rng.random_range(0..shared.users.len());
        let user = &shared.users[author];
        let known: Vec<(String, usize)> = shared.entries.lock().unwrap().clone();
        let pick = rng.random_range(0..10);
        if pick < 4 || known.is_empty() {
            let mut input =
                json!({"title": format!("t{}", rng.random_range(0..1000)), "content": "c"});
            if rng.random_bool(0.5) {
                input["teamId"] = json!(shared.teams[rng.random_range(0..shared.teams.len())]);
            }
            let answer = api.call(Some(user), "journalEntries/create", input).await;
            if answer.status == 200 {
                shared.entries.lock().unwrap().push((
                    answer.json["journalEntryId"].as_str().unwrap().to_owned(),
                    author,
                ));
            }
        } else {
            let (entry_id, owner) = known[rng.random_range(0..known.len())].clone();
            let user = &shared.users[owner];
            let procedure = match pick {
                4..=6 => "journalEntries/update",
                7 | 8 => "journalEntries/delete",
                _ => "journalEntries/restore",
            };
            let mut input = json!({"journalEntryId": entry_id});
            if procedure == "journalEntries/update" {
                input["title"] = json!(format!("u{}", rng.random_range(0..1000)));
            }
            // Refusals (a member who left, a deleted entry) are part of the mix.
            let _ = api.call(Some(user), procedure, input).await;
        }
    }
}

/// Membership changes: user 1 is removed from and re-invited to team A; user 0 leaves and
/// rejoins team B.
async fn change_memberships(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
    let api = &shared.api;
    let users = &shared.users;
    let (team_a, team_b) = (&shared.teams[0], &shared.teams[1]);
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(300..900))).await;
        let (owner, member, team) = if rng.random_bool(0.5) {
            (&users[0], &users[1], team_a)
        } else {
            (&users[3], &users[0], team_b)
        };
        let removed = if member.user_id == users[0].user_id {
            api.call(Some(member), "teams/leave", json!({"teamId": team}))
                .await
        } else {
            api.call(
                Some(owner),
                "teams/removeMember",
                json!({"teamId": team, "userId": member.user_id}),
            )
            .await
        };
        if removed.status != 200 {
            continue;
        }
        tokio::time::sleep(Duration::from_millis(rng.random_range(100..600))).await;
        api.call(
            Some(owner),
            "teams/invite",
            json!({"teamId": team, "email": member.email}),
        )
        .await
        .ok();
        let invitations = api
            .query(Some(member), "teams/listInvitations", Value::Null)
            .await
            .ok();
        let invitation = invitations
            .as_array()
            .unwrap()
            .iter()
            .find(|invitation| invitation["teamId"] == team.as_str())
            .unwrap()["teamInvitationId"]
            .clone();
        api.call(
            Some(member),
            "teams/acceptInvitation",
            json!({"teamInvitationId": invitation}),
        )
        .await
        .ok();
    }
}

struct Client {
    index: usize,
    copy: LocalCopy,
    token: Option<String>,
    sessions: usize,
    /// (seq, number of changes) of every change frame.
    change_sizes: BTreeMap<u64, usize>,
}

impl Client {
    /// One connection: resume from the cursor, read until `read_for` passes (or quiet).
    async fn session(&mut self, shared: &Shared, base_url: &str, read_for: Option<Duration>) {
        let user = &shared.users[self.index];
        for _ in 0..5 {
            let token = match &self.token {
                Some(token) => token.clone(),
                None => {
                    let token = sync_token(&shared.api, user).await;
                    self.token = Some(token.clone());
                    token
                }
            };
            let since = self.copy.cursor.map(|cursor| cursor.to_string());
            let trace = read_for.is_none() || std::env::var_os("SYNC_TEST_TRACE").is_some();
            if trace {
                println!(
                    "user {}: connecting to {base_url} since {since:?}",
                    self.index
                );
            }
            // A replica picked just before the leader was stopped refuses the connection: a
            // real client tries again elsewhere, and so does this one (its caller picks again).
            let mut sse = match try_open_stream(base_url, &token, since.as_deref()).await {
                Ok(sse) => sse,
                Err(error) => {
                    println!("user {}: cannot connect to {base_url}: {error}", self.index);
                    return;
                }
            };
            if trace {
                println!("user {}: status {}", self.index, sse.status);
            }
            if sse.status == 401 {
                // Stale or expired token: get a new one.
                self.token = None;
                continue;
            }
            if sse.status != 200 {
                return;
            }
            self.sessions += 1;
            self.copy.caught_up = false;
            self.copy.closed = None;
            let until = read_for.map(|duration| tokio::time::Instant::now() + duration);
            // Heartbeats do not count as activity.
            let mut quiet_until = tokio::time::Instant::now() + QUIET;
            loop {
                let wait = match until {
                    Some(until) => until.saturating_duration_since(tokio::time::Instant::now()),
                    None if self.copy.caught_up => {
                        quiet_until.saturating_duration_since(tokio::time::Instant::now())
                    }
                    None => Duration::from_secs(20),
                };
                let Some(event) = sse.next(wait).await else {
                    break;
                };
                let kind = self.copy.apply(&event);
                if kind != "heartbeat" {
                    quiet_until = tokio::time::Instant::now() + QUIET;
                }
                if kind == "change" {
                    let seq: u64 = event.id.as_deref().unwrap().parse().unwrap();
                    self.change_sizes
                        .insert(seq, event.data["changes"].as_array().unwrap().len());
                }
                if kind == "closed" {
                    break;
                }
            }
            match self.copy.closed.as_deref() {
                // Reconnect at once, with a new token if the old one lacks the team.
                Some("scopes_changed") => {
                    self.token = None;
                    if read_for.is_some() {
                        return;
                    }
                }
                _ => return,
            }
        }
    }
}

/// A client that connects to a random live replica, reads for a random while, disconnects.
async fn follow(shared: Arc<Shared>, index: usize, mut rng: StdRng, deadline: Instant) -> Client {
    let mut client = Client {
        index,
        copy: LocalCopy::default(),
        token: None,
        sessions: 0,
        change_sizes: BTreeMap::new(),
    };
    while Instant::now() < deadline {
        let base_url = {
            let replicas = shared.replicas.lock().unwrap();
            replicas[rng.random_range(0..replicas.len())].clone()
        };
        let read_for = Duration::from_millis(rng.random_range(50..1500));
        client.session(&shared, &base_url, Some(read_for)).await;
        tokio::time::sleep(Duration::from_millis(rng.random_range(0..300))).await;
    }
    client
}
