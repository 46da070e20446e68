//! The insights' types: an entry's facts and events as parsed, its `journal_entry_activity`
//! row, and the synced rows clients receive.

use bus::HandlerError;
use chrono::{DateTime, NaiveDate, TimeZone, Timelike, Utc};
use domain::ids::{JournalEntryId, TeamId, UserId};
use domain::time::EpochMillis;
use messages::journal::v1::JournalEntryFacts;
use serde::Serialize;

use sync_protocol::changes::SyncedRow;

/// Hours in the time-of-day histogram.
pub(super) const HOURS: usize = 24;

fn parse_date(field: &str, value: &str) -> Result<NaiveDate, HandlerError> {
    NaiveDate::parse_from_str(value, "%Y-%m-%d")
        .map_err(|_| HandlerError::permanent(format!("{field} `{value}` is not a YYYY-MM-DD date")))
}

pub(super) fn timestamp(field: &str, millis: i64) -> Result<DateTime<Utc>, HandlerError> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| HandlerError::permanent(format!("{field} {millis} is out of range")))
}

/// What insights know about an entry.
#[derive(Debug, Clone, PartialEq)]
pub(super) struct Facts {
    pub(super) word_count: i32,
    pub(super) entry_date: Option<NaiveDate>,
    pub(super) created_local_date: NaiveDate,
    pub(super) created_local_hour: i16,
    pub(super) created_at: DateTime<Utc>,
}

impl Facts {
    pub(super) fn parse(facts: &JournalEntryFacts) -> Result<Self, HandlerError> {
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
    pub(super) fn from_creation(created_at: DateTime<Utc>) -> Self {
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
pub(super) struct EntryChange {
    pub(super) journal_entry_id: JournalEntryId,
    pub(super) author_user_id: UserId,
    pub(super) team_id: Option<TeamId>,
    pub(super) version: i64,
    pub(super) deleted: bool,
    /// `None`: the event did not carry facts; the stored ones stay.
    pub(super) facts: Option<Facts>,
}

/// The ids every entry event carries, parsed (`entry_ids!`).
pub(super) struct EntryIds {
    pub(super) journal_entry_id: JournalEntryId,
    pub(super) author_user_id: UserId,
    pub(super) team_id: Option<TeamId>,
}

impl EntryChange {
    /// The event's ids come parsed; its facts are parsed here.
    pub(super) fn parse(
        ids: EntryIds,
        version: i64,
        deleted: bool,
        facts: Option<&JournalEntryFacts>,
    ) -> Result<Self, HandlerError> {
        Ok(Self {
            journal_entry_id: ids.journal_entry_id,
            author_user_id: ids.author_user_id,
            team_id: ids.team_id,
            version,
            deleted,
            facts: facts.map(Facts::parse).transpose()?,
        })
    }
}

/// An entry's row in `journal_entry_activity`: what insights know about it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub(super) struct Activity {
    pub(super) journal_entry_id: JournalEntryId,
    pub(super) author_user_id: UserId,
    pub(super) team_id: Option<TeamId>,
    pub(super) entry_created_at: DateTime<Utc>,
    pub(super) message_id: String,
    pub(super) version: i64,
    pub(super) word_count: i32,
    pub(super) entry_date: Option<NaiveDate>,
    pub(super) created_local_date: Option<NaiveDate>,
    pub(super) created_local_hour: Option<i16>,
    pub(super) deleted: bool,
}

pub(super) const ACTIVITY_COLUMNS: &str = "journal_entry_id, author_user_id, team_id, entry_created_at, \
     message_id, version, word_count, entry_date, created_local_date, created_local_hour, deleted";

impl Activity {
    /// The first event seen of an entry.
    pub(super) fn first(change: &EntryChange, message_id: &str, now: DateTime<Utc>) -> Self {
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
    pub(super) fn apply(&mut self, change: &EntryChange, message_id: &str) -> bool {
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
    pub(super) fn live_day(&self) -> Option<NaiveDate> {
        if self.deleted {
            None
        } else {
            self.entry_date.or(self.created_local_date)
        }
    }
}

// ---------------------------------------------------------------------------------------------
// the synced rows

/// `entry_insights`: one user's totals, as clients receive them.
#[derive(Debug, Clone, PartialEq, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct EntryInsights {
    pub user_id: UserId,
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
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
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
    pub user_id: UserId,
    /// `YYYY-MM-DD`.
    pub day: NaiveDate,
    pub entry_count: i32,
    pub word_count: i64,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    /// Set when no entry is left on the day (the tombstone).
    pub deleted_at: Option<EpochMillis>,
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

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
