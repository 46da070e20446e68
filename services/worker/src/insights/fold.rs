//! A batch of entry events folded into the entries' rows, then the days and totals they move.

use std::collections::{BTreeMap, BTreeSet};

use bus::HandlerError;
use chrono::{NaiveDate, Utc};
use domain::ids::{JournalEntryId, UserId};

use super::publish::{mark_due, record_user};
use super::store::{lock_insights, refresh_days, refresh_totals, upsert_activity};
use super::types::{ACTIVITY_COLUMNS, Activity, EntryChange, EntryInsights};
use crate::WorkerState;
use sync_protocol::synced_tx::SyncedTx;

/// Apply a batch of entry events (delivery order) in one transaction: lock the authors'
/// insights rows, fold the events into the entries' rows (newer version wins), write the
/// changed rows with one statement, recount the days they left and joined and each author's
/// totals once, and mark the changed days for the publisher (publish.rs). Idempotent by
/// (entry, version): a redelivered or replayed event is not newer than what is stored and
/// changes nothing.
pub(super) async fn apply_batch(
    state: &WorkerState,
    events: &[(EntryChange, String)],
) -> Result<(), HandlerError> {
    if events.is_empty() {
        return Ok(());
    }
    let authors: Vec<UserId> = events
        .iter()
        .map(|(change, _)| change.author_user_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let mut tx = SyncedTx::begin(&state.db).await?;
    let mut insights = lock_insights(&mut tx, &authors).await?;
    // Events about an account the worker already purged (`user.purged`) arrive late: they
    // recreate nothing (checked under the authors' locks, which the purge takes too).
    let purged: BTreeSet<UserId> =
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
    let entry_ids: Vec<JournalEntryId> = events
        .iter()
        .map(|(change, _)| change.journal_entry_id)
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let stored: BTreeMap<JournalEntryId, Activity> = sqlx::query_as::<_, Activity>(&format!(
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
    let mut applied: BTreeMap<JournalEntryId, UserId> = BTreeMap::new();
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

    let mut touched_days: BTreeSet<(UserId, NaiveDate)> = BTreeSet::new();
    for (entry_id, author) in &applied {
        let before = stored.get(entry_id).and_then(Activity::live_day);
        let after = next.get(entry_id).and_then(Activity::live_day);
        touched_days.extend(before.into_iter().chain(after).map(|day| (*author, day)));
    }
    let moved_authors: BTreeSet<UserId> = applied.values().copied().collect();
    let days = refresh_days(&mut tx, &touched_days).await?;
    let moved_insights: Vec<&EntryInsights> = moved_authors
        .iter()
        .filter_map(|author| insights.get(author))
        .collect();
    let totals = refresh_totals(&mut tx, &moved_insights).await?;
    // The changed days (and with them their users' totals) are published later, one changeset
    // per user per window (publish.rs): marked here, in this transaction.
    mark_due(&mut tx, &days).await?;
    // Totals that moved while none of their user's days did (an entry first seen deleted: the
    // placeholder row's first version) have no mark to travel with: published now.
    for author_totals in &totals {
        if !days.iter().any(|day| day.user_id == author_totals.user_id) {
            record_user(&mut tx, author_totals, std::iter::empty())?;
        }
    }
    tx.commit().await?;
    if !days.is_empty() {
        state.insight_publisher.wake();
    }
    Ok(())
}
