//! Sync changesets for the rows the worker publishes (ARCHITECTURE §5), written to the worker's
//! own outbox in the caller's transaction exactly like the api writes its own: one changeset
//! per scope on `changes.<scope>`, the scope as the ordering key, so the relay keeps a scope's
//! changesets in order and the sync-streamer materializes them like any other table.

use messages::sync::v1::{ChangeOp, Changeset, RowChange};
use prost::Message;
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

/// A row clients sync: its wire form is its `Serialize` output (camelCase, epoch ms).
pub trait SyncedRow: Serialize {
    /// The table name clients see in frames.
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

/// What one transaction changed in one user's scope (the worker's rows are all personal).
#[derive(Debug)]
pub struct UserChanges {
    user_id: Uuid,
    changes: Vec<RowChange>,
}

impl UserChanges {
    pub fn new(user_id: Uuid) -> Self {
        Self {
            user_id,
            changes: Vec::new(),
        }
    }

    pub fn record<R: SyncedRow>(&mut self, op: Op, row: &R) -> Result<(), serde_json::Error> {
        self.changes.push(RowChange {
            table: R::TABLE.to_owned(),
            op: match op {
                Op::Insert => ChangeOp::Insert,
                Op::Update => ChangeOp::Update,
                Op::Delete => ChangeOp::Delete,
            } as i32,
            row_id: row.row_id(),
            version: row.version(),
            row_json: serde_json::to_vec(row)?,
        });
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.changes.is_empty()
    }

    /// Write the changeset to the outbox (nothing when nothing changed).
    pub async fn write(self, conn: &mut PgConnection) -> Result<(), bus::BusError> {
        if self.changes.is_empty() {
            return Ok(());
        }
        let scope = format!("user.{}", self.user_id);
        let subject = format!("changes.{scope}");
        // A whole transaction of one part (docs/sync.md, "Transactions").
        let changeset = Changeset {
            scope: scope.clone(),
            changes: self.changes,
            written_at_ms: chrono::Utc::now().timestamp_millis(),
            transaction_id: Uuid::now_v7().to_string(),
            part_index: 0,
            part_count: 1,
            transaction_scopes: vec![scope],
        };
        bus::outbox::emit_raw(
            conn,
            &subject,
            "changeset",
            &changeset.encode_to_vec(),
            Some(&subject),
        )
        .await?;
        Ok(())
    }
}
