//! The `cdn.*` procedures: presigned uploads, completing them, reading an attachment and its
//! download link.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::DateTime;
use domain::ids::{AttachmentId, UserId};
use messages::journal::v1::VerifyAttachment;
use sqlx::PgConnection;
use uuid::Uuid;

use super::types::{
    Attachment, CreateUploadInput, CreateUploadOutput, Download, DownloadInput, IdInput,
    MAX_PENDING_UPLOADS, Upload, Variant, content_disposition, millis, object_key,
    sanitize_file_name,
};
use crate::http::error::ApiError;
use crate::http::error::storage_unavailable;
use crate::http::rpc::{Rpc, RpcInput, RpcQuery};
use crate::http::validation::Issues;
use crate::modules::cdn::types::COLUMNS;
use crate::modules::teams::store::MY_TEAMS_SQL;
use crate::procedures::session::Protected;
use crate::state::AppState;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// `cdn.createUploadUrl`.
pub async fn create_upload_url(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<CreateUploadInput>,
) -> Result<Rpc<CreateUploadOutput>, ApiError> {
    let cdn = &state.config.cdn;
    let max = i64::try_from(cdn.max_upload_bytes).unwrap_or(i64::MAX);
    if input.size_bytes > max {
        let mut issues = Issues::default();
        issues.number_range("sizeBytes", input.size_bytes, 1, max);
        issues.into_result()?;
    }
    let content_type = input.content_type.trim().to_ascii_lowercase();
    let file_name = sanitize_file_name(&input.file_name);
    let size_bytes = u64::try_from(input.size_bytes).unwrap_or_default();

    let mut tx = SyncedTx::begin(&state.db).await?;
    // One request at a time per user, so the pending quota holds.
    sqlx::query("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE")
        .bind(session.user_id)
        .execute(&mut *tx)
        .await?;
    let pending: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM attachments
          WHERE owner_user_id = $1 AND status = 'pending' AND deleted_at IS NULL
            AND upload_expires_at > now()",
    )
    .bind(session.user_id)
    .fetch_one(&mut *tx)
    .await?;
    if pending >= MAX_PENDING_UPLOADS {
        return Err(ApiError::defined(
            "TOO_MANY_PENDING_UPLOADS",
            StatusCode::TOO_MANY_REQUESTS,
            format!(
                "You have {pending} uploads in progress; complete them (cdn.completeUpload) or let them expire first"
            ),
        ));
    }
    let team_id = match input.journal_entry_id {
        Some(journal_entry_id) => {
            let entry = crate::modules::journal_entries::store::load_changeable(
                &mut tx,
                journal_entry_id,
                session.user_id,
            )
            .await?;
            if entry.deleted_at.is_some() {
                return Err(ApiError::defined(
                    "ENTRY_DELETED",
                    StatusCode::CONFLICT,
                    "This journal entry is deleted; restore it before attaching files",
                ));
            }
            entry.team_id
        }
        None => None,
    };
    let attachment_id = AttachmentId::from_uuid(Uuid::new_v4());
    let key = object_key(session.user_id, attachment_id);
    let presigned = state
        .storage
        .presign_put(&key, &content_type, size_bytes, cdn.upload_url_ttl)
        .await
        .map_err(storage_unavailable)?;
    let expires_at = DateTime::from_timestamp_millis(millis(presigned.expires_at))
        .ok_or_else(|| ApiError::internal("upload expiry out of range"))?;
    let attachment: Attachment = sqlx::query_as(&format!(
        "INSERT INTO attachments
                (attachment_id, owner_user_id, journal_entry_id, team_id, file_name, content_type,
                 size_bytes, object_key, upload_expires_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
         RETURNING {COLUMNS}"
    ))
    .bind(attachment_id)
    .bind(session.user_id)
    .bind(input.journal_entry_id)
    .bind(team_id)
    .bind(&file_name)
    .bind(&content_type)
    .bind(input.size_bytes)
    .bind(&key)
    .bind(expires_at)
    .fetch_one(&mut *tx)
    .await?;
    attachment.record(&mut tx, Op::Insert)?;
    tx.commit().await?;
    Ok(Rpc(CreateUploadOutput {
        attachment,
        upload: Upload {
            url: presigned.url,
            method: "PUT",
            headers: presigned.headers.into_iter().collect(),
            expires_at: millis(presigned.expires_at),
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// completeUpload, get

/// `cdn.completeUpload {attachmentId}`: the owner says the upload is done. A `pending`
/// attachment whose object exists becomes `verifying` and the worker is asked to verify it;
/// any later state answers unchanged (idempotent).
pub async fn complete_upload(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<Attachment>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current: Option<Attachment> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM attachments
          WHERE attachment_id = $1 AND owner_user_id = $2 FOR UPDATE"
    ))
    .bind(input.attachment_id)
    .bind(session.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    let current = current.ok_or_else(|| ApiError::not_found("Attachment"))?;
    if current.status == "expired" {
        return Err(ApiError::defined(
            "UPLOAD_EXPIRED",
            StatusCode::CONFLICT,
            "This upload was not completed in time; start a new one",
        ));
    }
    if current.deleted_at.is_some() {
        return Err(ApiError::defined(
            "ATTACHMENT_DELETED",
            StatusCode::CONFLICT,
            "This attachment is deleted",
        ));
    }
    if current.status != "pending" {
        return Ok(Rpc(current));
    }
    if state
        .storage
        .head(&current.object_key)
        .await
        .map_err(storage_unavailable)?
        .is_none()
    {
        return Err(ApiError::defined(
            "UPLOAD_NOT_FOUND",
            StatusCode::CONFLICT,
            "Nothing was uploaded yet: PUT the file to the upload URL first",
        ));
    }
    let attachment: Attachment = sqlx::query_as(&format!(
        "UPDATE attachments
            SET status = 'verifying', completed_at = now(), updated_at = now(),
                version = version + 1
          WHERE attachment_id = $1
          RETURNING {COLUMNS}"
    ))
    .bind(current.attachment_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.emit(&VerifyAttachment {
        attachment_id: attachment.attachment_id.to_string(),
        owner_user_id: attachment.owner_user_id.to_string(),
        object_key: attachment.object_key.clone(),
        content_type: attachment.content_type.clone(),
        size_bytes: attachment.size_bytes,
    });
    attachment.record(&mut tx, Op::Update)?;
    tx.commit().await?;
    Ok(Rpc(attachment))
}

/// An attachment the caller can see: their own, or one of an entry of a team they are an
/// active member of. `NOT_FOUND` otherwise (ids cannot be probed).
pub(crate) async fn load_visible(
    conn: &mut PgConnection,
    attachment_id: AttachmentId,
    user_id: UserId,
) -> Result<Attachment, ApiError> {
    let attachment: Option<Attachment> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM attachments
          WHERE attachment_id = $2
            AND (owner_user_id = $1 OR team_id IN ({MY_TEAMS_SQL}))"
    ))
    .bind(user_id)
    .bind(attachment_id)
    .fetch_optional(conn)
    .await?;
    attachment.ok_or_else(|| ApiError::not_found("Attachment"))
}

/// `cdn.get {attachmentId}` (GET-able): the attachment, e.g. to follow its verification.
pub async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<IdInput>,
) -> Result<Rpc<Attachment>, ApiError> {
    let mut conn = state.db.acquire().await?;
    load_visible(&mut conn, input.attachment_id, session.user_id)
        .await
        .map(Rpc)
}

// ---------------------------------------------------------------------------------------------
// getDownloadUrl

/// `cdn.getDownloadUrl {attachmentId, variant?}` (GET-able): a presigned GET of a `ready`
/// attachment (`variant: "thumbnail"`: its thumbnail) for those who can see it.
pub async fn get_download_url(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<DownloadInput>,
) -> Result<Rpc<Download>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let attachment = load_visible(&mut conn, input.attachment_id, session.user_id).await?;
    drop(conn);
    if attachment.deleted_at.is_some() {
        return Err(ApiError::defined(
            "ATTACHMENT_DELETED",
            StatusCode::CONFLICT,
            "This attachment is deleted",
        ));
    }
    if attachment.status != "ready" {
        return Err(ApiError::defined(
            "ATTACHMENT_NOT_READY",
            StatusCode::CONFLICT,
            format!(
                "This attachment is {}; only a verified (ready) attachment can be downloaded",
                attachment.status
            ),
        ));
    }
    let ttl = state.config.cdn.download_url_ttl;
    let link = match input.variant.unwrap_or_default() {
        Variant::Original => state
            .storage
            .presign_get_as(
                attachment.served_key(),
                ttl,
                &content_disposition("attachment", &attachment.file_name),
            )
            .await
            .map_err(storage_unavailable)?,
        Variant::Thumbnail => {
            let Some(thumbnail_key) = &attachment.thumbnail_key else {
                return Err(ApiError::defined(
                    "NO_THUMBNAIL",
                    StatusCode::CONFLICT,
                    "This attachment has no thumbnail (only images have one)",
                ));
            };
            state
                .storage
                .presign_get(thumbnail_key, ttl)
                .await
                .map_err(storage_unavailable)?
        }
    };
    Ok(Rpc(Download {
        url: link.url,
        expires_at: millis(link.expires_at),
    }))
}

// ---------------------------------------------------------------------------------------------
// the worker's verdict
