//! Entry insights: `journal_entry.created|updated|deleted|restored` → per-user writing insights
//! (word count, entries per day, current and longest streak, time-of-day histogram),
//! published to the user's clients as the synced tables `entry_insights` and
//! `entry_insight_days`.
//!
//! Every event carries the entry's facts as of its version (`JournalEntryFacts`, filled in by
//! the api). One transaction per event:
//! 1. record the message id (a redelivery changes nothing);
//! 2. lock the user's `entry_insights` row, so one user's events apply one at a time;
//! 3. upsert the entry's row in `journal_entry_activity` unless a newer version is already
//!    there (events may arrive out of order after a retry);
//! 4. recompute the day(s) the entry left and joined, then the user's totals, from the rows
//!    (never by incrementing, so nothing drifts), and write a changeset for every synced row
//!    whose content changed, with its version moved on.

use std::collections::BTreeSet;

use bus::{HandlerError, Meta, Msg, State};
use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryFacts, JournalEntryRestored,
    JournalEntryUpdated,
};
use serde::Serialize;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::WorkerState;
use crate::changes::{Op, SyncedRow, UserChanges};

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

pub async fn on_entry_created(
    State(state): State<WorkerState>,
    Msg(event): Msg<JournalEntryCreated>,
    meta: Meta,
) -> Result<(), HandlerError> {
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
    apply(&state, &change, &meta).await
}

pub async fn on_entry_updated(
    State(state): State<WorkerState>,
    Msg(event): Msg<JournalEntryUpdated>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let change = EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version,
        false,
        event.facts.as_ref(),
    )?;
    apply(&state, &change, &meta).await
}

pub async fn on_entry_deleted(
    State(state): State<WorkerState>,
    Msg(event): Msg<JournalEntryDeleted>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let change = EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version,
        true,
        event.facts.as_ref(),
    )?;
    apply(&state, &change, &meta).await
}

pub async fn on_entry_restored(
    State(state): State<WorkerState>,
    Msg(event): Msg<JournalEntryRestored>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let change = EntryChange::parse(
        &event.journal_entry_id,
        &event.author_user_id,
        &event.team_id,
        event.version,
        false,
        event.facts.as_ref(),
    )?;
    apply(&state, &change, &meta).await
}

async fn apply(state: &WorkerState, change: &EntryChange, meta: &Meta) -> Result<(), HandlerError> {
    let mut tx = state.db.begin().await?;
    if !bus::idempotency::first_time(&mut tx, &meta.handler, &meta.message_id).await? {
        return Ok(());
    }
    let user_id = change.author_user_id;
    let insights = lock_insights(&mut tx, user_id).await?;
    let day_before: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT coalesce(entry_date, created_local_date) FROM journal_entry_activity
          WHERE journal_entry_id = $1 AND NOT deleted",
    )
    .bind(change.journal_entry_id)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let applied = upsert_entry(&mut tx, change, &meta.message_id).await?;
    if !applied {
        // A newer version of the entry is already recorded: this event is stale.
        tx.commit().await?;
        return Ok(());
    }
    let day_after: Option<NaiveDate> = sqlx::query_scalar(
        "SELECT coalesce(entry_date, created_local_date) FROM journal_entry_activity
          WHERE journal_entry_id = $1 AND NOT deleted",
    )
    .bind(change.journal_entry_id)
    .fetch_optional(&mut *tx)
    .await?
    .flatten();
    let mut changes = UserChanges::new(user_id);
    let days: BTreeSet<NaiveDate> = day_before.into_iter().chain(day_after).collect();
    for day in days {
        refresh_day(&mut tx, user_id, day, &mut changes).await?;
    }
    refresh_totals(&mut tx, insights, &mut changes).await?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(())
}

/// Record the entry's new state unless a newer version is already there. Returns whether it
/// was applied.
async fn upsert_entry(
    conn: &mut PgConnection,
    change: &EntryChange,
    message_id: &str,
) -> Result<bool, sqlx::Error> {
    let facts = change.facts.as_ref();
    let applied = sqlx::query(
        "INSERT INTO journal_entry_activity
                (journal_entry_id, author_user_id, team_id, entry_created_at, message_id, version,
                 word_count, entry_date, created_local_date, created_local_hour, deleted)
         VALUES ($1, $2, $3, coalesce($4, now()), $5, $6, coalesce($7, 0), $8, $9, $10, $11)
         ON CONFLICT (journal_entry_id) DO UPDATE SET
             message_id = EXCLUDED.message_id,
             version = EXCLUDED.version,
             deleted = EXCLUDED.deleted,
             word_count = CASE WHEN $12 THEN EXCLUDED.word_count ELSE journal_entry_activity.word_count END,
             entry_date = CASE WHEN $12 THEN EXCLUDED.entry_date ELSE journal_entry_activity.entry_date END,
             entry_created_at = CASE WHEN $12 THEN EXCLUDED.entry_created_at ELSE journal_entry_activity.entry_created_at END,
             -- When it was written does not change; the first event seen says it.
             created_local_date = coalesce(journal_entry_activity.created_local_date, EXCLUDED.created_local_date),
             created_local_hour = coalesce(journal_entry_activity.created_local_hour, EXCLUDED.created_local_hour),
             updated_at = now()
         WHERE journal_entry_activity.version < EXCLUDED.version",
    )
    .bind(change.journal_entry_id)
    .bind(change.author_user_id)
    .bind(change.team_id)
    .bind(facts.map(|facts| facts.created_at))
    .bind(message_id)
    .bind(change.version)
    .bind(facts.map(|facts| facts.word_count))
    .bind(facts.and_then(|facts| facts.entry_date))
    .bind(facts.map(|facts| facts.created_local_date))
    .bind(facts.map(|facts| facts.created_local_hour))
    .bind(change.deleted)
    .bind(facts.is_some())
    .execute(conn)
    .await?
    .rows_affected();
    Ok(applied == 1)
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

const INSIGHTS_COLUMNS: &str = "user_id, entry_count, word_count, active_days, first_entry_day, \
     last_entry_day, current_streak_days, longest_streak_days, hour_histogram, created_at, \
     updated_at, version";
const DAY_COLUMNS: &str =
    "user_id, day, entry_count, word_count, created_at, updated_at, deleted_at, version";

/// The user's insights row, created (empty, version 0) if missing, locked for the transaction.
async fn lock_insights(
    conn: &mut PgConnection,
    user_id: Uuid,
) -> Result<EntryInsights, sqlx::Error> {
    sqlx::query(
        "INSERT INTO entry_insights (user_id) VALUES ($1) ON CONFLICT (user_id) DO NOTHING",
    )
    .bind(user_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query_as(&format!(
        "SELECT {INSIGHTS_COLUMNS} FROM entry_insights WHERE user_id = $1 FOR UPDATE"
    ))
    .bind(user_id)
    .fetch_one(&mut *conn)
    .await
}

/// Recount one day; publish the day row if it changed (a tombstone when it became empty).
async fn refresh_day(
    conn: &mut PgConnection,
    user_id: Uuid,
    day: NaiveDate,
    changes: &mut UserChanges,
) -> Result<(), HandlerError> {
    let (entry_count, word_count): (i64, i64) = sqlx::query_as(
        "SELECT count(*), coalesce(sum(word_count), 0)::bigint FROM journal_entry_activity
          WHERE author_user_id = $1 AND coalesce(entry_date, created_local_date) = $2
            AND NOT deleted",
    )
    .bind(user_id)
    .bind(day)
    .fetch_one(&mut *conn)
    .await?;
    let entry_count = i32::try_from(entry_count).unwrap_or(i32::MAX);
    let row: Option<EntryInsightDay> = if entry_count > 0 {
        sqlx::query_as(&format!(
            "INSERT INTO entry_insight_days (user_id, day, entry_count, word_count)
             VALUES ($1, $2, $3, $4)
             ON CONFLICT (user_id, day) DO UPDATE SET
                 entry_count = EXCLUDED.entry_count, word_count = EXCLUDED.word_count,
                 deleted_at = NULL, updated_at = now(),
                 version = entry_insight_days.version + 1
             WHERE entry_insight_days.entry_count <> EXCLUDED.entry_count
                OR entry_insight_days.word_count <> EXCLUDED.word_count
                OR entry_insight_days.deleted_at IS NOT NULL
             RETURNING {DAY_COLUMNS}"
        ))
        .bind(user_id)
        .bind(day)
        .bind(entry_count)
        .bind(word_count)
        .fetch_optional(&mut *conn)
        .await?
    } else {
        sqlx::query_as(&format!(
            "UPDATE entry_insight_days
                SET entry_count = 0, word_count = 0, deleted_at = now(), updated_at = now(),
                    version = version + 1
              WHERE user_id = $1 AND day = $2 AND deleted_at IS NULL
              RETURNING {DAY_COLUMNS}"
        ))
        .bind(user_id)
        .bind(day)
        .fetch_optional(&mut *conn)
        .await?
    };
    if let Some(row) = row {
        let op = match (&row.deleted_at, row.version) {
            (Some(_), _) => Op::Delete,
            (None, 1) => Op::Insert,
            (None, _) => Op::Update,
        };
        changes.record(op, &row).map_err(HandlerError::retry)?;
    }
    Ok(())
}

/// Recompute the user's totals from the day rows and the entries; publish them if they changed.
async fn refresh_totals(
    conn: &mut PgConnection,
    current: EntryInsights,
    changes: &mut UserChanges,
) -> Result<(), HandlerError> {
    let user_id = current.user_id;
    let days: Vec<(NaiveDate, i32, i64)> = sqlx::query_as(
        "SELECT day, entry_count, word_count FROM entry_insight_days
          WHERE user_id = $1 AND deleted_at IS NULL ORDER BY day",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let hours: Vec<(i16, i64)> = sqlx::query_as(
        "SELECT created_local_hour, count(*) FROM journal_entry_activity
          WHERE author_user_id = $1 AND NOT deleted AND created_local_hour IS NOT NULL
          GROUP BY created_local_hour",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
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
    let next = Totals {
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
    };
    if current.version > 0 && Totals::of(&current) == next {
        return Ok(());
    }
    let updated: EntryInsights = sqlx::query_as(&format!(
        "UPDATE entry_insights SET
             entry_count = $2, word_count = $3, active_days = $4, first_entry_day = $5,
             last_entry_day = $6, current_streak_days = $7, longest_streak_days = $8,
             hour_histogram = $9, updated_at = now(), version = version + 1
          WHERE user_id = $1
          RETURNING {INSIGHTS_COLUMNS}"
    ))
    .bind(user_id)
    .bind(next.entry_count)
    .bind(next.word_count)
    .bind(next.active_days)
    .bind(next.first_entry_day)
    .bind(next.last_entry_day)
    .bind(next.current_streak_days)
    .bind(next.longest_streak_days)
    .bind(&next.hour_histogram)
    .fetch_one(&mut *conn)
    .await?;
    let op = if updated.version == 1 {
        Op::Insert
    } else {
        Op::Update
    };
    changes.record(op, &updated).map_err(HandlerError::retry)?;
    Ok(())
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
