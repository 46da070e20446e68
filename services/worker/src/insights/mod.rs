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
//!    batch, from the rows (never by incrementing, so nothing drifts) — bumping the version
//!    of every synced row whose content changed;
//! 4. mark the changed days in `insight_sync_due`: the [`InsightPublisher`] sends each marked
//!    user's rows as one changeset after `INSIGHTS_SYNC_DELAY_MS` ([`publish`] says why and how).
//!
//! No message ids are recorded: the effect is idempotent by (entry, version) — a redelivered,
//! duplicated or replayed event is never newer than what is stored, so it changes nothing.

mod fold;
mod handlers;
pub mod publish;
mod store;
mod totals;
mod types;

pub use self::handlers::{
    on_entries_created, on_entries_deleted, on_entries_restored, on_entries_updated,
};
pub use self::publish::InsightPublisher;
pub(crate) use self::store::lock_insights;
pub(crate) use self::types::{DAY_COLUMNS, INSIGHTS_COLUMNS};
pub use self::types::{EntryInsightDay, EntryInsights};
