//! Catch-up reads from the read model: the snapshot a stream starts from, and the rows after
//! a cursor, merged across the client's scopes in stream order and cut into pages that end
//! on a whole changeset, so every page's last sequence is a cursor the client can resume from.
//!
//! A row kept in several of the client's scopes (a membership: the team's and the member's
//! own) goes out once per version: from the scope whose copy has the highest sequence (the
//! transaction's last part the client follows). A page cut between the parts then cannot send
//! the version again after a resume: the copies before the cut are left out, the one after it
//! is sent.

use domain::ids::{TeamId, UserId};
use std::collections::{BTreeSet, VecDeque};

use serde::Deserialize;
use sqlx::PgPool;
use sync_protocol::changes::Scope;
use sync_protocol::cursor::Cursor;
use sync_protocol::tables;

use crate::changesets::LiveChangeset;

/// The read model's state when a stream starts.
#[derive(Debug)]
pub struct Snapshot {
    pub watermark: u64,
    pub horizon: u64,
    /// The user's memberships as materialized: (team, seq of that copy, active, updated at ms).
    pub memberships: Vec<Membership>,
}

#[derive(Debug, Clone)]
pub struct Membership {
    pub team_id: TeamId,
    pub seq: u64,
    pub active: bool,
    pub updated_at_ms: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct MemberRow {
    team_id: TeamId,
    user_id: UserId,
    deleted_at: Option<i64>,
    #[serde(default)]
    updated_at: i64,
}

impl Snapshot {
    /// Bring the memberships forward over a changeset of the user's own scope that the read
    /// model has not applied yet (its sequence is above the watermark).
    pub fn apply_own_memberships(&mut self, changeset: &LiveChangeset, user_id: UserId) {
        for change in changeset
            .changes
            .iter()
            .filter(|change| change.table == tables::TEAM_MEMBERS)
        {
            let Some((team_id, active, updated_at_ms)) = own_membership(change.data.get(), user_id)
            else {
                continue;
            };
            let membership = Membership {
                team_id,
                seq: changeset.seq,
                active,
                updated_at_ms,
            };
            match self
                .memberships
                .iter_mut()
                .find(|known| known.team_id == team_id)
            {
                Some(known) => *known = membership,
                None => self.memberships.push(membership),
            }
        }
    }
}

/// A `team_members` row's team and whether it is active, when it is `user_id`'s membership.
pub fn own_membership(json: &str, user_id: UserId) -> Option<(TeamId, bool, i64)> {
    let row: MemberRow = serde_json::from_str(json).ok()?;
    (row.user_id == user_id).then_some((row.team_id, row.deleted_at.is_none(), row.updated_at))
}

pub async fn snapshot(db: &PgPool, user_id: UserId) -> Result<Snapshot, sqlx::Error> {
    // One repeatable-read snapshot: the watermark and the memberships agree.
    let mut tx = db.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let state: Option<(i64, i64)> =
        sqlx::query_as("SELECT watermark, horizon FROM materializer_state")
            .fetch_optional(&mut *tx)
            .await?;
    let (watermark, horizon) = state.unwrap_or((0, 0));
    let rows: Vec<(i64, String)> =
        sqlx::query_as("SELECT seq, data::text FROM rows WHERE scope = $1 AND table_name = $2")
            .bind(Scope::User(user_id).key())
            .bind(tables::TEAM_MEMBERS)
            .fetch_all(&mut *tx)
            .await?;
    tx.commit().await?;
    let memberships = rows
        .into_iter()
        .filter_map(|(seq, json)| {
            own_membership(&json, user_id).map(|(team_id, active, updated_at_ms)| Membership {
                team_id,
                seq: seq as u64,
                active,
                updated_at_ms,
            })
        })
        .collect();
    Ok(Snapshot {
        watermark: watermark.max(0) as u64,
        horizon: horizon.max(0) as u64,
        memberships,
    })
}

/// A catch-up row.
#[derive(Debug)]
pub struct Row {
    pub seq: u64,
    pub table: String,
    pub data: Box<serde_json::value::RawValue>,
}

struct ScopeReader {
    scope: String,
    after: u64,
    /// Changesets past `after` the client already holds (its cursor lists them): skipped.
    held: BTreeSet<u64>,
    /// The client's other scopes: a row version also there at a higher sequence goes out
    /// from there.
    others: Vec<String>,
    buffer: VecDeque<Row>,
    exhausted: bool,
}

/// Reads the rows of several scopes after their cursors, up to a watermark, in stream order.
pub struct CatchUp {
    readers: Vec<ScopeReader>,
    watermark: u64,
    page_rows: usize,
    /// A fresh client (cursor 0) needs no tombstones.
    include_tombstones: bool,
    tables: Option<Vec<String>>,
}

impl CatchUp {
    /// `scopes`: each scope with the cursor to read it after (the client's, or the start for
    /// a scope sent again from scratch).
    pub fn new(
        scopes: Vec<(String, Cursor)>,
        watermark: u64,
        page_rows: usize,
        include_tombstones: bool,
        tables: Option<Vec<String>>,
    ) -> Self {
        let all: Vec<String> = scopes.iter().map(|(scope, _)| scope.clone()).collect();
        Self {
            readers: scopes
                .into_iter()
                .map(|(scope, cursor)| ScopeReader {
                    others: all
                        .iter()
                        .filter(|other| **other != scope)
                        .cloned()
                        .collect(),
                    scope,
                    after: cursor.through(),
                    held: cursor.listed().clone(),
                    buffer: VecDeque::new(),
                    exhausted: cursor.through() >= watermark,
                })
                .collect(),
            watermark,
            page_rows: page_rows.max(1),
            include_tombstones,
            tables,
        }
    }

    async fn fetch(
        &self,
        db: &PgPool,
        reader: &ScopeReader,
        exact_seq: Option<u64>,
    ) -> Result<Vec<Row>, sqlx::Error> {
        // Two plain statements rather than one with an OR, so each is an index range scan on
        // (scope, seq) that stops after the limit.
        let rows: Vec<(i64, String, String)> = match exact_seq {
            None => {
                sqlx::query_as(
                    "SELECT seq, table_name, data::text FROM rows
                     WHERE scope = $1 AND seq > $2 AND seq <= $3
                       AND ($4 OR NOT deleted)
                       AND ($5::text[] IS NULL OR table_name = ANY($5))
                       AND NOT EXISTS (
                           SELECT 1 FROM rows other
                           WHERE other.scope = ANY($7) AND other.table_name = rows.table_name
                             AND other.row_id = rows.row_id AND other.version = rows.version
                             AND other.seq > rows.seq AND other.seq <= $3)
                     ORDER BY seq
                     LIMIT $6",
                )
                .bind(&reader.scope)
                .bind(reader.after as i64)
                .bind(self.watermark as i64)
                .bind(self.include_tombstones)
                .bind(self.tables.as_deref())
                .bind(self.page_rows as i64)
                .bind(&reader.others)
                .fetch_all(db)
                .await?
            }
            Some(seq) => {
                sqlx::query_as(
                    "SELECT seq, table_name, data::text FROM rows
                     WHERE scope = $1 AND seq = $2
                       AND ($3 OR NOT deleted)
                       AND ($4::text[] IS NULL OR table_name = ANY($4))
                       AND NOT EXISTS (
                           SELECT 1 FROM rows other
                           WHERE other.scope = ANY($5) AND other.table_name = rows.table_name
                             AND other.row_id = rows.row_id AND other.version = rows.version
                             AND other.seq > rows.seq AND other.seq <= $6)",
                )
                .bind(&reader.scope)
                .bind(seq as i64)
                .bind(self.include_tombstones)
                .bind(self.tables.as_deref())
                .bind(&reader.others)
                .bind(self.watermark as i64)
                .fetch_all(db)
                .await?
            }
        };
        let mut out = Vec::with_capacity(rows.len());
        for (seq, table, json) in rows {
            // The column is `json`: Postgres validated it when it was written.
            let Ok(data) = serde_json::value::RawValue::from_string(json) else {
                tracing::warn!(seq, table, "skipping a read-model row that is not JSON");
                continue;
            };
            out.push(Row {
                seq: seq as u64,
                table,
                data,
            });
        }
        Ok(out)
    }

    async fn refill(&mut self, db: &PgPool, index: usize) -> Result<(), sqlx::Error> {
        let mut rows = self.fetch(db, &self.readers[index], None).await?;
        let full = rows.len() >= self.page_rows;
        if full {
            // The limit may have cut the last changeset: re-read that one whole.
            let last_seq = rows.last().map_or(0, |row| row.seq);
            rows.retain(|row| row.seq != last_seq);
            let rest = self.fetch(db, &self.readers[index], Some(last_seq)).await?;
            rows.extend(rest);
        }
        let reader = &mut self.readers[index];
        match rows.last() {
            Some(last) => reader.after = last.seq,
            None => reader.exhausted = true,
        }
        if !full {
            reader.exhausted = true;
        }
        reader.buffer.extend(rows);
        Ok(())
    }

    /// The next page (whole changesets, about `page_rows` rows), or `None` when done.
    pub async fn next_page(&mut self, db: &PgPool) -> Result<Option<Vec<Row>>, sqlx::Error> {
        let mut page: Vec<Row> = Vec::new();
        loop {
            for index in 0..self.readers.len() {
                if self.readers[index].buffer.is_empty() && !self.readers[index].exhausted {
                    self.refill(db, index).await?;
                }
            }
            let next = self
                .readers
                .iter()
                .enumerate()
                .filter_map(|(index, reader)| reader.buffer.front().map(|row| (row.seq, index)))
                .min();
            let Some((seq, index)) = next else {
                return Ok((!page.is_empty()).then_some(page));
            };
            if page.len() >= self.page_rows {
                return Ok(Some(page));
            }
            // The whole changeset: one sequence lives in one scope. One the client already
            // holds (sent live past a waiting transaction) is left out.
            let reader = &mut self.readers[index];
            let held = reader.held.contains(&seq);
            while reader.buffer.front().is_some_and(|row| row.seq == seq) {
                if let Some(row) = reader.buffer.pop_front()
                    && !held
                {
                    page.push(row);
                }
            }
        }
    }
}
