//! The frames a sync client receives (ARCHITECTURE §5, docs/sync.md): every frame is one JSON
//! object, carried by SSE as `data:`. The sync-streamer writes them; clients and tests read
//! them with these types' JSON schema (`cargo xtask contract` exports it as `SyncFrame`).

use std::sync::Arc;

use serde::Serialize;
use serde_json::value::RawValue;

/// One row change of a `change` frame.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(rename = "SyncChange")]
pub struct LiveChange {
    pub table: String,
    /// `insert`, `update` or `delete`.
    pub op: &'static str,
    pub row_id: String,
    pub version: i64,
    /// The row as the api answers it (`null` for a delete).
    #[schemars(with = "serde_json::Value")]
    pub data: Arc<RawValue>,
}

impl LiveChange {
    pub fn deleted(&self) -> bool {
        self.op == "delete"
    }
}

/// A frame as clients receive it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case")]
#[schemars(rename = "SyncFrame")]
pub enum Frame<'a> {
    /// Catch-up rows of one table, from the read model.
    #[serde(rename_all = "camelCase")]
    Delta {
        /// `null` only in an empty last chunk (nothing to catch up).
        table: Option<&'a str>,
        #[schemars(with = "Vec<serde_json::Value>")]
        data: Vec<&'a RawValue>,
        is_last_chunk: bool,
        cursor: String,
    },
    /// One committed changeset, live.
    Change {
        cursor: String,
        changes: Vec<&'a LiveChange>,
    },
    Heartbeat {
        timestamp: i64,
    },
    /// The cursor is older than the tombstone retention: drop local state; a full catch-up
    /// follows on the same stream.
    Reset {
        reason: &'static str,
    },
    /// The user left (or was removed from) a team: drop every row of that team's scope.
    #[serde(rename_all = "camelCase")]
    ScopeRemoved {
        scope: String,
        team_id: String,
        cursor: String,
    },
    /// The stream ends; `reason` says what the client should do (docs/sync.md).
    Closed {
        reason: CloseReason,
    },
}

impl Frame<'_> {
    pub fn to_json(&self) -> String {
        // Frames hold strings, numbers and already-valid raw JSON: serializing cannot fail.
        serde_json::to_string(self).unwrap_or_default()
    }
}

/// Why the server ends a stream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "SyncCloseReason")]
pub enum CloseReason {
    /// The client's buffer overflowed: reconnect and resume from the last cursor.
    SlowClient,
    /// The user joined a team: reconnect (with a fresh token if it lacks the team).
    ScopesChanged,
    /// Get a new sync token, then reconnect.
    TokenExpired,
    /// Sign in again.
    SessionRevoked,
    /// This replica is stopping: reconnect (to another replica).
    Shutdown,
}
