//! The property: clients converge across replicas, writers and a leader handover.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::SeedableRng;
use rand::rngs::StdRng;

use crate::client::{Client, difference, follow};
use crate::common::*;
use crate::transactions::{Transactions, check_transactions};
use crate::writers::{Shared, change_memberships, edit_across_scopes, write};

const WRITE_PHASE: Duration = Duration::from_secs(10);
/// Fewer successful writes than this and the run proved nothing (even a slow machine manages
/// several times as many in the write phase).
const MIN_SUCCESSFUL_WRITES: usize = 30;
/// Membership moves (a join or a leave) that must complete in the write phase.
const MIN_MEMBERSHIP_MOVES: usize = 4;
/// Transactions with rows in several scopes (`edit_across_scopes`) the run must write.
const MIN_MULTI_SCOPE_EDITS: usize = 10;

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
        // Team A: user 0 (owner), 1, 2; team B: user 3 (owner), 0.
        memberships: Mutex::new(BTreeSet::from([(0, 0), (0, 1), (0, 2), (1, 3), (1, 0)])),
        membership_epoch: AtomicU64::new(0),
        successful_writes: AtomicUsize::new(0),
        refused_writes: AtomicUsize::new(0),
        membership_moves: AtomicUsize::new(0),
        multi_scope_edits: AtomicUsize::new(0),
    });

    for (index, user) in shared.users.iter().enumerate() {
        println!("user {index} is {}", user.user_id);
    }
    for (index, team) in shared.teams.iter().enumerate() {
        println!("team {index} is {team}");
    }
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
    writers.push(tokio::spawn(edit_across_scopes(
        Arc::clone(&shared),
        StdRng::seed_from_u64(seed + 5),
        deadline,
    )));
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
    let took_over = test_support::eventually(Duration::from_secs(30), || async {
        survivor.leadership.is_leader()
    })
    .await;
    assert!(
        took_over,
        "the surviving replica did not take over within 30 s"
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
    let successful_writes = shared.successful_writes.load(Ordering::Relaxed);
    let membership_moves = shared.membership_moves.load(Ordering::Relaxed);
    println!(
        "{successful_writes} writes succeeded, {} refused, {membership_moves} membership moves",
        shared.refused_writes.load(Ordering::Relaxed)
    );
    assert!(
        successful_writes >= MIN_SUCCESSFUL_WRITES,
        "only {successful_writes} writes succeeded: the run exercised too little"
    );
    assert!(
        membership_moves >= MIN_MEMBERSHIP_MOVES,
        "only {membership_moves} membership moves completed"
    );
    let multi_scope_edits = shared.multi_scope_edits.load(Ordering::Relaxed);
    println!("{multi_scope_edits} transactions across scopes");
    assert!(
        multi_scope_edits >= MIN_MULTI_SCOPE_EDITS,
        "only {multi_scope_edits} transactions across scopes"
    );

    let client = async_nats::connect(test_support::nats_url()).await.unwrap();
    let jetstream = async_nats::jetstream::new(client);
    let stream = jetstream
        .get_stream(format!(
            "{}_CHANGES",
            shared.api.namespace.to_ascii_uppercase()
        ))
        .await
        .unwrap();
    let transactions = Transactions::read(&stream, last_change_seq(&shared.api).await).await;
    let mut all_kinds: BTreeMap<String, usize> = BTreeMap::new();
    for (index, mut client) in copies.into_iter().enumerate() {
        // A last resume from the cursor, once everything is written.
        println!("user {index}: final resume");
        let sessions_before = client.sessions;
        client.session(&shared, &survivor.base_url, None).await;
        assert!(
            client.sessions > sessions_before,
            "user {index}'s final resume never opened a stream"
        );
        // The teams come from the test's model, not from the api's SQL; the database must
        // agree with the model too (every confirmed membership change happened).
        shared.check_memberships(index).await;
        let user_id = shared.users[index].user_id;
        let teams = shared.model_teams(index);
        let expected = expected_rows_in(&shared.api, user_id, &teams).await;
        let live = client.copy.live();
        if live != expected {
            let report = difference(&shared, &client, &expected).await;
            panic!("user {index}'s copy differs from the database:\n{report}");
        }
        assert!(
            client
                .copy
                .cursors
                .windows(2)
                .all(|pair| pair[0] <= pair[1])
        );
        // Each row version once, each transaction whole in one frame.
        assert!(
            client.once.violations.is_empty(),
            "user {index} got row versions twice:\n{}",
            client.once.violations.join("\n")
        );
        check_transactions(&transactions, &client, user_id);
        println!(
            "user {index}: {} rows, {} sessions, {} frames, {} change frames, last cursor {:?}",
            expected.len(),
            client.sessions,
            client.copy.frames,
            client.change_frames.len(),
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
