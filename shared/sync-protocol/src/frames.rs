//! The frames a sync client receives (ARCHITECTURE §5, docs/sync.md): every frame is one JSON
//! object, carried by SSE as `data:`. The sync-streamer writes them ([`Frame`], borrowing what
//! it already holds); Rust clients and tests read them as [`ReceivedFrame`] (owned), and other
//! clients with their JSON schema (`cargo xtask contract` exports it as `SyncFrame`).

use std::sync::Arc;

use serde::{Deserialize, Serialize};
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
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

/// A frame as a Rust client reads it: [`Frame`]'s wire form, owned. A test serializes every
/// kind of [`Frame`] and reads it back as this, so the two cannot drift apart.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum ReceivedFrame {
    #[serde(rename_all = "camelCase")]
    Delta {
        table: Option<String>,
        data: Vec<serde_json::Value>,
        is_last_chunk: bool,
        cursor: String,
    },
    Change {
        cursor: String,
        changes: Vec<ReceivedChange>,
    },
    Heartbeat {
        timestamp: i64,
    },
    Reset {
        reason: String,
    },
    #[serde(rename_all = "camelCase")]
    ScopeRemoved {
        scope: String,
        team_id: String,
        cursor: String,
    },
    Closed {
        reason: CloseReason,
    },
}

impl ReceivedFrame {
    /// Read one frame (an SSE event's `data:`).
    pub fn parse(json: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(json)
    }
}

/// One row change of a received `change` frame ([`LiveChange`], owned).
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReceivedChange {
    pub table: String,
    /// `insert`, `update` or `delete`.
    pub op: String,
    pub row_id: String,
    pub version: i64,
    /// The row (`null` for a delete).
    pub data: serde_json::Value,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn raw(json: &str) -> Box<RawValue> {
        RawValue::from_string(json.to_owned()).unwrap()
    }

    #[test]
    fn every_frame_reads_back_as_a_received_frame() {
        let row = raw(r#"{"journalEntryId":"e1","title":"Hello"}"#);
        let change = LiveChange {
            table: "journal_entries".to_owned(),
            op: "update",
            row_id: "e1".to_owned(),
            version: 7,
            data: Arc::from(raw(r#"{"journalEntryId":"e1","title":"Hello again"}"#)),
        };
        let frames = [
            Frame::Delta {
                table: Some("journal_entries"),
                data: vec![&*row],
                is_last_chunk: false,
                cursor: "c1".to_owned(),
            },
            Frame::Delta {
                table: None,
                data: Vec::new(),
                is_last_chunk: true,
                cursor: "c2".to_owned(),
            },
            Frame::Change {
                cursor: "c3".to_owned(),
                changes: vec![&change],
            },
            Frame::Heartbeat {
                timestamp: 1_700_000_000_000,
            },
            Frame::Reset {
                reason: "cursor_expired",
            },
            Frame::ScopeRemoved {
                scope: "team.t1".to_owned(),
                team_id: "t1".to_owned(),
                cursor: "c4".to_owned(),
            },
            Frame::Closed {
                reason: CloseReason::TokenExpired,
            },
        ];
        let received: Vec<ReceivedFrame> = frames
            .iter()
            .map(|frame| ReceivedFrame::parse(&frame.to_json()).unwrap())
            .collect();
        let row_value: serde_json::Value = serde_json::from_str(row.get()).unwrap();
        assert_eq!(
            received,
            [
                ReceivedFrame::Delta {
                    table: Some("journal_entries".to_owned()),
                    data: vec![row_value],
                    is_last_chunk: false,
                    cursor: "c1".to_owned(),
                },
                ReceivedFrame::Delta {
                    table: None,
                    data: Vec::new(),
                    is_last_chunk: true,
                    cursor: "c2".to_owned(),
                },
                ReceivedFrame::Change {
                    cursor: "c3".to_owned(),
                    changes: vec![ReceivedChange {
                        table: "journal_entries".to_owned(),
                        op: "update".to_owned(),
                        row_id: "e1".to_owned(),
                        version: 7,
                        data: serde_json::json!({"journalEntryId": "e1", "title": "Hello again"}),
                    }],
                },
                ReceivedFrame::Heartbeat {
                    timestamp: 1_700_000_000_000
                },
                ReceivedFrame::Reset {
                    reason: "cursor_expired".to_owned()
                },
                ReceivedFrame::ScopeRemoved {
                    scope: "team.t1".to_owned(),
                    team_id: "t1".to_owned(),
                    cursor: "c4".to_owned(),
                },
                ReceivedFrame::Closed {
                    reason: CloseReason::TokenExpired
                },
            ]
        );
    }

    #[test]
    fn an_unknown_frame_type_is_an_error_not_a_guess() {
        assert!(ReceivedFrame::parse(r#"{"type":"teleport","cursor":"c"}"#).is_err());
        assert!(ReceivedFrame::parse(r#"{"type":"closed","reason":"bored"}"#).is_err());
    }
}
