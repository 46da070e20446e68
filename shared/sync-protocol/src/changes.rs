//! Sync changesets (ARCHITECTURE §5), written the same way by every service that owns synced
//! rows: each create/update/delete records the row, as clients receive it, for each scope that
//! can see it, through [`crate::synced_tx::SyncedTx`], which puts one changeset per scope into
//! the caller's outbox in the caller's transaction (one INSERT with its events), so a changeset
//! exists exactly when its transaction commits. The relay publishes it on `changes.<scope>`,
//! the scope as the ordering key.
//!
//! The changesets of one [`Changes`] are the parts of one sync transaction: they share a
//! transaction id, and each carries its part index and the scopes of all parts, so the
//! sync-streamer hands a client that follows several of them the transaction as one `change`
//! frame (docs/sync.md, "Transactions").
//!
//! Who sees what:
//! - a personal journal entry or prompt, an insight: its owner (`user.<id>`);
//! - a team's entry or prompt, the team row: the team (`team.<id>`);
//! - a membership: the team, and the member's own scope (so a client learns that it joined
//!   or left a team before it follows the team's scope);
//! - a user's profile: that user.

use std::collections::BTreeMap;
use std::fmt;

use bus::outbox::OutboxBatch;
use domain::ids::{TeamId, UserId};
use messages::sync::v1::{ChangeOp, Changeset, RowChange};
use prost::Message;
use serde::Serialize;
use uuid::Uuid;

/// A sync scope: whose clients see a row.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Scope {
    User(UserId),
    Team(TeamId),
}

impl Scope {
    /// `user.<uuid>` / `team.<uuid>`: the scope's name in subjects, changesets and frames.
    pub fn key(&self) -> String {
        self.to_string()
    }

    /// The scope of a row that is either personal (owned by `user_id`) or a team's.
    pub fn owner(user_id: UserId, team_id: Option<TeamId>) -> Self {
        match team_id {
            Some(team_id) => Self::Team(team_id),
            None => Self::User(user_id),
        }
    }

    /// The scope named `key` (`user.<uuid>` / `team.<uuid>`), if it is one.
    pub fn parse(key: &str) -> Option<Self> {
        if let Some(user_id) = key.strip_prefix("user.") {
            return user_id.parse().ok().map(Self::User);
        }
        key.strip_prefix("team.")
            .and_then(|team_id| team_id.parse().ok())
            .map(Self::Team)
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::User(user_id) => write!(formatter, "user.{user_id}"),
            Self::Team(team_id) => write!(formatter, "team.{team_id}"),
        }
    }
}

/// A row that clients sync: its wire form is its `Serialize` output (camelCase, epoch ms).
pub trait SyncedRow: Serialize {
    /// The table name clients see in frames: one of [`crate::tables::SYNCED_TABLES`].
    const TABLE: &'static str;
    fn row_id(&self) -> String;
    fn version(&self) -> i64;
}

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    /// Soft delete: the row (with `deletedAt`) is the tombstone.
    Delete,
}

/// A synced row did not serialize (a bug in its `Serialize`, never the client's input).
#[derive(Debug, thiserror::Error)]
#[error("the synced row {table}/{row_id} did not serialize: {source}")]
pub struct RowNotSerializable {
    pub table: &'static str,
    pub row_id: String,
    #[source]
    pub source: serde_json::Error,
}

/// What a transaction changed, by scope.
#[derive(Debug, Default)]
pub struct Changes {
    by_scope: BTreeMap<Scope, Vec<RowChange>>,
}

impl Changes {
    pub fn new() -> Self {
        Self::default()
    }

    /// Record `row` as changed for every scope in `scopes`.
    pub fn record<R: SyncedRow>(
        &mut self,
        scopes: &[Scope],
        op: Op,
        row: &R,
    ) -> Result<(), RowNotSerializable> {
        let row_id = row.row_id();
        let row_json = serde_json::to_vec(row).map_err(|source| RowNotSerializable {
            table: R::TABLE,
            row_id: row_id.clone(),
            source,
        })?;
        let change = RowChange {
            table: R::TABLE.to_owned(),
            op: match op {
                Op::Insert => ChangeOp::Insert,
                Op::Update => ChangeOp::Update,
                Op::Delete => ChangeOp::Delete,
            } as i32,
            row_id,
            version: row.version(),
            row_json,
        };
        for scope in scopes {
            self.by_scope
                .entry(*scope)
                .or_default()
                .push(change.clone());
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.by_scope.is_empty()
    }

    /// Add one changeset per scope to `batch` (nothing when nothing changed). Each scope's
    /// changesets keep their order (the scope is the ordering key).
    pub(crate) fn push_to(self, batch: &mut OutboxBatch) {
        for (subject, changeset) in self.into_changesets(chrono::Utc::now().timestamp_millis()) {
            batch.push_raw(
                &subject,
                "changeset",
                changeset.encode_to_vec(),
                Some(&subject),
            );
        }
    }

    /// The changesets with their subjects (`changes.<scope>`), parts of one transaction.
    fn into_changesets(self, written_at_ms: i64) -> Vec<(String, Changeset)> {
        let transaction_id = Uuid::now_v7().to_string();
        let transaction_scopes: Vec<String> = self.by_scope.keys().map(Scope::key).collect();
        let part_count = u32::try_from(transaction_scopes.len()).unwrap_or(u32::MAX);
        (0u32..)
            .zip(transaction_scopes.iter().zip(self.by_scope.into_values()))
            .map(|(part_index, (key, changes))| {
                let changeset = Changeset {
                    scope: key.clone(),
                    changes,
                    written_at_ms,
                    transaction_id: transaction_id.clone(),
                    part_index,
                    part_count,
                    transaction_scopes: transaction_scopes.clone(),
                };
                (format!("changes.{key}"), changeset)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[derive(Serialize)]
    #[serde(rename_all = "camelCase")]
    struct Member {
        team_id: TeamId,
        user_id: UserId,
        version: i64,
    }

    impl SyncedRow for Member {
        const TABLE: &'static str = "team_members";
        fn row_id(&self) -> String {
            format!("{}:{}", self.team_id, self.user_id)
        }
        fn version(&self) -> i64 {
            self.version
        }
    }

    #[test]
    fn scopes_round_trip_through_their_keys() {
        let id = Uuid::now_v7();
        let (user_id, team_id) = (UserId::from_uuid(id), TeamId::from_uuid(id));
        for scope in [Scope::User(user_id), Scope::Team(team_id)] {
            assert_eq!(Scope::parse(&scope.key()), Some(scope));
        }
        assert_eq!(Scope::owner(user_id, None), Scope::User(user_id));
        assert_eq!(Scope::owner(user_id, Some(team_id)), Scope::Team(team_id));
        assert_eq!(Scope::parse("user.not-a-uuid"), None);
        assert_eq!(Scope::parse(&format!("org.{id}")), None);
    }

    #[test]
    fn a_row_in_two_scopes_is_one_transaction_of_two_parts() {
        let member = Member {
            team_id: TeamId::generate(),
            user_id: UserId::generate(),
            version: 3,
        };
        let scopes = [Scope::Team(member.team_id), Scope::User(member.user_id)];
        let mut changes = Changes::new();
        changes.record(&scopes, Op::Update, &member).unwrap();
        let parts = changes.into_changesets(7);
        assert_eq!(parts.len(), 2);
        let keys: Vec<String> = parts.iter().map(|(_, part)| part.scope.clone()).collect();
        for (index, (subject, part)) in parts.iter().enumerate() {
            assert_eq!(*subject, format!("changes.{}", part.scope));
            assert_eq!(part.part_index as usize, index);
            assert_eq!(part.part_count, 2);
            assert_eq!(part.transaction_scopes, keys);
            assert_eq!(part.transaction_id, parts[0].1.transaction_id);
            assert_eq!(part.written_at_ms, 7);
            assert_eq!(part.changes.len(), 1);
            assert_eq!(part.changes[0].version, 3);
            assert_eq!(part.changes[0].op, ChangeOp::Update as i32);
            let row: serde_json::Value = serde_json::from_slice(&part.changes[0].row_json).unwrap();
            assert_eq!(row["teamId"], member.team_id.to_string());
        }
    }
}
