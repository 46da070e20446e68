//! Changesets as the streamer holds them: decoded once from CHANGES and shared by every client
//! that sees them. The frames they become are `sync_protocol::frames`.

use std::sync::{Arc, OnceLock};

use messages::sync::v1::{ChangeOp, Changeset};
use prost::Message;
use serde_json::value::RawValue;
use sync_protocol::frames::{Frame, LiveChange};

/// One changeset from CHANGES, decoded once and shared by every client that sees it.
#[derive(Debug)]
pub struct LiveChangeset {
    /// The CHANGES stream sequence: the cursor.
    pub seq: u64,
    /// `user.<uuid>` or `team.<uuid>`.
    pub scope: String,
    pub changes: Vec<LiveChange>,
    /// When the api wrote it (epoch ms), for latency metrics.
    pub written_at_ms: i64,
    /// The transaction it is a part of, when that transaction wrote several changesets;
    /// `None` for a whole transaction (one part, or an old changeset without the fields).
    pub transaction: Option<TransactionPart>,
    /// Roughly what it costs a client buffer.
    pub bytes: usize,
    /// The `change` frame with every change, serialized on first use.
    full_frame: OnceLock<Arc<str>>,
}

/// One part of a transaction that wrote changesets in several scopes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransactionPart {
    /// The transaction id (the same in every part).
    pub id: String,
    /// This part's index in `scopes`.
    pub index: usize,
    /// Every part's scope, by part index.
    pub scopes: Vec<String>,
}

/// Why a message could not be read as a changeset (it is skipped and logged).
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("not a changeset: {0}")]
    Protobuf(#[from] prost::DecodeError),
    #[error("row_json of {table}/{row_id} is not JSON: {error}")]
    RowJson {
        table: String,
        row_id: String,
        error: serde_json::Error,
    },
}

impl LiveChangeset {
    pub fn decode(seq: u64, payload: &[u8]) -> Result<Self, DecodeError> {
        let changeset = Changeset::decode(payload)?;
        let mut bytes = 64 + changeset.scope.len();
        let mut changes = Vec::with_capacity(changeset.changes.len());
        for change in changeset.changes {
            let op = match ChangeOp::try_from(change.op).unwrap_or(ChangeOp::Unspecified) {
                ChangeOp::Insert => "insert",
                ChangeOp::Delete => "delete",
                // An unknown op is an update: the row is the latest state either way.
                ChangeOp::Update | ChangeOp::Unspecified => "update",
            };
            let json = String::from_utf8_lossy(&change.row_json).into_owned();
            let data: Arc<RawValue> =
                Arc::from(
                    RawValue::from_string(json).map_err(|error| DecodeError::RowJson {
                        table: change.table.clone(),
                        row_id: change.row_id.clone(),
                        error,
                    })?,
                );
            bytes += 64 + change.table.len() + change.row_id.len() + data.get().len();
            changes.push(LiveChange {
                table: change.table,
                op,
                row_id: change.row_id,
                version: change.version,
                data,
            });
        }
        // Parts only when they describe themselves consistently; anything else is whole.
        let index = changeset.part_index as usize;
        let transaction = (changeset.part_count > 1
            && !changeset.transaction_id.is_empty()
            && changeset.transaction_scopes.len() == changeset.part_count as usize
            && changeset.transaction_scopes.get(index) == Some(&changeset.scope))
        .then_some(TransactionPart {
            id: changeset.transaction_id,
            index,
            scopes: changeset.transaction_scopes,
        });
        Ok(Self {
            seq,
            scope: changeset.scope,
            transaction,
            changes,
            written_at_ms: changeset.written_at_ms,
            bytes,
            full_frame: OnceLock::new(),
        })
    }

    /// The `change` frame carrying every change (shared by all clients without a filter).
    pub fn full_frame(&self) -> Arc<str> {
        Arc::clone(self.full_frame.get_or_init(|| {
            Arc::from(
                Frame::Change {
                    cursor: self.seq.to_string(),
                    changes: self.changes.iter().collect(),
                }
                .to_json(),
            )
        }))
    }
}
