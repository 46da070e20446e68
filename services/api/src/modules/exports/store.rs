//! Exports' SQL, including what account deletion needs.

use domain::ids::{ExportId, UserId};

use crate::http::error::ApiError;

/// A pending export younger than this is answered instead of starting another.
pub(crate) const PENDING_REUSE_SECONDS: i64 = 3600;
/// `exports.list` answers the most recent ones.
pub(crate) const LIST_LIMIT: i64 = 20;

pub(crate) const EXPORT_COLUMNS: &str = "export_id, \
     CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
          WHEN status = 'ready' AND download_expires_at <= now() THEN 'expired' ELSE status END \
       AS status, \
     requested_at, ready_at, size_bytes, \
     CASE WHEN download_expires_at > now() AND revoked_at IS NULL THEN download_url END \
       AS download_url, \
     download_expires_at AS expires_at";

/// Revoke every export link of `user_id` at once (in the caller's transaction, which deletes
/// the account): the rows are marked revoked, and their archives are deleted from object
/// storage before the transaction commits. A presigned URL cannot be revoked, but once its
/// object is gone it answers 404. If storage fails, the caller's transaction fails with it
/// (`503 STORAGE_UNAVAILABLE`) and the account is not deleted: no link outlives a deletion.
/// Returns how many exports were revoked.
pub async fn revoke_for_user(
    conn: &mut sqlx::PgConnection,
    storage: &platform::s3::ObjectStore,
    user_id: UserId,
) -> Result<u64, ApiError> {
    let revoked: Vec<ExportId> = sqlx::query_scalar(
        "UPDATE exports SET revoked_at = now(), download_url = NULL
          WHERE user_id = $1 AND revoked_at IS NULL
          RETURNING export_id",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    delete_archives(storage, user_id, &revoked).await?;
    Ok(revoked.len() as u64)
}

/// Delete the archives of `export_ids` (deleting a missing object succeeds).
pub async fn delete_archives(
    storage: &platform::s3::ObjectStore,
    user_id: UserId,
    export_ids: &[ExportId],
) -> Result<(), ApiError> {
    for export_id in export_ids {
        storage
            .delete(&messages::export_archive_key(user_id, export_id))
            .await
            .map_err(crate::http::error::storage_unavailable)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// answering the worker
