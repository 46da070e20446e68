//! The attachment row, its wire types and the rules for object keys and file names.

use domain::ids::{AttachmentId, JournalEntryId, TeamId, UserId};
use domain::time::EpochMillis;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::contract::schema::Text;
use crate::http::validation::Input;
use crate::http::validation::Issue;
use crate::http::validation::Issues;
use crate::modules::cdn::ApiError;
use crate::modules::cdn::SystemTime;
use crate::modules::cdn::UNIX_EPOCH;
use sync_protocol::changes::Op;
use sync_protocol::changes::Scope;
use sync_protocol::changes::SyncedRow;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

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
/// `attachments/<owner>/<attachment>`: ids only, never user input.
pub fn object_key(owner_user_id: UserId, attachment_id: AttachmentId) -> String {
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
    pub attachment_id: AttachmentId,
    pub owner_user_id: UserId,
    pub journal_entry_id: Option<JournalEntryId>,
    pub team_id: Option<TeamId>,
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
    pub upload_expires_at: EpochMillis,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub deleted_at: Option<EpochMillis>,
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

    /// Record this row's change in `tx` (a deleted row is a tombstone).
    pub(crate) fn record(&self, tx: &mut SyncedTx<'_>, op: Op) -> Result<(), ApiError> {
        let op = if self.deleted_at.is_some() {
            Op::Delete
        } else {
            op
        };
        Ok(tx.record(&[self.scope()], op, self)?)
    }

    /// The key a download of the original serves: the verified copy. Rows verified before
    /// the copy existed (or by a worker of the previous release during a rollout) have none
    /// and serve the upload key, as before.
    pub(crate) fn served_key(&self) -> &str {
        self.verified_key.as_deref().unwrap_or(&self.object_key)
    }
}

pub(crate) fn millis(at: SystemTime) -> i64 {
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
    pub journal_entry_id: Option<JournalEntryId>,
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct IdInput {
    pub attachment_id: AttachmentId,
}

impl Input for IdInput {}

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
    pub attachment_id: AttachmentId,
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
