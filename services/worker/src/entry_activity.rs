//! `journal_entry.created` → a row in `worker.journal_entry_activity` (the walking skeleton
//! the insights work grows from). Idempotent: the message id is recorded in the same
//! transaction as the row.

use bus::{HandlerError, Meta, Msg, State};
use chrono::{TimeZone, Utc};
use messages::journal::v1::JournalEntryCreated;
use uuid::Uuid;

use crate::WorkerState;

fn parse_id(field: &str, value: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value)
        .map_err(|_| HandlerError::permanent(format!("{field} `{value}` is not a uuid")))
}

pub async fn record_entry_created(
    State(state): State<WorkerState>,
    Msg(event): Msg<JournalEntryCreated>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let journal_entry_id = parse_id("journal_entry_id", &event.journal_entry_id)?;
    let author_user_id = parse_id("author_user_id", &event.author_user_id)?;
    let team_id = match event.team_id.as_str() {
        "" => None,
        value => Some(parse_id("team_id", value)?),
    };
    let created_at = Utc
        .timestamp_millis_opt(event.created_at_ms)
        .single()
        .ok_or_else(|| {
            HandlerError::permanent(format!(
                "created_at_ms {} is out of range",
                event.created_at_ms
            ))
        })?;
    let mut tx = state.db.begin().await?;
    if !bus::idempotency::first_time(&mut tx, &meta.handler, &meta.message_id).await? {
        return Ok(());
    }
    sqlx::query(
        "INSERT INTO journal_entry_activity (journal_entry_id, author_user_id, team_id, entry_created_at, message_id)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (journal_entry_id) DO NOTHING",
    )
    .bind(journal_entry_id)
    .bind(author_user_id)
    .bind(team_id)
    .bind(created_at)
    .bind(&meta.message_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(())
}
