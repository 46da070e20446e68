//! Attachments through presigned S3 uploads (the original's `modules/cdn`), verified by the
//! worker: `cdn.createUploadUrl`, `cdn.completeUpload`, `cdn.get`, `cdn.getDownloadUrl`, the
//! `attachment.verified` event, the `clean-up-abandoned-uploads` job and the purge of
//! attachments past retention. See docs/cdn.md.
//!
//! 1. `createUploadUrl {fileName, contentType, sizeBytes, journalEntryId?}` checks the type
//!    against the allow-list and the size against `CDN_MAX_UPLOAD_BYTES`, records the row
//!    (`pending`) with its changeset, and answers a PUT URL (valid `CDN_UPLOAD_URL_TTL_SECONDS`)
//!    whose signature covers `Content-Type` and `Content-Length`: S3 refuses any other type or
//!    length. The object key is `attachments/<ownerUserId>/<attachmentId>`; nothing the client
//!    sends becomes part of it (the sanitized file name is metadata for downloads only).
//! 2. The client PUTs the file, then calls `completeUpload {attachmentId}`: the row becomes
//!    `verifying` and the worker gets the task `media.verify_attachment` (one transaction).
//!    Calling it again answers the row as it is (no second task).
//! 3. The worker's `attachment.verified` marks it `ready` (with a thumbnail for images) or
//!    `rejected` (its object already deleted by the worker).
//! 4. `getDownloadUrl {attachmentId, variant?}` presigns a GET of a `ready` attachment for its
//!    owner and, for an attachment of a team entry, every active member of the team.
//!
//! Attachments are a synced table (`attachments`, in the entry's scope, else the owner's).
//! Deleting an entry soft-deletes its attachments in the same transaction; restoring it
//! restores the ones deleted with it. Uploads left `pending` (or `verifying`) for
//! `CDN_ABANDONED_UPLOAD_SECONDS` are expired by the cron job and their objects deleted;
//! the daily retention purge deletes the objects and rows of attachments soft-deleted longer
//! than `SOFT_DELETE_RETENTION_DAYS`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::State;
use axum::http::StatusCode;
use bus::{HandlerError, Msg};
use chrono::{DateTime, Utc};
use messages::journal::v1::{AttachmentVerified, VerifyAttachment};
use platform::s3::{ObjectStore, StorageError};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::AppState;
use crate::changes::{Changes, Op, Scope, SyncedRow};
use crate::contract::{Text, errors};
use crate::error::ApiError;
use crate::rpc::{Input, Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::session::Protected;
use crate::teams::MY_TEAMS_SQL;
use crate::validation::{Issue, Issues};

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("cdn.createUploadUrl", create_upload_url)
        .errors(&[
            errors::ENTRY_DELETED,
            errors::TOO_MANY_PENDING_UPLOADS,
            errors::STORAGE_UNAVAILABLE,
        ])
        .mutation("cdn.completeUpload", complete_upload)
        .errors(&[
            errors::UPLOAD_EXPIRED,
            errors::UPLOAD_NOT_FOUND,
            errors::ATTACHMENT_DELETED,
            errors::STORAGE_UNAVAILABLE,
        ])
        .query("cdn.get", get)
        .query("cdn.getDownloadUrl", get_download_url)
        .errors(&[
            errors::ATTACHMENT_DELETED,
            errors::ATTACHMENT_NOT_READY,
            errors::NO_THUMBNAIL,
            errors::STORAGE_UNAVAILABLE,
        ])
}

/// The content types `createUploadUrl` accepts: images (which the worker checks and
/// thumbnails), PDF, and common audio.
pub const ALLOWED_CONTENT_TYPES: [&str; 12] = [
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "application/pdf",
    "audio/mpeg",
    "audio/mp4",
    "audio/aac",
    "audio/ogg",
    "audio/wav",
    "audio/webm",
    "audio/flac",
];

/// File names longer than this (in characters) are refused.
pub const MAX_FILE_NAME_CHARS: usize = 255;
/// Uploads a user may have `pending` at once with a URL that is still valid.
pub const MAX_PENDING_UPLOADS: i64 = 50;
/// Rows handled per round of the clean-up and the purge.
const CHUNK: i64 = 100;

/// `attachments/<owner>/<attachment>`: ids only, never user input.
pub fn object_key(owner_user_id: Uuid, attachment_id: Uuid) -> String {
    format!("attachments/{owner_user_id}/{attachment_id}")
}

/// The file name as kept: its last path segment, without control characters, quotes or
/// backslashes, trimmed, at most [`MAX_FILE_NAME_CHARS`] characters. Empty when nothing is
/// left.
pub fn sanitize_file_name(name: &str) -> String {
    let last = name.rsplit(['/', '\\']).next().unwrap_or_default();
    let cleaned: String = last
        .chars()
        .filter(|c| !c.is_control() && *c != '"')
        .take(MAX_FILE_NAME_CHARS)
        .collect();
    let trimmed = cleaned.trim().trim_start_matches('.').trim();
    trimmed.to_owned()
}

/// `Content-Disposition` for a download of `file_name` (RFC 6266: an ASCII fallback and the
/// UTF-8 name).
pub fn content_disposition(disposition: &str, file_name: &str) -> String {
    let ascii: String = file_name
        .chars()
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '_'
            }
        })
        .collect();
    let mut encoded = String::new();
    for byte in file_name.bytes() {
        if byte.is_ascii_alphanumeric() || b"!#$&+-.^_`|~".contains(&byte) {
            encoded.push(char::from(byte));
        } else {
            encoded.push_str(&format!("%{byte:02X}"));
        }
    }
    format!("{disposition}; filename=\"{ascii}\"; filename*=UTF-8''{encoded}")
}

/// An attachment as clients see it (and as it syncs).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Attachment {
    pub attachment_id: Uuid,
    pub owner_user_id: Uuid,
    pub journal_entry_id: Option<Uuid>,
    pub team_id: Option<Uuid>,
    pub file_name: String,
    pub content_type: String,
    pub size_bytes: i64,
    /// `pending`, `verifying`, `ready`, `rejected` or `expired`.
    pub status: String,
    /// When rejected: `OBJECT_MISSING`, `SIZE_MISMATCH`, `CONTENT_TYPE_MISMATCH`,
    /// `CONTENT_MISMATCH` or `IMAGE_UNREADABLE`.
    pub rejection_code: Option<String>,
    pub rejection_message: Option<String>,
    /// A thumbnail exists (`getDownloadUrl {variant: "thumbnail"}`).
    pub has_thumbnail: bool,
    /// Images: the original's size in pixels.
    pub width: Option<i32>,
    pub height: Option<i32>,
    /// Epoch milliseconds: until when the upload URL works.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub upload_expires_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
    #[serde(skip)]
    pub object_key: String,
    #[serde(skip)]
    pub thumbnail_key: Option<String>,
    /// What downloads serve: the worker's copy of the bytes it verified, which no presigned
    /// URL can write (`None` before verification, and for rows verified before it existed).
    #[serde(skip)]
    pub verified_key: Option<String>,
}

pub(crate) const COLUMNS: &str = "attachment_id, owner_user_id, journal_entry_id, team_id, file_name, \
     content_type, size_bytes, status, rejection_code, rejection_message, \
     thumbnail_key IS NOT NULL AS has_thumbnail, width, height, upload_expires_at, created_at, \
     updated_at, deleted_at, version, object_key, thumbnail_key, verified_key";

impl SyncedRow for Attachment {
    const TABLE: &'static str = "attachments";
    fn row_id(&self) -> String {
        self.attachment_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

impl Attachment {
    fn scope(&self) -> Scope {
        Scope::owner(self.owner_user_id, self.team_id)
    }

    /// Record this row's change (a deleted row is a tombstone).
    pub(crate) fn record(&self, changes: &mut Changes, op: Op) -> Result<(), ApiError> {
        let op = if self.deleted_at.is_some() {
            Op::Delete
        } else {
            op
        };
        Ok(changes.record(&[self.scope()], op, self)?)
    }

    /// The key a download of the original serves: the verified copy. Rows verified before
    /// the copy existed (or by a worker of the previous release during a rollout) have none
    /// and serve the upload key, as before.
    fn served_key(&self) -> &str {
        self.verified_key.as_deref().unwrap_or(&self.object_key)
    }
}

/// Object storage failing is not the client's fault: `503 STORAGE_UNAVAILABLE` (logged).
pub(crate) fn storage_unavailable(error: StorageError) -> ApiError {
    tracing::error!(%error, "object storage");
    ApiError::defined(
        "STORAGE_UNAVAILABLE",
        StatusCode::SERVICE_UNAVAILABLE,
        "File storage is unavailable; try again shortly",
    )
}

fn millis(at: SystemTime) -> i64 {
    at.duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default()
}

// ---------------------------------------------------------------------------------------------
// createUploadUrl

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateUploadInput {
    #[schemars(transform = Text::trimmed().min(1).max(MAX_FILE_NAME_CHARS))]
    pub file_name: String,
    #[schemars(transform = Text::trimmed().lowercase_one_of(&ALLOWED_CONTENT_TYPES))]
    pub content_type: String,
    #[schemars(range(min = 1))]
    pub size_bytes: i64,
    pub journal_entry_id: Option<Uuid>,
}

impl Input for CreateUploadInput {
    fn check(&self, issues: &mut Issues) {
        issues.string_length("fileName", self.file_name.trim(), 1, MAX_FILE_NAME_CHARS);
        if !self.file_name.trim().is_empty() && sanitize_file_name(&self.file_name).is_empty() {
            issues.custom(
                "fileName",
                "Invalid input: the file name has no usable characters",
            );
        }
        let content_type = self.content_type.trim().to_ascii_lowercase();
        if !ALLOWED_CONTENT_TYPES.contains(&content_type.as_str()) {
            let mut issue = Issue::new(
                "invalid_value",
                "contentType",
                format!(
                    "Unsupported content type \"{}\": expected one of {}",
                    self.content_type,
                    ALLOWED_CONTENT_TYPES.join(", ")
                ),
            );
            issue.values = Some(
                ALLOWED_CONTENT_TYPES
                    .iter()
                    .map(|value| (*value).to_owned())
                    .collect(),
            );
            issues.push(issue);
        }
        if self.size_bytes < 1 {
            issues.number_range("sizeBytes", self.size_bytes, 1, i64::MAX);
        }
    }
}

/// Where and how to upload.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Upload {
    pub url: String,
    /// Always `PUT`.
    pub method: &'static str,
    /// Send exactly these headers (they are signed).
    pub headers: BTreeMap<String, String>,
    /// Epoch milliseconds.
    pub expires_at: i64,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateUploadOutput {
    pub attachment: Attachment,
    pub upload: Upload,
}

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

    let mut tx = state.db.begin().await?;
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
            let entry =
                crate::journal_entries::load_changeable(&mut tx, journal_entry_id, session.user_id)
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
    let attachment_id = Uuid::new_v4();
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
    let mut changes = Changes::new();
    attachment.record(&mut changes, Op::Insert)?;
    changes.write(&mut tx).await?;
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    pub attachment_id: Uuid,
}

impl Input for IdInput {}

/// `cdn.completeUpload {attachmentId}`: the owner says the upload is done. A `pending`
/// attachment whose object exists becomes `verifying` and the worker is asked to verify it;
/// any later state answers unchanged (idempotent).
pub async fn complete_upload(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<Attachment>, ApiError> {
    let mut tx = state.db.begin().await?;
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
    bus::outbox::emit(
        &mut tx,
        &VerifyAttachment {
            attachment_id: attachment.attachment_id.to_string(),
            owner_user_id: attachment.owner_user_id.to_string(),
            object_key: attachment.object_key.clone(),
            content_type: attachment.content_type.clone(),
            size_bytes: attachment.size_bytes,
        },
    )
    .await?;
    let mut changes = Changes::new();
    attachment.record(&mut changes, Op::Update)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(attachment))
}

/// An attachment the caller can see: their own, or one of an entry of a team they are an
/// active member of. `NOT_FOUND` otherwise (ids cannot be probed).
async fn load_visible(
    conn: &mut PgConnection,
    attachment_id: Uuid,
    user_id: Uuid,
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

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum Variant {
    #[default]
    Original,
    Thumbnail,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DownloadInput {
    pub attachment_id: Uuid,
    pub variant: Option<Variant>,
}

impl Input for DownloadInput {}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Download {
    pub url: String,
    /// Epoch milliseconds.
    pub expires_at: i64,
}

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

fn parse_uuid(field: &str, value: &str) -> Result<Uuid, HandlerError> {
    Uuid::parse_str(value)
        .map_err(|_| HandlerError::permanent(format!("{field} `{value}` is not a uuid")))
}

/// `attachment.verified` → `ready` or `rejected`. Only a `verifying` attachment changes, so a
/// redelivery changes nothing; a verdict on an attachment expired meanwhile only deletes
/// what the worker wrote.
pub async fn on_attachment_verified(
    bus::State(state): bus::State<AppState>,
    Msg(verdict): Msg<AttachmentVerified>,
) -> Result<(), HandlerError> {
    let attachment_id = parse_uuid("attachment_id", &verdict.attachment_id)?;
    let owner_user_id = parse_uuid("owner_user_id", &verdict.owner_user_id)?;
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    updated.record(&mut changes, Op::Update)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    tracing::info!(%attachment_id, status = %updated.status, "attachment verified");
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// entries: delete and restore

/// Soft-delete the live attachments of `journal_entry_id` (in the caller's transaction, which
/// deletes the entry), recording their tombstones. They get the same `deleted_at` as the
/// entry (`now()` is the transaction's time), which is how a restore finds them.
pub async fn delete_for_entry(
    conn: &mut PgConnection,
    journal_entry_id: Uuid,
    changes: &mut Changes,
) -> Result<(), ApiError> {
    let deleted: Vec<Attachment> = sqlx::query_as(&format!(
        "UPDATE attachments
            SET deleted_at = now(), updated_at = now(), version = version + 1
          WHERE journal_entry_id = $1 AND deleted_at IS NULL
          RETURNING {COLUMNS}"
    ))
    .bind(journal_entry_id)
    .fetch_all(conn)
    .await?;
    for attachment in &deleted {
        attachment.record(changes, Op::Delete)?;
    }
    Ok(())
}

/// Restore the attachments deleted with the entry (`deleted_at` = the entry's), except the
/// ones that expired meanwhile.
pub async fn restore_for_entry(
    conn: &mut PgConnection,
    journal_entry_id: Uuid,
    entry_deleted_at: DateTime<Utc>,
    changes: &mut Changes,
) -> Result<(), ApiError> {
    let restored: Vec<Attachment> = sqlx::query_as(&format!(
        "UPDATE attachments
            SET deleted_at = NULL, updated_at = now(), version = version + 1
          WHERE journal_entry_id = $1 AND deleted_at = $2 AND status <> 'expired'
          RETURNING {COLUMNS}"
    ))
    .bind(journal_entry_id)
    .bind(entry_deleted_at)
    .fetch_all(conn)
    .await?;
    for attachment in &restored {
        attachment.record(changes, Op::Update)?;
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
struct Doomed {
    attachment_id: Uuid,
    object_key: String,
    verified_key: Option<String>,
    thumbnail_key: Option<String>,
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
        let mut tx = db.begin().await?;
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
        let mut changes = Changes::new();
        for attachment in &expired {
            attachment.record(&mut changes, Op::Delete)?;
        }
        changes.write(&mut tx).await?;
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
) -> Result<Option<(Vec<Uuid>, bool)>, ApiError> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_lose_paths_and_control_characters() {
        assert_eq!(sanitize_file_name("photo.png"), "photo.png");
        assert_eq!(sanitize_file_name("../../etc/passwd"), "passwd");
        assert_eq!(
            sanitize_file_name("C:\\Users\\ada\\report.pdf"),
            "report.pdf"
        );
        assert_eq!(sanitize_file_name("a\u{0}b\"c\n.mp3"), "abc.mp3");
        assert_eq!(sanitize_file_name("  .hidden "), "hidden");
        assert_eq!(sanitize_file_name("dir/"), "");
        assert_eq!(sanitize_file_name(&"é".repeat(300)).chars().count(), 255);
    }

    #[test]
    fn keys_hold_ids_only_and_dispositions_are_quoted() {
        let user = Uuid::nil();
        let attachment = Uuid::max();
        assert_eq!(
            object_key(user, attachment),
            format!("attachments/{user}/{attachment}")
        );
        assert_eq!(
            content_disposition("attachment", "résumé 1.pdf"),
            "attachment; filename=\"r_sum_ 1.pdf\"; filename*=UTF-8''r%C3%A9sum%C3%A9%201.pdf"
        );
    }
}
