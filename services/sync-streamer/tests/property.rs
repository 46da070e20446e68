//! The property that matters most (issue 6): concurrent writers (creates, updates, deletes,
//! restores, membership changes, multi-row transactions) while clients connect, disconnect
//! at random points and resume from their last cursor, across two streamer replicas with the
//! materializer leader killed in the middle, while users join and leave teams (a leave, a
//! removal by the owner, an invitation accepted). At the end every client's copy equals the
//! database's state for its scopes and every client's cursors only increased; and per client
//! (issue 18), each row version arrived once and each committed transaction whole, in one
//! `change` frame holding exactly its rows in the client's scopes.
//!
//! "Once" counts what a client had when it resumed: rows of frames after its last cursor are
//! sent again by design (a page's frames before its last, a `change` frame sent while an
//! earlier transaction waited for a part), and a `scope_removed` (or `reset`) drops what the
//! client held of that team, which may then come again.
//!
//! The expectation is the test's own: a model of memberships that changes only after the api
//! confirmed a change (the database must agree with it), and the live rows of the model's
//! scopes in the api's tables. Every write's answer is checked against the model too: only
//! named refusals pass (a team the author does not belong to, a deleted entry's update).
//! On a mismatch the differing keys are printed with their read-model copies and the frames
//! that carried them, and the client's whole log and the CHANGES stream go to a file.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::api_common::Answer;
use common::*;
use rand::RngExt;
use rand::SeedableRng;
use rand::rngs::StdRng;
use serde_json::{Value, json};
use sync_protocol::synced_tx::SyncedRecorder;

const WRITE_PHASE: Duration = Duration::from_secs(10);
/// How long a final resume waits without a frame before it counts as caught up.
const QUIET: Duration = Duration::from_millis(2500);
/// Fewer successful writes than this and the run proved nothing (even a slow machine manages
/// several times as many in the write phase).
const MIN_SUCCESSFUL_WRITES: usize = 30;
/// Membership moves (a join or a leave) that must complete in the write phase.
const MIN_MEMBERSHIP_MOVES: usize = 4;
/// Transactions with rows in several scopes (`edit_across_scopes`) the run must write.
const MIN_MULTI_SCOPE_EDITS: usize = 10;
/// The owners (user index per team index): they never leave, so the teams live on.
const OWNERS: [usize; 2] = [0, 3];

struct Shared {
    api: TestApi,
    users: Vec<TestUser>,
    teams: Vec<String>,
    /// Live replica URLs.
    replicas: Mutex<Vec<String>>,
    entries: Mutex<Vec<Entry>>,
    /// The test's own model of who belongs where: (team index, user index). Only
    /// `change_memberships` changes it, after the api confirmed the change.
    memberships: Mutex<BTreeSet<(usize, usize)>>,
    /// Odd while a membership move (a join or a leave) runs.
    membership_epoch: AtomicU64,
    successful_writes: AtomicUsize,
    refused_writes: AtomicUsize,
    membership_moves: AtomicUsize,
    /// Transactions written across several scopes by `edit_across_scopes`.
    multi_scope_edits: AtomicUsize,
}

/// An entry created so far.
#[derive(Clone)]
struct Entry {
    id: String,
    /// User index.
    author: usize,
    /// Team index (`None`: personal).
    team: Option<usize>,
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

/// Entries: create (personal or team), update, delete, restore.
async fn write(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
    let api = &shared.api;
    while Instant::now() < deadline {
        let known: Vec<Entry> = shared.entries.lock().unwrap().clone();
        let pick = rng.random_range(0..10);
        if pick < 4 || known.is_empty() {
            let author = rng.random_range(0..shared.users.len());
            let mut input =
                json!({"title": format!("t{}", rng.random_range(0..1000)), "content": "c"});
            let team = rng
                .random_bool(0.5)
                .then(|| rng.random_range(0..shared.teams.len()));
            if let Some(team) = team {
                input["teamId"] = json!(shared.teams[team]);
            }
            let epoch = shared.membership_epoch.load(Ordering::SeqCst);
            let answer = api
                .call(Some(&shared.users[author]), "journalEntries/create", input)
                .await;
            let member = shared.member_throughout(epoch, author, team);
            if answer.status == 200 {
                shared.entries.lock().unwrap().push(Entry {
                    id: answer.json["journalEntryId"].as_str().unwrap().to_owned(),
                    author,
                    team,
                });
            }
            // A team the author does not belong to is not found.
            check_write(&shared, "journalEntries/create", &answer, member, false);
        } else {
            let entry = known[rng.random_range(0..known.len())].clone();
            let procedure = match pick {
                4..=6 => "journalEntries/update",
                7 | 8 => "journalEntries/delete",
                _ => "journalEntries/restore",
            };
            let mut input = json!({"journalEntryId": entry.id});
            if procedure == "journalEntries/update" {
                input["title"] = json!(format!("u{}", rng.random_range(0..1000)));
            }
            // The author writes, so never FORBIDDEN: a team entry whose author left the team is
            // not found, a deleted entry cannot be updated (another writer deleted it); deleting
            // a deleted entry or restoring a live one answers it unchanged.
            let epoch = shared.membership_epoch.load(Ordering::SeqCst);
            let answer = api
                .call(Some(&shared.users[entry.author]), procedure, input)
                .await;
            let member = shared.member_throughout(epoch, entry.author, entry.team);
            check_write(
                &shared,
                procedure,
                &answer,
                member,
                procedure == "journalEntries/update",
            );
        }
    }
}

/// Transactions whose rows lie in several scopes: a personal entry of one user and a team
/// entry, sometimes a second user's personal entry too, retitled in one database transaction
/// whose changesets the api's own `SyncedTx` writes to its outbox (one part per scope). The
/// api's own multi-scope writes all carry one row (a membership, in the team's scope and the
/// member's); these carry different rows per part, so a client following several of the
/// scopes sees whether they arrive merged.
async fn edit_across_scopes(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(50..250))).await;
        let known: Vec<Entry> = shared.entries.lock().unwrap().clone();
        let personal: Vec<&Entry> = known.iter().filter(|entry| entry.team.is_none()).collect();
        let team: Vec<&Entry> = known.iter().filter(|entry| entry.team.is_some()).collect();
        if personal.is_empty() || team.is_empty() {
            continue;
        }
        let mut ids = vec![
            personal[rng.random_range(0..personal.len())].id.clone(),
            team[rng.random_range(0..team.len())].id.clone(),
        ];
        if rng.random_bool(0.3) {
            ids.push(personal[rng.random_range(0..personal.len())].id.clone());
        }
        let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.parse().unwrap()).collect();
        let title = format!("x{}", rng.random_range(0..1000));
        let mut tx = sync_protocol::synced_tx::SyncedTx::begin(&shared.api.pool)
            .await
            .unwrap();
        let entries: Vec<api::journal_entries::JournalEntry> = sqlx::query_as(
            "UPDATE journal_entries SET title = $2, updated_at = now(), version = version + 1
              WHERE journal_entry_id = ANY($1) AND deleted_at IS NULL
              RETURNING journal_entry_id, author_user_id, team_id, prompt_id, title, content,
                        mood, tags, entry_date, created_at, updated_at, deleted_at, version",
        )
        .bind(&ids)
        .bind(&title)
        .fetch_all(&mut *tx)
        .await
        .unwrap();
        for entry in &entries {
            let scope = sync_protocol::changes::Scope::owner(entry.author_user_id, entry.team_id);
            tx.record(&[scope], sync_protocol::changes::Op::Update, entry)
                .unwrap();
        }
        tx.commit().await.unwrap();
        shared.successful_writes.fetch_add(1, Ordering::Relaxed);
        shared
            .multi_scope_edits
            .fetch_add(usize::from(entries.len() > 1), Ordering::Relaxed);
    }
}

/// Membership changes: a random non-owner joins a team it is not in (invited by the owner,
/// accepts) or leaves one it is in (on its own or removed by the owner). Each move makes the
/// membership epoch odd while it runs.
async fn change_memberships(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
    let api = &shared.api;
    let users = &shared.users;
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(rng.random_range(200..700))).await;
        let team_index = rng.random_range(0..shared.teams.len());
        let owner = &users[OWNERS[team_index]];
        let candidates: Vec<usize> = (0..users.len())
            .filter(|user| *user != OWNERS[team_index])
            .collect();
        let member_index = candidates[rng.random_range(0..candidates.len())];
        let (member, team) = (&users[member_index], &shared.teams[team_index]);
        let is_member = shared
            .memberships
            .lock()
            .unwrap()
            .contains(&(team_index, member_index));
        shared.membership_epoch.fetch_add(1, Ordering::SeqCst);
        if is_member {
            let removed = if rng.random_bool(0.5) {
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
            // This task alone changes memberships, so the removal must succeed.
            assert_eq!(
                removed.status, 200,
                "membership removal failed: {}",
                removed.json
            );
            shared
                .memberships
                .lock()
                .unwrap()
                .remove(&(team_index, member_index));
        } else {
            let invited = api
                .call(
                    Some(owner),
                    "teams/invite",
                    json!({"teamId": team, "email": member.email}),
                )
                .await;
            assert_eq!(invited.status, 200, "invitation failed: {}", invited.json);
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
            let accepted = api
                .call(
                    Some(member),
                    "teams/acceptInvitation",
                    json!({"teamInvitationId": invitation}),
                )
                .await;
            assert_eq!(accepted.status, 200, "accepting failed: {}", accepted.json);
            shared
                .memberships
                .lock()
                .unwrap()
                .insert((team_index, member_index));
        }
        shared.check_memberships(member_index).await;
        shared.membership_epoch.fetch_add(1, Ordering::SeqCst);
        shared.membership_moves.fetch_add(1, Ordering::Relaxed);
    }
}

impl Shared {
    /// Whether `user` belonged to `team` (`None`: a personal entry, always theirs) for the
    /// whole of a call that started at membership epoch `epoch`, per the test's model; `None`
    /// when a membership move ran meanwhile (either answer is right then).
    fn member_throughout(&self, epoch: u64, user: usize, team: Option<usize>) -> Option<bool> {
        let stable =
            epoch.is_multiple_of(2) && self.membership_epoch.load(Ordering::SeqCst) == epoch;
        if !stable {
            return None;
        }
        Some(team.is_none_or(|team| self.memberships.lock().unwrap().contains(&(team, user))))
    }

    /// The teams `user` belongs to per the model.
    fn model_teams(&self, user: usize) -> Vec<uuid::Uuid> {
        let mut teams: Vec<uuid::Uuid> = self
            .memberships
            .lock()
            .unwrap()
            .iter()
            .filter(|(_, member)| *member == user)
            .map(|(team, _)| self.teams[*team].parse().unwrap())
            .collect();
        teams.sort();
        teams
    }

    /// The database's teams of `user` are the model's (checked after every confirmed change).
    async fn check_memberships(&self, user: usize) {
        assert_eq!(
            member_teams(&self.api, self.users[user].user_id).await,
            self.model_teams(user),
            "user {user}'s teams in the database differ from the confirmed changes"
        );
    }
}

/// Count a write's outcome. `member`: whether the author belonged to the entry's team
/// throughout (`None`: it changed meanwhile); `may_be_deleted`: another writer may have
/// deleted the entry (`ENTRY_DELETED`). Any other failure (a 500, a validation error, a
/// non-member's write accepted, a member's refused) fails the test.
fn check_write(
    shared: &Shared,
    procedure: &str,
    answer: &Answer,
    member: Option<bool>,
    may_be_deleted: bool,
) {
    if answer.status == 200 {
        assert_ne!(
            member,
            Some(false),
            "{procedure}: the api accepted a write to a team its author had left: {}",
            answer.json
        );
        shared.successful_writes.fetch_add(1, Ordering::Relaxed);
        return;
    }
    let code = answer.code();
    let expected = match code {
        "NOT_FOUND" => member != Some(true),
        "ENTRY_DELETED" => may_be_deleted,
        _ => false,
    };
    assert!(
        expected,
        "{procedure} failed unexpectedly ({}, author a member: {member:?}): {}",
        answer.status, answer.json
    );
    shared.refused_writes.fetch_add(1, Ordering::Relaxed);
}

struct Client {
    index: usize,
    copy: LocalCopy,
    token: Option<String>,
    sessions: usize,
    /// Every `change` frame, with the teams the client followed around it.
    change_frames: Vec<ChangeFrame>,
    /// Row versions received, for the exactly-once check.
    once: Once,
    /// What this client did and saw (connections, frames other than heartbeats), printed
    /// when its copy differs from the database.
    log: Vec<String>,
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
            let since = self.copy.position.clone();
            let trace = read_for.is_none() || std::env::var_os("SYNC_TEST_TRACE").is_some();
            if trace {
                println!(
                    "user {}: connecting to {base_url} since {since:?}",
                    self.index
                );
            }
            // For the log: how far the read model was when the stream opened.
            let watermark: Option<i64> =
                sqlx::query_scalar("SELECT watermark FROM sync.materializer_state")
                    .fetch_optional(&shared.api.pool)
                    .await
                    .unwrap();
            // A replica picked just before the leader was stopped refuses the connection: a
            // real client tries again elsewhere, and so does this one (its caller picks again).
            let mut sse = match try_open_stream(base_url, &token, since.as_deref()).await {
                Ok(sse) => sse,
                Err(error) => {
                    println!("user {}: cannot connect to {base_url}: {error}", self.index);
                    self.log
                        .push(format!("connect {base_url} since {since:?}: {error}"));
                    return;
                }
            };
            if trace {
                println!("user {}: status {}", self.index, sse.status);
            }
            self.log.push(format!(
                "connect #{} {base_url} since {since:?} (read model at {watermark:?}) token teams {:?}: {} {}",
                self.sessions + 1,
                token_teams(shared, &token),
                sse.status,
                sse.error.as_ref().map(|error| error["code"].clone()).unwrap_or_default()
            ));
            if sse.status != 200 {
                let code = sse
                    .error
                    .as_ref()
                    .and_then(|error| error["code"].as_str())
                    .unwrap_or("");
                // The one refusal this run provokes: the user joined a team the token does
                // not list (a re-join after this token was issued). Get a new token.
                assert!(
                    sse.status == 401 && code == "SYNC_TOKEN_STALE",
                    "user {}: the stream answered {}: {:?}",
                    self.index,
                    sse.status,
                    sse.error
                );
                self.token = None;
                continue;
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
                let teams_before = own_teams(&self.copy, user.user_id);
                let kind = self.copy.apply(&event);
                self.once.frame(&event, &kind, self.sessions);
                if kind != "heartbeat" {
                    quiet_until = tokio::time::Instant::now() + QUIET;
                    self.log.push(format!("  id {:?} {}", event.id, event.data));
                }
                if kind == "change" {
                    self.change_frames.push(ChangeFrame {
                        session: self.sessions,
                        rows: event.data["changes"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|change| {
                                (
                                    change["table"].as_str().unwrap().to_owned(),
                                    change["rowId"].as_str().unwrap().to_owned(),
                                    change["version"].as_i64().unwrap(),
                                )
                            })
                            .collect(),
                        teams_before,
                        teams_after: own_teams(&self.copy, user.user_id),
                    });
                }
                if kind == "closed" {
                    break;
                }
            }
            self.once.session_ended();
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
        if read_for.is_none() {
            panic!(
                "user {}: the final resume did not get a stream in 5 tries",
                self.index
            );
        }
    }
}

/// The teams a sync token lists (for the log).
fn token_teams(shared: &Shared, token: &str) -> Vec<usize> {
    let config = sync_streamer::Config::for_tests(shared.api.db.url(), &test_support::nats_url());
    let key = sync_protocol::TokenKey::new(config.sync.token_secret.clone());
    let claims = key
        .verify(token, chrono::Utc::now().timestamp_millis())
        .unwrap();
    claims
        .team_ids
        .iter()
        .map(|team_id| {
            shared
                .teams
                .iter()
                .position(|team| *team == team_id.to_string())
                .unwrap()
        })
        .collect()
}

/// What differs between a client's copy and what it should hold: the extra keys, the missing
/// ones and those at another version, each with the read model's copies of the row and the
/// client's frames that carried it; then the client's connections and membership frames.
async fn difference(shared: &Shared, client: &Client, expected: &BTreeMap<String, i64>) -> String {
    let live = client.copy.live();
    let mut report = String::new();
    let keys: BTreeSet<&String> = live.keys().chain(expected.keys()).collect();
    for key in keys {
        let (have, want) = (live.get(key), expected.get(key));
        if have == want {
            continue;
        }
        let kind = match (have, want) {
            (Some(_), None) => "extra",
            (None, Some(_)) => "missing",
            _ => "other version",
        };
        report.push_str(&format!(
            "{kind} {key}: copy {have:?} (held: {}), expected {want:?}\n",
            client
                .copy
                .rows
                .get(key)
                .map_or("nothing".to_owned(), Value::to_string)
        ));
        let row_id = key.split_once('/').unwrap().1;
        let copies: Vec<(String, i64, i64, bool)> = sqlx::query_as(
            "SELECT scope, version, seq, deleted FROM sync.rows WHERE row_id = $1 ORDER BY scope",
        )
        .bind(row_id)
        .fetch_all(&shared.api.pool)
        .await
        .unwrap();
        for (scope, version, seq, deleted) in copies {
            report.push_str(&format!(
                "  read model {scope}: version {version} seq {seq} deleted {deleted}\n"
            ));
        }
        for line in client.log.iter().filter(|line| line.contains(row_id)) {
            report.push_str(&format!("  seen {line}\n"));
        }
    }
    // The whole story, for a closer look: the client's log and every changeset published.
    let path = std::env::temp_dir().join(format!(
        "sync-property-{}-user{}.log",
        shared.api.namespace, client.index
    ));
    let mut dump = client.log.join("\n");
    dump.push_str("\n\nCHANGES:\n");
    let last = last_change_seq(&shared.api).await;
    let nats = async_nats::connect(test_support::nats_url()).await.unwrap();
    let stream = async_nats::jetstream::new(nats)
        .get_stream(format!(
            "{}_CHANGES",
            shared.api.namespace.to_ascii_uppercase()
        ))
        .await
        .unwrap();
    for seq in 1..=last {
        let Ok(message) = stream.get_raw_message(seq).await else {
            continue;
        };
        let Ok(changeset) =
            <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
        else {
            continue;
        };
        let changes: Vec<String> = changeset
            .changes
            .iter()
            .map(|change| {
                format!(
                    "{}/{} v{} op{}",
                    change.table, change.row_id, change.version, change.op
                )
            })
            .collect();
        dump.push_str(&format!(
            "{seq} {} {}\n",
            changeset.scope,
            changes.join(", ")
        ));
    }
    std::fs::write(&path, dump).unwrap();
    report.push_str(&format!("full log: {}\n", path.display()));
    report.push_str("connections and membership frames:\n");
    for line in &client.log {
        if line.starts_with("connect")
            || line.contains("scope_removed")
            || line.contains("closed")
            || line.contains("team_members")
        {
            let short: String = line.chars().take(400).collect();
            report.push_str(&format!("  {short}\n"));
        }
    }
    report
}

/// A client that connects to a random live replica, reads for a random while, disconnects.
async fn follow(shared: Arc<Shared>, index: usize, mut rng: StdRng, deadline: Instant) -> Client {
    let mut client = Client {
        index,
        copy: LocalCopy::default(),
        token: None,
        sessions: 0,
        change_frames: Vec::new(),
        once: Once::default(),
        log: Vec::new(),
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

/// A `change` frame as a client got it.
struct ChangeFrame {
    session: usize,
    /// (table, row id, version) of each change.
    rows: Vec<(String, String, i64)>,
    /// The teams the client's own memberships made it follow before and after the frame.
    teams_before: BTreeSet<String>,
    teams_after: BTreeSet<String>,
}

/// The teams `user_id` holds an active membership row of in `copy`.
fn own_teams(copy: &LocalCopy, user_id: uuid::Uuid) -> BTreeSet<String> {
    let user_id = user_id.to_string();
    copy.rows
        .iter()
        .filter(|(key, row)| {
            key.starts_with("team_members/")
                && row["userId"].as_str() == Some(user_id.as_str())
                && row["deletedAt"].is_null()
        })
        .map(|(_, row)| row["teamId"].as_str().unwrap().to_owned())
        .collect()
}

/// Every row version a client received, to prove none arrived twice.
#[derive(Default)]
struct Once {
    /// Held as of the client's cursor: key → the row's team (if any).
    committed: HashMap<(String, String, i64), Option<String>>,
    /// Received on this connection after its last cursor move (sent again after a resume).
    uncommitted: HashMap<(String, String, i64), Option<String>>,
    /// The last cursor received (a frame carries a new one when the client holds what it
    /// brought).
    cursor: Option<String>,
    violations: Vec<String>,
}

impl Once {
    fn frame(&mut self, event: &Event, kind: &str, session: usize) {
        let frame = &event.data;
        let mut rows: Vec<(String, &Value)> = Vec::new();
        match kind {
            "delta" => {
                for row in frame["data"].as_array().unwrap() {
                    rows.push((frame["table"].as_str().unwrap().to_owned(), row));
                }
            }
            "change" => {
                for change in frame["changes"].as_array().unwrap() {
                    rows.push((
                        change["table"].as_str().unwrap().to_owned(),
                        &change["data"],
                    ));
                }
            }
            "scope_removed" => {
                let team = frame["teamId"].as_str().unwrap().to_owned();
                self.committed
                    .retain(|_, held| held.as_deref() != Some(team.as_str()));
                self.uncommitted
                    .retain(|_, held| held.as_deref() != Some(team.as_str()));
            }
            "reset" => {
                self.committed.clear();
                self.uncommitted.clear();
            }
            _ => {}
        }
        for (table, row) in rows {
            let key = (
                table.clone(),
                row_key(&table, row).split_once('/').unwrap().1.to_owned(),
                row["version"].as_i64().unwrap(),
            );
            if self.committed.contains_key(&key) || self.uncommitted.contains_key(&key) {
                self.violations.push(format!(
                    "session {session}: {key:?} again (frame id {:?}: {frame})",
                    event.id
                ));
            }
            self.uncommitted
                .insert(key, row["teamId"].as_str().map(str::to_owned));
        }
        // Everything received up to a frame that moves the cursor is held as of that cursor.
        if let Some(id) = &event.id
            && self.cursor.as_deref() != Some(id.as_str())
        {
            self.cursor = Some(id.clone());
            self.committed.extend(self.uncommitted.drain());
        }
    }

    /// The connection ended: what came after the last cursor comes again.
    fn session_ended(&mut self) {
        self.uncommitted.clear();
    }
}

/// (table, row id, version).
type RowVersion = (String, String, i64);
/// A transaction part: its scope and row versions.
type Part = (String, Vec<RowVersion>);

/// Every committed transaction in CHANGES: its parts' scopes and row versions.
struct Transactions {
    /// (table, row id, version) → transaction id.
    by_row: HashMap<(String, String, i64), String>,
    /// transaction id → (scope, rows) of each part.
    parts: HashMap<String, Vec<Part>>,
}

impl Transactions {
    async fn read(stream: &async_nats::jetstream::stream::Stream, last: u64) -> Self {
        let mut by_row = HashMap::new();
        let mut parts: HashMap<String, Vec<Part>> = HashMap::new();
        for seq in 1..=last {
            let message = stream.get_raw_message(seq).await.unwrap();
            let changeset =
                <messages::sync::v1::Changeset as prost::Message>::decode(message.payload.as_ref())
                    .unwrap();
            assert!(
                !changeset.transaction_id.is_empty() && changeset.part_count >= 1,
                "changeset {seq} names no transaction"
            );
            let rows: Vec<(String, String, i64)> = changeset
                .changes
                .iter()
                .map(|change| (change.table.clone(), change.row_id.clone(), change.version))
                .collect();
            for row in &rows {
                let previous = by_row.insert(row.clone(), changeset.transaction_id.clone());
                assert!(
                    previous.is_none_or(|previous| previous == changeset.transaction_id),
                    "{row:?} written by two transactions"
                );
            }
            parts
                .entry(changeset.transaction_id.clone())
                .or_default()
                .push((changeset.scope.clone(), rows));
        }
        for (id, transaction) in &parts {
            let count = transaction.len();
            assert!(count >= 1, "transaction {id} has no part");
        }
        Self { by_row, parts }
    }
}

/// Each `change` frame holds one transaction, exactly its rows in the scopes the client
/// followed (its own, and the teams it belonged to before and after), and no transaction came
/// in two frames of one connection.
fn check_transactions(transactions: &Transactions, client: &Client, user_id: uuid::Uuid) {
    let user_scope = format!("user.{user_id}");
    let mut seen: HashSet<(usize, String)> = HashSet::new();
    for frame in &client.change_frames {
        let ids: BTreeSet<&String> = frame
            .rows
            .iter()
            .map(|row| {
                transactions
                    .by_row
                    .get(row)
                    .unwrap_or_else(|| panic!("{row:?} is in no changeset"))
            })
            .collect();
        assert_eq!(
            ids.len(),
            1,
            "user {}: a change frame mixes transactions {ids:?}: {:?}",
            client.index,
            frame.rows
        );
        let id = ids.into_iter().next().unwrap().clone();
        assert!(
            seen.insert((frame.session, id.clone())),
            "user {}: transaction {id} came in two frames of connection {}",
            client.index,
            frame.session
        );
        let followed: BTreeSet<&String> = frame
            .teams_before
            .intersection(&frame.teams_after)
            .collect();
        let expected: BTreeSet<&(String, String, i64)> = transactions.parts[&id]
            .iter()
            .filter(|(scope, _)| {
                *scope == user_scope
                    || scope
                        .strip_prefix("team.")
                        .is_some_and(|team| followed.contains(&team.to_owned()))
            })
            .flat_map(|(_, rows)| rows)
            .collect();
        let got: BTreeSet<&(String, String, i64)> = frame.rows.iter().collect();
        assert_eq!(
            got.len(),
            frame.rows.len(),
            "user {}: a row version twice in one frame: {:?}",
            client.index,
            frame.rows
        );
        assert_eq!(
            got, expected,
            "user {}: transaction {id} did not arrive whole (parts {:?})",
            client.index, transactions.parts[&id]
        );
    }
}
