//! Sync changesets (ARCHITECTURE §5): every create/update/delete of a synced row records the
//! row, as clients receive it, for each scope that can see it; [`Changes::write`] puts one
//! changeset per scope into the outbox in the caller's transaction (one INSERT), so a changeset exists
//! exactly when its transaction commits. The relay publishes it on `changes.<scope>`.
//!
//! The changesets of one [`Changes`] are the parts of one sync transaction: they share a
//! transaction id, and each carries its part index and the scopes of all parts, so the
//! sync-streamer hands a client that follows several of them the transaction as one `change`
//! frame (docs/sync.md, "Transactions").
//!
//! Who sees what:
//! - a personal journal entry or prompt: its owner (`user.<id>`);
//! - a team's entry or prompt, the team row: the team (`team.<id>`);
//! - a membership: the team, and the member's own scope (so a client learns that it joined
//!   or left a team before it follows the team's scope);
//! - a user's profile: that user.

use std::collections::BTreeMap;

use bus::outbox::OutboxBatch;
use messages::sync::v1::{ChangeOp, Changeset, RowChange};
use prost::Message;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::ApiError;

/// A sync scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Scope {
    User(Uuid),
    Team(Uuid),
}

impl Scope {
    /// `user.<uuid>` / `team.<uuid>`.
    pub fn key(&self) -> String {
        match self {
            Self::User(user_id) => format!("user.{user_id}"),
            Self::Team(team_id) => format!("team.{team_id}"),
        }
    }

    /// The scope of a row that is either personal (owned by `user_id`) or a team's.
    pub fn owner(user_id: Uuid, team_id: Option<Uuid>) -> Self {
        match team_id {
            Some(team_id) => Self::Team(team_id),
            None => Self::User(user_id),
        }
    }
}

/// A row that clients sync: its wire form is its `Serialize` output.
pub trait SyncedRow: Serialize {
    /// The table name clients see in frames (`journal_entries`, ...).
    const TABLE: &'static str;
    fn row_id(&self) -> String;
    fn version(&self) -> i64;
}

/// What a transaction changed, by scope.
#[derive(Debug, Default)]
pub struct Changes {
    by_scope: BTreeMap<Scope, Vec<RowChange>>,
}

/// The kind of change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Insert,
    Update,
    /// Soft delete: the row (with `deletedAt`) is the tombstone.
    Delete,
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
    ) -> Result<(), ApiError> {
        let row_json = serde_json::to_vec(row).map_err(ApiError::internal)?;
        let change = RowChange {
            table: R::TABLE.to_owned(),
            op: match op {
                Op::Insert => ChangeOp::Insert,
                Op::Update => ChangeOp::Update,
                Op::Delete => ChangeOp::Delete,
            } as i32,
            row_id: row.row_id(),
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

    /// Write one changeset per scope to the outbox (inside the caller's transaction), all in
    /// one INSERT. Each scope's changesets keep their order (the scope is the ordering key).
    pub async fn write(self, conn: &mut PgConnection) -> Result<(), ApiError> {
        let mut batch = OutboxBatch::new();
        self.push_to(&mut batch);
        batch.write(conn).await?;
        Ok(())
    }

    /// Add one changeset per scope to `batch`, for a caller that writes other messages in the
    /// same statement (a create and its event).
    pub fn push_to(self, batch: &mut OutboxBatch) {
        let written_at_ms = chrono::Utc::now().timestamp_millis();
        let transaction_id = Uuid::now_v7().to_string();
        let transaction_scopes: Vec<String> = self.by_scope.keys().map(Scope::key).collect();
        let part_count = u32::try_from(transaction_scopes.len()).unwrap_or(u32::MAX);
        for (part_index, (key, changes)) in
            (0u32..).zip(transaction_scopes.iter().zip(self.by_scope.into_values()))
        {
            let subject = format!("changes.{key}");
            let changeset = Changeset {
                scope: key.clone(),
                changes,
                written_at_ms,
                transaction_id: transaction_id.clone(),
                part_index,
                part_count,
                transaction_scopes: transaction_scopes.clone(),
            };
            batch.push_raw(
                &subject,
                "changeset",
                changeset.encode_to_vec(),
                Some(&subject),
            );
        }
    }
}
