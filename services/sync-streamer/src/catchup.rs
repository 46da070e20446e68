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
use std::collections::{BTreeSet, HashSet, VecDeque};

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
    /// The membership row as the read model held it at the watermark; `None` for one taken
    /// from a changeset past the watermark.
    pub row: Option<MembershipRow>,
}

/// A membership row as of the snapshot, for [`Snapshot::pinned_memberships`].
#[derive(Debug, Clone)]
pub struct MembershipRow {
    pub row_id: String,
    /// The highest sequence of its copies (the member's scope, the team's): where the
    /// catch-up sends a row kept in several scopes.
    pub last_seq: u64,
    pub data: Box<serde_json::value::RawValue>,
}

/// A row the catch-up sends as the snapshot held it (see [`Snapshot::pinned_memberships`]).
#[derive(Debug)]
pub struct PinnedRow {
    pub row_id: String,
    pub row: Row,
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
                row: None,
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

    /// The user's membership rows of `teams` (the teams the stream serves) that the client
    /// does not hold as of `since`, as the snapshot has them: the catch-up sends these copies.
    ///
    /// The catch-up reads its pages after the snapshot, from a read model that may have moved
    /// on. A row changed since is left out of the pages (its new version, past the watermark,
    /// comes live), which is right for every row but these: a client would otherwise get a
    /// team's rows without its own membership of the team, until the change (say, its
    /// removal) arrived.
    pub fn pinned_memberships(&self, since: &Cursor, teams: &HashSet<TeamId>) -> Vec<PinnedRow> {
        self.memberships
            .iter()
            .filter(|membership| membership.active && teams.contains(&membership.team_id))
            .filter_map(|membership| membership.row.as_ref())
            .filter(|row| !since.holds(row.last_seq))
            .map(|row| PinnedRow {
                row_id: row.row_id.clone(),
                row: Row {
                    seq: row.last_seq,
                    table: tables::TEAM_MEMBERS.to_owned(),
                    data: row.data.clone(),
                },
            })
            .collect()
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
    let rows: Vec<(i64, String, i64, String)> = sqlx::query_as(
        "SELECT seq, row_id, version, data::text FROM rows WHERE scope = $1 AND table_name = $2",
    )
    .bind(Scope::User(user_id).key())
    .bind(tables::TEAM_MEMBERS)
    .fetch_all(&mut *tx)
    .await?;
    let mut memberships: Vec<Membership> = Vec::with_capacity(rows.len());
    let mut versions: Vec<i64> = Vec::with_capacity(rows.len());
    for (seq, row_id, version, json) in rows {
        let Some((team_id, active, updated_at_ms)) = own_membership(&json, user_id) else {
            continue;
        };
        let data = serde_json::value::RawValue::from_string(json).ok();
        memberships.push(Membership {
            team_id,
            seq: seq as u64,
            active,
            updated_at_ms,
            row: data.map(|data| MembershipRow {
                row_id,
                last_seq: seq as u64,
                data,
            }),
        });
        versions.push(version);
    }
    // The same versions' copies in the teams' scopes, in the same snapshot.
    let team_scopes: Vec<String> = memberships
        .iter()
        .map(|membership| Scope::Team(membership.team_id).key())
        .collect();
    let row_ids: Vec<String> = memberships
        .iter()
        .map(|membership| {
            membership
                .row
                .as_ref()
                .map_or_else(String::new, |row| row.row_id.clone())
        })
        .collect();
    let team_copies: Vec<(String, i64)> = sqlx::query_as(
        "SELECT copy.row_id, copy.seq
           FROM unnest($1::text[], $2::text[], $3::bigint[]) AS own(scope, row_id, version)
           JOIN rows copy ON copy.scope = own.scope AND copy.table_name = $4
                         AND copy.row_id = own.row_id AND copy.version = own.version",
    )
    .bind(&team_scopes)
    .bind(&row_ids)
    .bind(&versions)
    .bind(tables::TEAM_MEMBERS)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    for (row_id, seq) in team_copies {
        if let Some(row) = memberships
            .iter_mut()
            .filter_map(|membership| membership.row.as_mut())
            .find(|row| row.row_id == row_id)
        {
            row.last_seq = row.last_seq.max(seq as u64);
        }
    }
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
    /// The membership rows sent as the snapshot held them (the last reader holds them): the
    /// pages leave out the read model's copies of these rows.
    pinned_row_ids: Vec<String>,
}

impl CatchUp {
    /// `scopes`: each scope with the cursor to read it after (the client's, or the start for
    /// a scope sent again from scratch). `pinned`: rows sent as given, in sequence order with
    /// the rest ([`Snapshot::pinned_memberships`]).
    pub fn new(
        scopes: Vec<(String, Cursor)>,
        watermark: u64,
        page_rows: usize,
        include_tombstones: bool,
        tables: Option<Vec<String>>,
        pinned: Vec<PinnedRow>,
    ) -> Self {
        let all: Vec<String> = scopes.iter().map(|(scope, _)| scope.clone()).collect();
        let mut readers: Vec<ScopeReader> = scopes
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
            .collect();
        let pinned: Vec<PinnedRow> = pinned
            .into_iter()
            .filter(|pinned| {
                tables
                    .as_ref()
                    .is_none_or(|tables| tables.contains(&pinned.row.table))
            })
            .collect();
        let pinned_row_ids = pinned.iter().map(|pinned| pinned.row_id.clone()).collect();
        let mut buffer: Vec<Row> = pinned.into_iter().map(|pinned| pinned.row).collect();
        buffer.sort_by_key(|row| row.seq);
        // A reader with nothing to read: its buffer is the pinned rows.
        readers.push(ScopeReader {
            scope: String::new(),
            after: watermark,
            held: BTreeSet::new(),
            others: Vec::new(),
            buffer: buffer.into(),
            exhausted: true,
        });
        Self {
            readers,
            watermark,
            page_rows: page_rows.max(1),
            include_tombstones,
            tables,
            pinned_row_ids,
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
                       AND NOT (table_name = $8 AND row_id = ANY($9))
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
                .bind(tables::TEAM_MEMBERS)
                .bind(&self.pinned_row_ids)
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
                             AND other.seq > rows.seq AND other.seq <= $6)
                       AND NOT (table_name = $7 AND row_id = ANY($8))",
                )
                .bind(&reader.scope)
                .bind(seq as i64)
                .bind(self.include_tombstones)
                .bind(self.tables.as_deref())
                .bind(&reader.others)
                .bind(self.watermark as i64)
                .bind(tables::TEAM_MEMBERS)
                .bind(&self.pinned_row_ids)
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
                .filter_map(|reader| reader.buffer.front().map(|row| row.seq))
                .min();
            let Some(seq) = next else {
                return Ok((!page.is_empty()).then_some(page));
            };
            if page.len() >= self.page_rows {
                return Ok(Some(page));
            }
            // The whole changeset: one sequence lives in one scope, and a pinned row of it
            // goes with it. One the client already holds (sent live past a waiting
            // transaction) is left out.
            for reader in &mut self.readers {
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
}
