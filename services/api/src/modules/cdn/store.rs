//! Attachment SQL that other features drive: an entry's attachments follow its delete and
//! restore; the clean-up of abandoned uploads and the purge of deleted attachments.

use domain::ids::{AttachmentId, JournalEntryId};
use std::time::Duration;

use chrono::{DateTime, Utc};
use platform::s3::{ObjectStore, StorageError};
use sqlx::PgPool;

use super::types::Attachment;
use crate::http::error::ApiError;
use crate::http::error::storage_unavailable;
use crate::modules::cdn::types::COLUMNS;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::SyncedTx;

/// Rows handled per round of the clean-up and the purge.
const CHUNK: i64 = 100;

/// Soft-delete the live attachments of `journal_entry_id` (in the caller's transaction, which
/// deletes the entry), recording their tombstones. They get the same `deleted_at` as the
/// entry (`now()` is the transaction's time), which is how a restore finds them.
pub async fn delete_for_entry(
    tx: &mut SyncedTx<'_>,
    journal_entry_id: JournalEntryId,
) -> Result<(), ApiError> {
    let deleted: Vec<Attachment> = sqlx::query_as(&format!(
        "UPDATE attachments
            SET deleted_at = now(), updated_at = now(), version = version + 1
          WHERE journal_entry_id = $1 AND deleted_at IS NULL
          RETURNING {COLUMNS}"
    ))
    .bind(journal_entry_id)
    .fetch_all(&mut **tx)
    .await?;
    for attachment in &deleted {
        attachment.record(tx, Op::Delete)?;
    }
    Ok(())
}

/// Restore the attachments deleted with the entry (`deleted_at` = the entry's), except the
/// ones that expired meanwhile.
pub async fn restore_for_entry(
    tx: &mut SyncedTx<'_>,
    journal_entry_id: JournalEntryId,
    entry_deleted_at: DateTime<Utc>,
) -> Result<(), ApiError> {
    let restored: Vec<Attachment> = sqlx::query_as(&format!(
        "UPDATE attachments
            SET deleted_at = NULL, updated_at = now(), version = version + 1
          WHERE journal_entry_id = $1 AND deleted_at = $2 AND status <> 'expired'
          RETURNING {COLUMNS}"
    ))
    .bind(journal_entry_id)
    .bind(entry_deleted_at)
    .fetch_all(&mut **tx)
    .await?;
    for attachment in &restored {
        attachment.record(tx, Op::Update)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// clean-up and purge

/// Every object of an attachment: the upload key (a presigned PUT may have written it again
/// after verification), the verified copy and the thumbnail.
pub(crate) async fn delete_objects(
    storage: &ObjectStore,
    object_key: &str,
    verified_key: Option<&str>,
    thumbnail_key: Option<&str>,
) -> Result<(), StorageError> {
    storage.delete(object_key).await?;
    for key in [verified_key, thumbnail_key].into_iter().flatten() {
        storage.delete(key).await?;
    }
    Ok(())
}

#[derive(sqlx::FromRow)]
pub(crate) struct Doomed {
    pub(crate) attachment_id: AttachmentId,
    pub(crate) object_key: String,
    pub(crate) verified_key: Option<String>,
    pub(crate) thumbnail_key: Option<String>,
}

/// `clean-up-abandoned-uploads`: uploads still `pending` `abandoned_after` after they began
/// (their URL has long expired), or still `verifying` that long after `completeUpload`
/// (the worker gave up), become `expired` and soft-deleted; their objects are deleted first.
/// Returns how many.
pub async fn clean_up_abandoned_uploads(
    db: &PgPool,
    storage: &ObjectStore,
    abandoned_after: Duration,
) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let Some((ids, full)) = doom_chunk(
            db,
            storage,
            "SELECT attachment_id, object_key, verified_key, thumbnail_key FROM attachments
              WHERE deleted_at IS NULL
                AND ((status = 'pending' AND created_at < now() - make_interval(secs => $1))
                  OR (status = 'verifying' AND completed_at < now() - make_interval(secs => $1)))
              ORDER BY created_at LIMIT $2",
            abandoned_after,
        )
        .await?
        else {
            return Ok(total);
        };
        let mut tx = SyncedTx::begin(db).await?;
        let expired: Vec<Attachment> = sqlx::query_as(&format!(
            "UPDATE attachments
                SET status = 'expired', deleted_at = now(), updated_at = now(),
                    version = version + 1
              WHERE attachment_id = ANY($1) AND status IN ('pending', 'verifying')
                AND deleted_at IS NULL
              RETURNING {COLUMNS}"
        ))
        .bind(&ids)
        .fetch_all(&mut *tx)
        .await?;
        for attachment in &expired {
            attachment.record(&mut tx, Op::Delete)?;
        }
        tx.commit().await?;
        total += expired.len() as u64;
        if !full {
            return Ok(total);
        }
    }
}

/// The retention purge: attachments soft-deleted more than `retention` ago lose their
/// objects (original and thumbnail), then their rows. Returns how many.
pub async fn purge_deleted(
    db: &PgPool,
    storage: &ObjectStore,
    retention: Duration,
) -> Result<u64, ApiError> {
    let mut total = 0;
    loop {
        let Some((ids, full)) = doom_chunk(
            db,
            storage,
            "SELECT attachment_id, object_key, verified_key, thumbnail_key FROM attachments
              WHERE deleted_at < now() - make_interval(secs => $1)
              ORDER BY deleted_at LIMIT $2",
            retention,
        )
        .await?
        else {
            return Ok(total);
        };
        total += sqlx::query("DELETE FROM attachments WHERE attachment_id = ANY($1)")
            .bind(&ids)
            .execute(db)
            .await?
            .rows_affected();
        if !full {
            return Ok(total);
        }
    }
}

/// One chunk of the clean-up or the purge: the rows `select` finds (`$1`: `age` in seconds,
/// `$2`: the chunk size) lose their objects. Their ids, and whether the chunk was full (more
/// may follow); `None` when there were none.
async fn doom_chunk(
    db: &PgPool,
    storage: &ObjectStore,
    select: &str,
    age: Duration,
) -> Result<Option<(Vec<AttachmentId>, bool)>, ApiError> {
    let doomed: Vec<Doomed> = sqlx::query_as(select)
        .bind(age.as_secs_f64())
        .bind(CHUNK)
        .fetch_all(db)
        .await?;
    if doomed.is_empty() {
        return Ok(None);
    }
    for row in &doomed {
        delete_objects(
            storage,
            &row.object_key,
            row.verified_key.as_deref(),
            row.thumbnail_key.as_deref(),
        )
        .await
        .map_err(storage_unavailable)?;
    }
    let full = doomed.len() >= usize::try_from(CHUNK).unwrap_or(usize::MAX);
    Ok(Some((
        doomed.iter().map(|row| row.attachment_id).collect(),
        full,
    )))
}
