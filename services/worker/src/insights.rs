//! Entry insights: `journal_entry.created|updated|deleted|restored` → per-user writing insights
//! (word count, entries per day, current and longest streak, time-of-day histogram),
//! published to the user's clients as the synced tables `entry_insights` and
//! `entry_insight_days`.
//!
//! Every event carries the entry's facts as of its version (`JournalEntryFacts`, filled in by
//! the api). The handlers are batch handlers (`BusRouter::on_batch`): one transaction per
//! fetched batch of events, whatever its size:
//! 1. lock the authors' `entry_insights` rows (in user id order), so one user's batches apply
//!    one at a time while different users' run in parallel;
//! 2. fold the events, in delivery order, into the entries' `journal_entry_activity` rows: an
//!    event applies only if its version is newer than the row's (events may arrive out of
//!    order after a retry), and the changed rows are written with one multi-row statement;
//! 3. recount the days the entries left and joined, then each author's totals — once per
//!    batch, from the rows (never by incrementing, so nothing drifts) — and write one
//!    changeset per author for every synced row whose content changed, its version moved on.
//!
//! No message ids are recorded: the effect is idempotent by (entry, version) — a redelivered,
//! duplicated or replayed event is never newer than what is stored, so it changes nothing.

use std::collections::{BTreeMap, BTreeSet};

use bus::{Batch, HandlerError, State};
use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryFacts, JournalEntryRestored,
    JournalEntryUpdated,
};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::WorkerState;
use sync_protocol::changes::{Op, Scope, SyncedRow};
use sync_protocol::synced_tx::SyncedTx;

/// Hours in the time-of-day histogram.
const HOURS: usize = 24;

fn parse_id(field: &str, value: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value)
        .map_err(|_| HandlerError::permanent(format!("{field} `{value}` is not a uuid")))
}

fn parse_optional_id(field: &str, value: &str) -> Result<Option<Uuid>, HandlerError> {
    match value {
        "" => Ok(None),
        value => parse_id(field, value).map(Some),
    }
}

fn parse_date(field: &str, value: &str) -> Result<NaiveDate, HandlerError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| HandlerError::permanent(format!("{field} `{value}` is not a YYYY-MM-DD date")))
}

fn timestamp(field: &str, millis: i64) -> Result<DateTime<Utc>, HandlerError> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| HandlerError::permanent(format!("{field} {millis} is out of range")))
}

/// What insights know about an entry.
#[derive(Debug, Clone, PartialEq)]
struct Facts {
    word_count: i32,
    entry_date: Option<NaiveDate>,
    created_local_date: NaiveDate,
    created_local_hour: i16,
    created_at: DateTime<Utc>,
}

impl Facts {
    fn parse(facts: &JournalEntryFacts) -> Result<Self, HandlerError> {
        let created_local_hour = i16::try_from(facts.created_local_hour)
            .ok()
            .filter(|hour| (0..HOURS as i16).contains(hour))
            .ok_or_else(|| {
                HandlerError::permanent(format!(
                    "facts.created_local_hour {} is not an hour",
                    facts.created_local_hour
                ))
            })?;
        if facts.word_count < 0 {
            return Err(HandlerError::permanent(format!(
                "facts.word_count {} is negative",
                facts.word_count
            )));
        }
        Ok(Self {
            word_count: facts.word_count,
            entry_date: facts
                .entry_date
                .as_deref()
                .map(|date| parse_date("facts.entry_date", date))
                .transpose()?,
            created_local_date: parse_date("facts.created_local_date", &facts.created_local_date)?,
            created_local_hour,
            created_at: timestamp("facts.created_at_ms", facts.created_at_ms)?,
        })
    }

    /// An event from an api that did not send facts yet: what `journal_entry.created` itself
    /// says (the creation time, taken as UTC; no word count).
    fn from_creation(created_at: DateTime<Utc>) -> Self {
        Self {
            word_count: 0,
            entry_date: None,
            created_local_date: created_at.date_naive(),
            created_local_hour: created_at.hour() as i16,
            created_at,
        }
    }
}

/// One entry event, parsed.
#[derive(Debug, Clone)]
struct EntryChange {
    journal_entry_id: Uuid,
    author_user_id: Uuid,
    team_id: Option<Uuid>,
    version: i64,
    deleted: bool,
    /// `None`: the event did not carry facts; the stored ones stay.
    facts: Option<Facts>,
}

impl EntryChange {
    fn parse(
        journal_entry_id: &str,
        author_user_id: &str,
        team_id: &str,
        version: i64,
        deleted: bool,
        facts: Option<&JournalEntryFacts>,
    ) -> Result<Self, HandlerError> {
        Ok(Self {
            journal_entry_id: parse_id("journal_entry_id", journal_entry_id)?,
            author_user_id: parse_id("author_user_id", author_user_id)?,
            team_id: parse_optional_id("team_id", team_id)?,
            version,
            deleted,
            facts: facts.map(Facts::parse).transpose()?,
        })
    }
}

fn created_change(event: &JournalEntryCreated) -> Result<EntryChange, HandlerError> {
    let mut change = EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version.max(1),
        false,
        event.facts.as_ref(),
    )?;
    if change.facts.is_none() {
        change.facts = Some(Facts::from_creation(timestamp(
            "created_at_ms",
            event.created_at_ms,
        )?));
    }
    Ok(change)
}

fn updated_change(event: &JournalEntryUpdated) -> Result<EntryChange, HandlerError> {
    EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version,
        false,
        event.facts.as_ref(),
    )
}

fn deleted_change(event: &JournalEntryDeleted) -> Result<EntryChange, HandlerError> {
    EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version,
        true,
        event.facts.as_ref(),
    )
}

fn restored_change(event: &JournalEntryRestored) -> Result<EntryChange, HandlerError> {
    EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version,
        false,
        event.facts.as_ref(),
    )
}

/// Every event of the batch parsed, in delivery order, with its message id. One event that
/// makes no sense fails the batch: the bus then handles the messages one by one and
/// dead-letters just that one.
fn parse_batch<E>(
    batch: Batch<E>,
    parse: impl Fn(&E) -> Result<EntryChange, HandlerError>,
) -> Result<Vec<(EntryChange, String)>, HandlerError> {
    batch
        .into_iter()
        .map(|item| -> Result<(EntryChange, String), HandlerError> {
            Ok((parse(&item.message)?, item.meta.message_id))
        })
        .collect()
}

pub async fn on_entries_created(
    State(state): State<WorkerState>,
    batch: Batch<JournalEntryCreated>,
) -> Result<(), HandlerError> {
    apply_batch(&state, &parse_batch(batch, created_change)?).await
}

pub async fn on_entries_updated(
    State(state): State<WorkerState>,
    batch: Batch<JournalEntryUpdated>,
) -> Result<(), HandlerError> {
    apply_batch(&state, &parse_batch(batch, updated_change)?).await
}

pub async fn on_entries_deleted(
    State(state): State<WorkerState>,
    batch: Batch<JournalEntryDeleted>,
) -> Result<(), HandlerError> {
    apply_batch(&state, &parse_batch(batch, deleted_change)?).await
}

pub async fn on_entries_restored(
    State(state): State<WorkerState>,
    batch: Batch<JournalEntryRestored>,
) -> Result<(), HandlerError> {
    apply_batch(&state, &parse_batch(batch, restored_change)?).await
}

/// An entry's row in `journal_entry_activity`: what insights know about it.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Activity {
    journal_entry_id: Uuid,
    author_user_id: Uuid,
    team_id: Option<Uuid>,
    entry_created_at: DateTime<Utc>,
    message_id: String,
    version: i64,
    word_count: i32,
    entry_date: Option<NaiveDate>,
    created_local_date: Option<NaiveDate>,
    created_local_hour: Option<i16>,
    deleted: bool,
}

const ACTIVITY_COLUMNS: &str = "journal_entry_id, author_user_id, team_id, entry_created_at, \
     message_id, version, word_count, entry_date, created_local_date, created_local_hour, deleted";

impl Activity {
    /// The first event seen of an entry.
    fn first(change: &EntryChange, message_id: &str, now: DateTime<Utc>) -> Self {
        let facts = change.facts.as_ref();
        Self {
            journal_entry_id: change.journal_entry_id,
            author_user_id: change.author_user_id,
            team_id: change.team_id,
            entry_created_at: facts.map_or(now, |facts| facts.created_at),
            message_id: message_id.to_owned(),
            version: change.version,
            word_count: facts.map_or(0, |facts| facts.word_count),
            entry_date: facts.and_then(|facts| facts.entry_date),
            created_local_date: facts.map(|facts| facts.created_local_date),
            created_local_hour: facts.map(|facts| facts.created_local_hour),
            deleted: change.deleted,
        }
    }

    /// Apply a later event if its version is newer (after retries events can arrive out of
    /// order, and a stale `updated` must not resurrect a deleted entry). Returns whether it
    /// was applied.
    fn apply(&mut self, change: &EntryChange, message_id: &str) -> bool {
        if change.version <= self.version {
            return false;
        }
        self.message_id = message_id.to_owned();
        self.version = change.version;
        self.deleted = change.deleted;
        if let Some(facts) = &change.facts {
            self.word_count = facts.word_count;
            self.entry_date = facts.entry_date;
            self.entry_created_at = facts.created_at;
            // When it was written does not change; the first event seen says it.
            self.created_local_date = self.created_local_date.or(Some(facts.created_local_date));
            self.created_local_hour = self.created_local_hour.or(Some(facts.created_local_hour));
        }
        true
    }

    /// The day it counts for, while it is live.
    fn live_day(&self) -> Option<NaiveDate> {
        if self.deleted {
            None
        } else {
            self.entry_date.or(self.created_local_date)
        }
    }
}

/// Apply a batch of entry events (delivery order) in one transaction: lock the authors'
/// insights rows, fold the events into the entries' rows (newer version wins), write the
/// changed rows with one statement, recount the days they left and joined and each author's
/// totals once, and write one changeset per author. Idempotent by (entry, version): a
/// redelivered or replayed event is not newer than what is stored and changes nothing.
async fn apply_batch(
    state: &WorkerState,
    events: &[(EntryChange, String)],
) -> Result<(), HandlerError> {
    if events.is_empty() {
        return Ok(());
    }
    let authors: Vec<Uuid> = events
        .iter()
        .map(|(change, _)| change.author_user_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut tx = SyncedTx::begin(&state.db).await?;
    let mut insights = lock_insights(&mut tx, &authors).await?;
    // Events about an account the worker already purged (`user.purged`) arrive late: they
    // recreate nothing (checked under the authors' locks, which the purge takes too).
    let purged: BTreeSet<Uuid> =
        sqlx::query_scalar("SELECT user_id FROM purged_users WHERE user_id = ANY($1)")
            .bind(&authors)
            .fetch_all(&mut *tx)
            .await?
            .into_iter()
            .collect();
    if !purged.is_empty() {
        // `lock_insights` may have created their rows again.
        sqlx::query("DELETE FROM entry_insights WHERE user_id = ANY($1)")
            .bind(purged.iter().copied().collect::<Vec<_>>())
            .execute(&mut *tx)
            .await?;
        insights.retain(|user_id, _| !purged.contains(user_id));
    }
    let events: Vec<&(EntryChange, String)> = events
        .iter()
        .filter(|(change, _)| !purged.contains(&change.author_user_id))
        .collect();
    if events.is_empty() {
        tx.commit().await?;
        return Ok(());
    }
    let entry_ids: Vec<Uuid> = events
        .iter()
        .map(|(change, _)| change.journal_entry_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored: BTreeMap<Uuid, Activity> = sqlx::query_as::<_, Activity>(&format!(
        "SELECT {ACTIVITY_COLUMNS} FROM journal_entry_activity WHERE journal_entry_id = ANY($1)"
    ))
    .bind(&entry_ids)
    .fetch_all(&mut *tx)
    .await?
    .into_iter()
    .map(|row| (row.journal_entry_id, row))
    .collect();

    let now = Utc::now();
    let mut next = stored.clone();
    // Entry → the author whose insights it moves (the event's, as the events say).
    let mut applied: BTreeMap<Uuid, Uuid> = BTreeMap::new();
    for (change, message_id) in &events {
        let moved = match next.get_mut(&change.journal_entry_id) {
            Some(row) => row.apply(change, message_id),
            None => {
                next.insert(
                    change.journal_entry_id,
                    Activity::first(change, message_id, now),
                );
                true
            }
        };
        if moved {
            applied.insert(change.journal_entry_id, change.author_user_id);
        }
    }
    if applied.is_empty() {
        // Every event was stale or a redelivery: nothing to write (the rollback only drops
        // the empty insights rows `lock_insights` may have created).
        return Ok(());
    }
    let rows: Vec<&Activity> = applied
        .keys()
        .filter_map(|entry_id| next.get(entry_id))
        .collect();
    let written = upsert_activity(&mut tx, &rows).await?;
    if written != rows.len() as u64 {
        // Cannot happen while the authors' rows are locked; retry rather than publish
        // figures computed from rows that moved.
        return Err(HandlerError::retry(format!(
            "{written} of {} journal_entry_activity rows written",
            rows.len()
        )));
    }

    let mut touched_days: BTreeSet<(Uuid, NaiveDate)> = BTreeSet::new();
    for (entry_id, author) in &applied {
        let before = stored.get(entry_id).and_then(Activity::live_day);
        let after = next.get(entry_id).and_then(Activity::live_day);
        touched_days.extend(before.into_iter().chain(after).map(|day| (*author, day)));
    }
    let moved_authors: BTreeSet<Uuid> = applied.values().copied().collect();
    let days = refresh_days(&mut tx, &touched_days).await?;
    let moved_insights: Vec<&EntryInsights> = moved_authors
        .iter()
        .filter_map(|author| insights.get(author))
        .collect();
    let totals = refresh_totals(&mut tx, &moved_insights).await?;
    // One sync transaction per author: each is independent of the others.
    for author in &moved_authors {
        for day in days.iter().filter(|day| day.user_id == *author) {
            let op = match (&day.deleted_at, day.version) {
                (Some(_), _) => Op::Delete,
                (None, 1) => Op::Insert,
                (None, _) => Op::Update,
            };
            tx.record(&[Scope::User(day.user_id)], op, day)
                .map_err(HandlerError::retry)?;
        }
        for author_totals in totals.iter().filter(|totals| totals.user_id == *author) {
            let op = if author_totals.version == 1 {
                Op::Insert
            } else {
                Op::Update
            };
            tx.record(&[Scope::User(author_totals.user_id)], op, author_totals)
                .map_err(HandlerError::retry)?;
        }
        tx.seal_changes();
    }
    tx.commit().await?;
    Ok(())
}

/// Write the entries' rows in one statement. The version guard repeats the rule the fold
/// applied (the rows are locked through their authors, so it always holds).
async fn upsert_activity(conn: &mut PgConnection, rows: &[&Activity]) -> Result<u64, sqlx::Error> {
    let written = sqlx::query(
        "INSERT INTO journal_entry_activity
                (journal_entry_id, author_user_id, team_id, entry_created_at, message_id, version,
                 word_count, entry_date, created_local_date, created_local_hour, deleted)
         SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::uuid[], $4::timestamptz[], $5::text[],
                              $6::bigint[], $7::int[], $8::date[], $9::date[], $10::smallint[],
                              $11::bool[])
         ON CONFLICT (journal_entry_id) DO UPDATE SET
             message_id = EXCLUDED.message_id,
             version = EXCLUDED.version,
             deleted = EXCLUDED.deleted,
             word_count = EXCLUDED.word_count,
             entry_date = EXCLUDED.entry_date,
             entry_created_at = EXCLUDED.entry_created_at,
             created_local_date = EXCLUDED.created_local_date,
             created_local_hour = EXCLUDED.created_local_hour,
             updated_at = now()
         WHERE journal_entry_activity.version < EXCLUDED.version",
    )
    .bind(
        rows.iter()
            .map(|row| row.journal_entry_id)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.author_user_id)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.team_id).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|row| row.entry_created_at)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.message_id.clone())
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.version).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.word_count).collect::<Vec<_>>())
    .bind(rows.iter().map(|row| row.entry_date).collect::<Vec<_>>())
    .bind(
        rows.iter()
            .map(|row| row.created_local_date)
            .collect::<Vec<_>>(),
    )
    .bind(
        rows.iter()
            .map(|row| row.created_local_hour)
            .collect::<Vec<_>>(),
    )
    .bind(rows.iter().map(|row| row.deleted).collect::<Vec<_>>())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(written)
}

// ---------------------------------------------------------------------------------------------
// the synced rows

/// `entry_insights`: one user's totals, as clients receive them.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct EntryInsights {
    pub user_id: Uuid,
    pub entry_count: i32,
    pub word_count: i64,
    pub active_days: i32,
    /// `YYYY-MM-DD`.
    pub first_entry_day: Option<NaiveDate>,
    pub last_entry_day: Option<NaiveDate>,
    /// Consecutive days with entries ending at `lastEntryDay` (a client shows it as current
    /// while `lastEntryDay` is today or yesterday in the user's timezone).
    pub current_streak_days: i32,
    pub longest_streak_days: i32,
    /// 24 counts: live entries by the hour (0–23) they were written, in the author's timezone.
    pub hour_histogram: Vec<i32>,
    /// Epoch milliseconds.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    pub version: i64,
}

impl SyncedRow for EntryInsights {
    const TABLE: &'static str = "entry_insights";
    fn row_id(&self) -> String {
        self.user_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

/// `entry_insight_days`: entries the user wrote on one day.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct EntryInsightDay {
    pub user_id: Uuid,
    /// `YYYY-MM-DD`.
    pub day: NaiveDate,
    pub entry_count: i32,
    pub word_count: i64,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    /// Set when no entry is left on the day (the tombstone).
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl SyncedRow for EntryInsightDay {
    const TABLE: &'static str = "entry_insight_days";
    fn row_id(&self) -> String {
        format!("{}:{}", self.user_id, self.day)
    }
    fn version(&self) -> i64 {
        self.version
    }
}

pub(crate) const INSIGHTS_COLUMNS: &str = "user_id, entry_count, word_count, active_days, first_entry_day, \
     last_entry_day, current_streak_days, longest_streak_days, hour_histogram, created_at, \
     updated_at, version";
pub(crate) const DAY_COLUMNS: &str =
    "user_id, day, entry_count, word_count, created_at, updated_at, deleted_at, version";

/// The users' insights rows, created (empty, version 0) if missing, locked for the
/// transaction — in user id order, so batches that share users never deadlock.
pub(crate) async fn lock_insights(
    conn: &mut PgConnection,
    users: &[Uuid],
) -> Result<BTreeMap<Uuid, EntryInsights>, sqlx::Error> {
    sqlx::query(
        "INSERT INTO entry_insights (user_id)
         SELECT user_id FROM unnest($1::uuid[]) AS users(user_id) ORDER BY user_id
         ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(users)
    .execute(&mut *conn)
    .await?;
    let rows: Vec<EntryInsights> = sqlx::query_as(&format!(
        "SELECT {INSIGHTS_COLUMNS} FROM entry_insights WHERE user_id = ANY($1)
          ORDER BY user_id FOR UPDATE"
    ))
    .bind(users)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.user_id, row)).collect())
}

/// Recount the given (user, day) pairs; write the day rows that changed (a tombstone when a
/// day became empty) and return them, by user and day.
async fn refresh_days(
    conn: &mut PgConnection,
    days: &BTreeSet<(Uuid, NaiveDate)>,
) -> Result<Vec<EntryInsightDay>, sqlx::Error> {
    if days.is_empty() {
        return Ok(Vec::new());
    }
    let counts: Vec<(Uuid, NaiveDate, i64, i64)> = sqlx::query_as(
        "SELECT d.user_id, d.day, count(a.journal_entry_id), coalesce(sum(a.word_count), 0)::bigint
           FROM unnest($1::uuid[], $2::date[]) AS d(user_id, day)
           LEFT JOIN journal_entry_activity a
             ON a.author_user_id = d.user_id
            AND coalesce(a.entry_date, a.created_local_date) = d.day
            AND NOT a.deleted
          GROUP BY d.user_id, d.day",
    )
    .bind(days.iter().map(|(user, _)| *user).collect::<Vec<_>>())
    .bind(days.iter().map(|(_, day)| *day).collect::<Vec<_>>())
    .fetch_all(&mut *conn)
    .await?;
    let (live, emptied): (Vec<_>, Vec<_>) = counts
        .into_iter()
        .partition(|(_, _, entry_count, _)| *entry_count > 0);
    let mut written: Vec<EntryInsightDay> = Vec::new();
    if !live.is_empty() {
        written.extend(
            sqlx::query_as::<_, EntryInsightDay>(&format!(
                "INSERT INTO entry_insight_days (user_id, day, entry_count, word_count)
                 SELECT * FROM unnest($1::uuid[], $2::date[], $3::int[], $4::bigint[])
                 ON CONFLICT (user_id, day) DO UPDATE SET
                     entry_count = EXCLUDED.entry_count, word_count = EXCLUDED.word_count,
                     deleted_at = NULL, updated_at = now(),
                     version = entry_insight_days.version + 1
                 WHERE entry_insight_days.entry_count <> EXCLUDED.entry_count
                    OR entry_insight_days.word_count <> EXCLUDED.word_count
                    OR entry_insight_days.deleted_at IS NOT NULL
                 RETURNING {DAY_COLUMNS}"
            ))
            .bind(live.iter().map(|(user, ..)| *user).collect::<Vec<_>>())
            .bind(live.iter().map(|(_, day, ..)| *day).collect::<Vec<_>>())
            .bind(
                live.iter()
                    .map(|(_, _, count, _)| i32::try_from(*count).unwrap_or(i32::MAX))
                    .collect::<Vec<_>>(),
            )
            .bind(live.iter().map(|(.., words)| *words).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    if !emptied.is_empty() {
        written.extend(
            sqlx::query_as::<_, EntryInsightDay>(
                "UPDATE entry_insight_days d
                    SET entry_count = 0, word_count = 0, deleted_at = now(), updated_at = now(),
                        version = d.version + 1
                   FROM unnest($1::uuid[], $2::date[]) AS e(user_id, day)
                  WHERE d.user_id = e.user_id AND d.day = e.day AND d.deleted_at IS NULL
                  RETURNING d.user_id, d.day, d.entry_count, d.word_count, d.created_at,
                            d.updated_at, d.deleted_at, d.version",
            )
            .bind(emptied.iter().map(|(user, ..)| *user).collect::<Vec<_>>())
            .bind(emptied.iter().map(|(_, day, ..)| *day).collect::<Vec<_>>())
            .fetch_all(&mut *conn)
            .await?,
        );
    }
    written.sort_by_key(|row| (row.user_id, row.day));
    Ok(written)
}

/// Recompute the users' totals from their day rows and entries; write the ones that changed
/// and return them.
async fn refresh_totals(
    conn: &mut PgConnection,
    current: &[&EntryInsights],
) -> Result<Vec<EntryInsights>, sqlx::Error> {
    if current.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = current.iter().map(|row| row.user_id).collect();
    let days: Vec<(Uuid, NaiveDate, i32, i64)> = sqlx::query_as(
        "SELECT user_id, day, entry_count, word_count FROM entry_insight_days
          WHERE user_id = ANY($1) AND deleted_at IS NULL ORDER BY user_id, day",
    )
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    let hours: Vec<(Uuid, i16, i64)> = sqlx::query_as(
        "SELECT author_user_id, created_local_hour, count(*) FROM journal_entry_activity
          WHERE author_user_id = ANY($1) AND NOT deleted AND created_local_hour IS NOT NULL
          GROUP BY author_user_id, created_local_hour",
    )
    .bind(&users)
    .fetch_all(&mut *conn)
    .await?;
    let mut changed: Vec<(Uuid, Totals)> = Vec::new();
    for row in current {
        let user_days: Vec<(NaiveDate, i32, i64)> = days
            .iter()
            .filter(|(user, ..)| *user == row.user_id)
            .map(|(_, day, count, words)| (*day, *count, *words))
            .collect();
        let user_hours = hours
            .iter()
            .filter(|(user, ..)| *user == row.user_id)
            .map(|(_, hour, count)| (*hour, *count));
        let next = Totals::compute(&user_days, user_hours);
        if row.version == 0 || Totals::of(row) != next {
            changed.push((row.user_id, next));
        }
    }
    if changed.is_empty() {
        return Ok(Vec::new());
    }
    let column = |value: fn(&Totals) -> i32| -> Vec<i32> {
        changed.iter().map(|(_, totals)| value(totals)).collect()
    };
    let histograms: Vec<String> = changed
        .iter()
        .map(|(_, totals)| {
            let counts: Vec<String> = totals
                .hour_histogram
                .iter()
                .map(ToString::to_string)
                .collect();
            format!("{{{}}}", counts.join(","))
        })
        .collect();
    let mut updated: Vec<EntryInsights> = sqlx::query_as(
        "UPDATE entry_insights i SET
             entry_count = t.entry_count, word_count = t.word_count, active_days = t.active_days,
             first_entry_day = t.first_entry_day, last_entry_day = t.last_entry_day,
             current_streak_days = t.current_streak_days,
             longest_streak_days = t.longest_streak_days,
             hour_histogram = t.hour_histogram::int[], updated_at = now(), version = i.version + 1
           FROM unnest($1::uuid[], $2::int[], $3::bigint[], $4::int[], $5::date[], $6::date[],
                       $7::int[], $8::int[], $9::text[])
                AS t(user_id, entry_count, word_count, active_days, first_entry_day,
                     last_entry_day, current_streak_days, longest_streak_days, hour_histogram)
          WHERE i.user_id = t.user_id
          RETURNING i.user_id, i.entry_count, i.word_count, i.active_days, i.first_entry_day,
                    i.last_entry_day, i.current_streak_days, i.longest_streak_days,
                    i.hour_histogram, i.created_at, i.updated_at, i.version",
    )
    .bind(changed.iter().map(|(user, _)| *user).collect::<Vec<_>>())
    .bind(column(|totals| totals.entry_count))
    .bind(
        changed
            .iter()
            .map(|(_, totals)| totals.word_count)
            .collect::<Vec<_>>(),
    )
    .bind(column(|totals| totals.active_days))
    .bind(
        changed
            .iter()
            .map(|(_, totals)| totals.first_entry_day)
            .collect::<Vec<_>>(),
    )
    .bind(
        changed
            .iter()
            .map(|(_, totals)| totals.last_entry_day)
            .collect::<Vec<_>>(),
    )
    .bind(column(|totals| totals.current_streak_days))
    .bind(column(|totals| totals.longest_streak_days))
    .bind(histograms)
    .fetch_all(&mut *conn)
    .await?;
    updated.sort_by_key(|row| row.user_id);
    Ok(updated)
}

/// The derived part of [`EntryInsights`], to tell whether anything changed.
#[derive(Debug, PartialEq)]
struct Totals {
    entry_count: i32,
    word_count: i64,
    active_days: i32,
    first_entry_day: Option<NaiveDate>,
    last_entry_day: Option<NaiveDate>,
    current_streak_days: i32,
    longest_streak_days: i32,
    hour_histogram: Vec<i32>,
}

impl Totals {
    /// From a user's live days (`(day, entries, words)`, ascending) and their live entries
    /// counted by the hour they were written.
    fn compute(
        days: &[(NaiveDate, i32, i64)],
        hours: impl IntoIterator<Item = (i16, i64)>,
    ) -> Self {
        let mut hour_histogram = vec![0i32; HOURS];
        for (hour, count) in hours {
            if let Some(slot) = usize::try_from(hour)
                .ok()
                .and_then(|hour| hour_histogram.get_mut(hour))
            {
                *slot = i32::try_from(count).unwrap_or(i32::MAX);
            }
        }
        let day_list: Vec<NaiveDate> = days.iter().map(|(day, ..)| *day).collect();
        let streaks = Streaks::of(&day_list);
        Self {
            entry_count: days
                .iter()
                .fold(0i32, |sum, (_, count, _)| sum.saturating_add(*count)),
            word_count: days
                .iter()
                .fold(0i64, |sum, (.., words)| sum.saturating_add(*words)),
            active_days: i32::try_from(days.len()).unwrap_or(i32::MAX),
            first_entry_day: day_list.first().copied(),
            last_entry_day: day_list.last().copied(),
            current_streak_days: streaks.current,
            longest_streak_days: streaks.longest,
            hour_histogram,
        }
    }

    fn of(insights: &EntryInsights) -> Self {
        Self {
            entry_count: insights.entry_count,
            word_count: insights.word_count,
            active_days: insights.active_days,
            first_entry_day: insights.first_entry_day,
            last_entry_day: insights.last_entry_day,
            current_streak_days: insights.current_streak_days,
            longest_streak_days: insights.longest_streak_days,
            hour_histogram: insights.hour_histogram.clone(),
        }
    }
}

/// Runs of consecutive days.
#[derive(Debug, PartialEq, Eq)]
struct Streaks {
    /// The run that ends at the last day.
    current: i32,
    longest: i32,
}

impl Streaks {
    /// `days` sorted ascending, without duplicates.
    fn of(days: &[NaiveDate]) -> Self {
        let mut longest = 0;
        let mut run = 0;
        let mut previous: Option<NaiveDate> = None;
        for day in days {
            run = match previous {
                Some(previous) if previous.succ_opt() == Some(*day) => run + 1,
                _ => 1,
            };
            longest = longest.max(run);
            previous = Some(*day);
        }
        Self {
            current: run,
            longest,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn days(list: &[&str]) -> Vec<NaiveDate> {
        list.iter()
            .map(|day| NaiveDate::parse_from_str(day, "%Y-%m-%d").unwrap())
            .collect()
    }

    #[test]
    fn streaks_count_consecutive_days() {
        assert_eq!(
            Streaks::of(&[]),
            Streaks {
                current: 0,
                longest: 0
            }
        );
        assert_eq!(
            Streaks::of(&days(&["2026-01-01"])),
            Streaks {
                current: 1,
                longest: 1
            }
        );
        // Across a month end; a gap resets the current run.
        assert_eq!(
            Streaks::of(&days(&[
                "2026-01-30",
                "2026-01-31",
                "2026-02-01",
                "2026-02-03",
                "2026-02-04"
            ])),
            Streaks {
                current: 2,
                longest: 3
            }
        );
        assert_eq!(
            Streaks::of(&days(&[
                "2026-03-01",
                "2026-03-05",
                "2026-03-06",
                "2026-03-07"
            ])),
            Streaks {
                current: 3,
                longest: 3
            }
        );
    }

    #[test]
    fn facts_are_checked() {
        let good = JournalEntryFacts {
            word_count: 3,
            entry_date: Some("2026-02-03".into()),
            created_local_date: "2026-02-04".into(),
            created_local_hour: 23,
            created_at_ms: 1_770_000_000_000,
        };
        let facts = Facts::parse(&good).unwrap();
        assert_eq!(facts.created_local_hour, 23);
        for bad in [
            JournalEntryFacts {
                created_local_hour: 24,
                ..good.clone()
            },
            JournalEntryFacts {
                word_count: -1,
                ..good.clone()
            },
            JournalEntryFacts {
                entry_date: Some("03/02/2026".into()),
                ..good.clone()
            },
            JournalEntryFacts {
                created_local_date: String::new(),
                ..good.clone()
            },
        ] {
            assert!(Facts::parse(&bad).unwrap_err().is_permanent());
        }
    }
}
