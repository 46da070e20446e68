//! Bus handlers: `export.ready` marks the user's export ready.

use bus::State as BusState;
use bus::{HandlerError, Msg};
use chrono::DateTime;
use messages::journal::v1::ExportReady;

use crate::state::AppState;

/// `export.ready` → the export is ready. Applying it twice writes the same values.
pub async fn on_export_ready(
    BusState(state): BusState<AppState>,
    Msg(ready): Msg<ExportReady>,
) -> Result<(), HandlerError> {
    let export_id = ready.parse_export_id().map_err(HandlerError::permanent)?;
    let user_id = ready.parse_user_id().map_err(HandlerError::permanent)?;
    let expires_at = DateTime::from_timestamp_millis(ready.expires_at_ms).ok_or_else(|| {
        HandlerError::permanent(format!(
            "expires_at_ms {} is out of range",
            ready.expires_at_ms
        ))
    })?;
    let marked = sqlx::query(
        "UPDATE exports SET status = 'ready', ready_at = coalesce(ready_at, now()),
                size_bytes = $2, download_url = $3, download_expires_at = $4
          WHERE export_id = $1 AND user_id = $5 AND revoked_at IS NULL",
    )
    .bind(export_id)
    .bind(ready.size_bytes)
    .bind(&ready.download_url)
    .bind(expires_at)
    .bind(user_id)
    .execute(&state.db)
    .await?
    .rows_affected();
    if marked == 0 {
        // An export that was still being built when its account was deleted: `users.delete`
        // deleted the archives that existed then; this one was uploaded afterwards, so its
        // link must not work either.
        let revoked: Option<bool> = sqlx::query_scalar(
            "SELECT revoked_at IS NOT NULL FROM exports WHERE export_id = $1 AND user_id = $2",
        )
        .bind(export_id)
        .bind(user_id)
        .fetch_optional(&state.db)
        .await?;
        if revoked == Some(true) {
            state
                .storage
                .delete(&messages::export_archive_key(user_id, export_id))
                .await
                .map_err(|error| {
                    HandlerError::retry(format!("deleting a revoked export: {error}"))
                })?;
            tracing::info!(%export_id, %user_id, "export of a deleted account finished late; archive deleted");
        }
    }
    Ok(())
}
