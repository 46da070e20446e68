//! Bus handlers: the worker's verdict on an upload (`attachment.verified`).

use bus::{HandlerError, Msg};
use messages::journal::v1::AttachmentVerified;

use super::store::delete_objects;
use super::types::{Attachment, object_key};
use crate::modules::cdn::types::COLUMNS;
use crate::state::AppState;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::SyncedTx;

/// `attachment.verified` → `ready` or `rejected`. Only a `verifying` attachment changes, so a
/// redelivery changes nothing; a verdict on an attachment expired meanwhile only deletes
/// what the worker wrote.
pub async fn on_attachment_verified(
    bus::State(state): bus::State<AppState>,
    Msg(verdict): Msg<AttachmentVerified>,
) -> Result<(), HandlerError> {
    let attachment_id = verdict
        .parse_attachment_id()
        .map_err(HandlerError::permanent)?;
    let owner_user_id = verdict
        .parse_owner_user_id()
        .map_err(HandlerError::permanent)?;
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current: Option<Attachment> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM attachments
          WHERE attachment_id = $1 AND owner_user_id = $2 FOR UPDATE"
    ))
    .bind(attachment_id)
    .bind(owner_user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(current) = current else {
        // Purged meanwhile: nothing of it may stay in storage.
        drop(tx);
        delete_objects(
            &state.storage,
            &object_key(owner_user_id, attachment_id),
            verdict.verified_key.as_deref(),
            verdict.thumbnail_key.as_deref(),
        )
        .await?;
        return Ok(());
    };
    if current.status != "verifying" {
        drop(tx);
        if current.status == "expired" {
            for key in [&verdict.verified_key, &verdict.thumbnail_key]
                .into_iter()
                .flatten()
            {
                state.storage.delete(key).await?;
            }
        }
        return Ok(());
    }
    let updated: Attachment = if verdict.accepted {
        sqlx::query_as(&format!(
            "UPDATE attachments
                SET status = 'ready', thumbnail_key = $2, width = $3, height = $4,
                    verified_key = $5,
                    verified_at = now(), updated_at = now(), version = version + 1
              WHERE attachment_id = $1
              RETURNING {COLUMNS}"
        ))
        .bind(attachment_id)
        .bind(&verdict.thumbnail_key)
        .bind(verdict.width)
        .bind(verdict.height)
        .bind(&verdict.verified_key)
        .fetch_one(&mut *tx)
        .await?
    } else {
        sqlx::query_as(&format!(
            "UPDATE attachments
                SET status = 'rejected', rejection_code = $2, rejection_message = $3,
                    verified_at = now(), updated_at = now(), version = version + 1
              WHERE attachment_id = $1
              RETURNING {COLUMNS}"
        ))
        .bind(attachment_id)
        .bind(&verdict.rejection_code)
        .bind(&verdict.rejection_message)
        .fetch_one(&mut *tx)
        .await?
    };
    updated.record(&mut tx, Op::Update)?;
    tx.commit().await?;
    tracing::info!(%attachment_id, status = %updated.status, "attachment verified");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// entries: delete and restore
