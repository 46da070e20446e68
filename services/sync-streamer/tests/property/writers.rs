//! The writers: entries, transactions across scopes and membership moves, and the count of
//! their outcomes.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rand::RngExt;
use rand::rngs::StdRng;
use serde_json::json;
use sync_protocol::synced_tx::SyncedRecorder;

use crate::common::api_common::Answer;
use crate::common::*;

/// The owners (user index per team index): they never leave, so the teams live on.
const OWNERS: [usize; 2] = [0, 3];

pub(crate) struct Shared {
    pub(crate) api: TestApi,
    pub(crate) users: Vec<TestUser>,
    pub(crate) teams: Vec<String>,
    /// Live replica URLs.
    pub(crate) replicas: Mutex<Vec<String>>,
    pub(crate) entries: Mutex<Vec<Entry>>,
    /// The test's own model of who belongs where: (team index, user index). Only
    /// `change_memberships` changes it, after the api confirmed the change.
    pub(crate) memberships: Mutex<BTreeSet<(usize, usize)>>,
    /// Odd while a membership move (a join or a leave) runs.
    pub(crate) membership_epoch: AtomicU64,
    pub(crate) successful_writes: AtomicUsize,
    pub(crate) refused_writes: AtomicUsize,
    pub(crate) membership_moves: AtomicUsize,
    /// Transactions written across several scopes by `edit_across_scopes`.
    pub(crate) multi_scope_edits: AtomicUsize,
}

/// An entry created so far.
#[derive(Clone)]
pub(crate) struct Entry {
    pub(crate) id: String,
    /// User index.
    pub(crate) author: usize,
    /// Team index (`None`: personal).
    pub(crate) team: Option<usize>,
}

/// Entries: create (personal or team), update, delete, restore.
pub(crate) async fn write(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
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
pub(crate) async fn edit_across_scopes(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
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
pub(crate) async fn change_memberships(shared: Arc<Shared>, mut rng: StdRng, deadline: Instant) {
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
            let invitation = api.invitation_to(member, team).await;
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
    pub(crate) fn member_throughout(
        &self,
        epoch: u64,
        user: usize,
        team: Option<usize>,
    ) -> Option<bool> {
        let stable =
            epoch.is_multiple_of(2) && self.membership_epoch.load(Ordering::SeqCst) == epoch;
        if !stable {
            return None;
        }
        Some(team.is_none_or(|team| self.memberships.lock().unwrap().contains(&(team, user))))
    }

    /// The teams `user` belongs to per the model.
    pub(crate) fn model_teams(&self, user: usize) -> Vec<uuid::Uuid> {
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
    pub(crate) async fn check_memberships(&self, user: usize) {
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
