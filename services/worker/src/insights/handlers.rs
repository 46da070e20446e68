//! The batch handlers of the entry events: each event parsed, then the batch applied.

use bus::{Batch, HandlerError, State};
use messages::journal::v1::{
    JournalEntryCreated, JournalEntryDeleted, JournalEntryRestored, JournalEntryUpdated,
};

use super::fold::apply_batch;
use super::types::{EntryChange, EntryIds, Facts, timestamp};
use crate::WorkerState;

/// The ids every entry event carries, parsed by the message's accessors; a malformed one
/// will not parse on a retry either, so it fails the message for good.
macro_rules! entry_ids {
    ($event:expr) => {
        EntryIds {
            journal_entry_id: $event
                .parse_journal_entry_id()
                .map_err(HandlerError::permanent)?,
            author_user_id: $event
                .parse_author_user_id()
                .map_err(HandlerError::permanent)?,
            team_id: $event
                .parse_optional_team_id()
                .map_err(HandlerError::permanent)?,
        }
    };
}

fn created_change(event: &JournalEntryCreated) -> Result<EntryChange, HandlerError> {
    let mut change = EntryChange::parse(
        entry_ids!(event),
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

/// `fn $name(&$event) -> EntryChange`: the updated, deleted and restored events carry the same
/// fields and differ only in whether the entry is deleted after them.
macro_rules! entry_change {
    ($name:ident, $event:ty, deleted: $deleted:literal) => {
        fn $name(event: &$event) -> Result<EntryChange, HandlerError> {
            EntryChange::parse(
                entry_ids!(event),
                event.version,
                $deleted,
                event.facts.as_ref(),
            )
        }
    };
}

entry_change!(updated_change, JournalEntryUpdated, deleted: false);
entry_change!(deleted_change, JournalEntryDeleted, deleted: true);
entry_change!(restored_change, JournalEntryRestored, deleted: false);

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
