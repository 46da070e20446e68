//! The `journalEntries.*` procedures.

use axum::extract::State;
use axum::http::StatusCode;
use messages::journal::v1::JournalEntryRestored;

use super::create::create_entry;
use super::store::{
    delete_loaded, list_page, load_changeable, load_visible, set_deleted, update_loaded,
};
use super::types::{CreateInput, GetInput, IdInput, JournalEntry, ListInput, Page, UpdateInput};
use crate::http::error::ApiError;
use crate::http::rpc::{Rpc, RpcInput, RpcQuery};
use crate::modules::teams::store::caller_role;
use crate::procedures::session::Protected;
use crate::state::AppState;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// `journalEntries.create`.
pub async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(entry): RpcInput<CreateInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    create_entry(&state.db, session.user_id, entry)
        .await
        .map(Rpc)
}

/// `journalEntries.get {journalEntryId}` (GET-able): also a deleted entry, with `deletedAt`.
pub async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<GetInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let (entry, _) =
        load_visible(&mut conn, input.journal_entry_id, session.user_id, false).await?;
    Ok(Rpc(entry))
}

// ---------------------------------------------------------------------------------------------
// list

/// `journalEntries.list` (GET-able): newest first by `(created_at, journal_entry_id)`, keyset
/// pages (rows created after page 1 was read never shift later pages).
pub async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<Option<ListInput>>,
) -> Result<Rpc<Page>, ApiError> {
    let input = input.unwrap_or_default();
    let mut conn = state.db.acquire().await?;
    if let Some(team_id) = input.team_id {
        caller_role(&mut conn, team_id, session.user_id).await?;
    }
    list_page(&mut conn, session.user_id, &input).await.map(Rpc)
}

/// `journalEntries.update`: a partial update, version + 1. With `expectedVersion`, a stale
/// edit answers `EDIT_CONFLICT`. An update without any field answers the entry unchanged.
pub async fn update(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<UpdateInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current = load_changeable(&mut tx, input.journal_entry_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Err(ApiError::defined(
            "ENTRY_DELETED",
            StatusCode::CONFLICT,
            "This journal entry is deleted; restore it before editing",
        ));
    }
    let updated = update_loaded(&mut tx, current, input, session.user_id).await?;
    tx.commit().await?;
    Ok(Rpc(updated))
}

/// `journalEntries.delete {journalEntryId}`: soft delete (the row with `deletedAt` is the
/// tombstone). Deleting a deleted entry answers it unchanged.
pub async fn delete(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current = load_changeable(&mut tx, input.journal_entry_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Ok(Rpc(current));
    }
    let deleted = delete_loaded(&mut tx, current, session.user_id).await?;
    tx.commit().await?;
    Ok(Rpc(deleted))
}

/// `journalEntries.restore {journalEntryId}`: undo a soft delete. Restoring a live entry
/// answers it unchanged.
pub async fn restore(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<JournalEntry>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current = load_changeable(&mut tx, input.journal_entry_id, session.user_id).await?;
    if current.deleted_at.is_none() {
        return Ok(Rpc(current));
    }
    let written = set_deleted(&mut tx, current.journal_entry_id, false).await?;
    let facts = written.facts();
    let restored = written.entry;
    let event = JournalEntryRestored {
        journal_entry_id: restored.journal_entry_id.to_string(),
        author_user_id: restored.author_user_id.to_string(),
        team_id: restored.team_id_text(),
        version: restored.version,
        restored_by_user_id: session.user_id.to_string(),
        facts: Some(facts),
    };
    tx.emit_ordered(&event, &restored.journal_entry_id.to_string());
    tx.record(&[restored.scope()], Op::Update, &restored)?;
    if let Some(deleted_at) = current.deleted_at {
        crate::modules::cdn::store::restore_for_entry(
            &mut tx,
            restored.journal_entry_id,
            deleted_at.at(),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(Rpc(restored))
}
