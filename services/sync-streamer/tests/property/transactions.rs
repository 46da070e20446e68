//! The checks on transactions: no row version twice, each frame one whole transaction.

use std::collections::{BTreeSet, HashMap, HashSet};

use serde_json::Value;

use crate::client::Client;
use crate::common::*;

/// Every row version a client received, to prove none arrived twice.
#[derive(Default)]
pub(crate) struct Once {
    /// Held as of the client's cursor: key → the row's team (if any).
    pub(crate) committed: HashMap<(String, String, i64), Option<String>>,
    /// Received on this connection after its last cursor move (sent again after a resume).
    pub(crate) uncommitted: HashMap<(String, String, i64), Option<String>>,
    /// The last cursor received (a frame carries a new one when the client holds what it
    /// brought).
    pub(crate) cursor: Option<String>,
    pub(crate) violations: Vec<String>,
}

impl Once {
    pub(crate) fn frame(&mut self, event: &Event, kind: &str, session: usize) {
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
    pub(crate) fn session_ended(&mut self) {
        self.uncommitted.clear();
    }
}

/// (table, row id, version).
pub(crate) type RowVersion = (String, String, i64);
/// A transaction part: its scope and row versions.
pub(crate) type Part = (String, Vec<RowVersion>);

/// Every committed transaction in CHANGES: its parts' scopes and row versions.
pub(crate) struct Transactions {
    /// (table, row id, version) → transaction id.
    pub(crate) by_row: HashMap<(String, String, i64), String>,
    /// transaction id → (scope, rows) of each part.
    pub(crate) parts: HashMap<String, Vec<Part>>,
}

impl Transactions {
    pub(crate) async fn read(stream: &async_nats::jetstream::stream::Stream, last: u64) -> Self {
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
pub(crate) fn check_transactions(
    transactions: &Transactions,
    client: &Client,
    user_id: uuid::Uuid,
) {
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
