//! Data export: task `exports.export_user_data` → a JSON archive of the user's data in object
//! storage and an `export.ready` event carrying a presigned download link.
//!
//! 1. A redelivery of a task that already completed does nothing (the message id is recorded
//!    with the result).
//! 2. The user's data comes from the api, which owns it, over typed NATS request/reply
//!    (`ExportDataRequest` on `queries.api.export_data`), one section and page at a time; the
//!    worker never reads the api's schema. Pages are written to a temporary file as they
//!    arrive, so memory stays bounded however much the user wrote.
//! 3. The file is uploaded as `exports/<userId>/<exportId>.json` (a fixed key: a retry
//!    overwrites the same object).
//! 4. One transaction records the message id, the `data_exports` row and the `export.ready`
//!    event (through the outbox). A replica killed anywhere before that commit leaves nothing
//!    behind that a redelivery does not redo; after it, nothing is left to do.

use domain::ids::{ExportId, UserId};
use std::path::Path;
use std::time::{Duration, UNIX_EPOCH};

use bus::{HandlerError, Meta, Msg, State};
use chrono::{DateTime, TimeZone, Utc};
use messages::journal::v1::{
    ExportDataReply, ExportDataRequest, ExportReady, ExportSection, ExportUserData,
    ExportedJournalEntry, ExportedProfile, ExportedPrompt, ExportedTeamMembership,
};
use serde::Serialize;
use tokio::io::{AsyncWriteExt, BufWriter};

use crate::WorkerState;

/// How long the worker waits for one page from the api.
const QUERY_TIMEOUT: Duration = Duration::from_secs(10);

/// The archive's format name and version (the first two fields of the document).
pub const ARCHIVE_FORMAT: &str = "journal-export";
pub const ARCHIVE_FORMAT_VERSION: u32 = 1;

/// Export settings from the worker's configuration.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// How long the download link is valid (at most seven days).
    pub link_ttl: Duration,
    /// Test only: wait this long after the upload, before recording the result (0 = never).
    pub pause_after_upload: Duration,
}

/// The object key of an export's archive.
pub fn object_key(user_id: UserId, export_id: ExportId) -> String {
    messages::export_archive_key(user_id, export_id)
}

fn timestamp(field: &str, millis: i64) -> Result<DateTime<Utc>, HandlerError> {
    Utc.timestamp_millis_opt(millis)
        .single()
        .ok_or_else(|| HandlerError::permanent(format!("{field} {millis} is out of range")))
}

pub async fn export_user_data(
    State(state): State<WorkerState>,
    Msg(task): Msg<ExportUserData>,
    meta: Meta,
) -> Result<(), HandlerError> {
    let export_id = task.parse_export_id().map_err(HandlerError::permanent)?;
    let user_id = task.parse_user_id().map_err(HandlerError::permanent)?;
    let requested_at = timestamp("requested_at_ms", task.requested_at_ms)?;
    if bus::idempotency::already_processed(&state.db, &meta.handler, &meta.message_id).await? {
        return Ok(());
    }

    let file = tempfile::NamedTempFile::new()
        .map_err(|error| HandlerError::retry(format!("creating a temporary file: {error}")))?;
    write_archive(&state, export_id, user_id, requested_at, file.path()).await?;
    let key = object_key(user_id, export_id);
    let size_bytes = state
        .storage
        .put_file(
            &key,
            file.path(),
            "application/json",
            Some(&format!(
                "attachment; filename=\"journal-export-{export_id}.json\""
            )),
        )
        .await?;
    drop(file);
    tracing::info!(%export_id, %user_id, size_bytes, "export archive uploaded");
    if !state.exports.pause_after_upload.is_zero() {
        tracing::warn!(
            pause_ms = state.exports.pause_after_upload.as_millis() as u64,
            "WORKER_TEST_EXPORT_PAUSE_MS: pausing before recording the export"
        );
        tokio::time::sleep(state.exports.pause_after_upload).await;
    }
    let link = state
        .storage
        .presign_get(&key, state.exports.link_ttl)
        .await?;
    let expires_at_ms = link
        .expires_at
        .duration_since(UNIX_EPOCH)
        .map(|since| i64::try_from(since.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or_default();
    let link_expires_at = timestamp("link expiry", expires_at_ms)?;

    let mut tx = state.db.begin().await?;
    if !bus::idempotency::first_time(&mut tx, &meta.handler, &meta.message_id).await? {
        return Ok(());
    }
    let recorded = sqlx::query(
        "INSERT INTO data_exports
                (export_id, user_id, object_key, size_bytes, requested_at, link_expires_at, message_id)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         ON CONFLICT (export_id) DO NOTHING",
    )
    .bind(export_id)
    .bind(user_id)
    .bind(&key)
    .bind(i64::try_from(size_bytes).unwrap_or(i64::MAX))
    .bind(requested_at)
    .bind(link_expires_at)
    .bind(&meta.message_id)
    .execute(&mut *tx)
    .await?
    .rows_affected();
    // The same export sent again as another task: it is ready already, tell no one twice.
    if recorded == 1 {
        let ready = ExportReady {
            export_id: export_id.to_string(),
            user_id: user_id.to_string(),
            download_url: link.url,
            expires_at_ms,
            size_bytes: i64::try_from(size_bytes).unwrap_or(i64::MAX),
        };
        bus::outbox::emit(&mut tx, &ready).await?;
    }
    tx.commit().await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// the archive

/// Write the archive: one JSON document, sections streamed page by page.
async fn write_archive(
    state: &WorkerState,
    export_id: ExportId,
    user_id: UserId,
    requested_at: DateTime<Utc>,
    path: &Path,
) -> Result<(), HandlerError> {
    let file = tokio::fs::File::create(path)
        .await
        .map_err(|error| HandlerError::retry(format!("creating the archive file: {error}")))?;
    let mut out = Archive {
        out: BufWriter::new(file),
    };
    let header = Header {
        format: ARCHIVE_FORMAT,
        format_version: ARCHIVE_FORMAT_VERSION,
        export_id,
        user_id,
        requested_at: requested_at.timestamp_millis(),
        generated_at: Utc::now().timestamp_millis(),
    };
    // The header's fields, then the sections, in one object.
    let header = serde_json::to_vec(&header).map_err(HandlerError::retry)?;
    out.raw(header.strip_suffix(b"}").unwrap_or(&header))
        .await?;

    let profile = fetch(state, user_id, ExportSection::Profile, "")
        .await?
        .profile
        .ok_or_else(|| HandlerError::retry("the api sent no profile"))?;
    out.raw(b",\"profile\":").await?;
    out.value(&ArchiveProfile::from(profile)).await?;

    out.raw(b",\"teams\":[").await?;
    let mut first = true;
    let mut cursor = String::new();
    loop {
        let page = fetch(state, user_id, ExportSection::Teams, &cursor).await?;
        for team in page.teams {
            out.item(&mut first, &ArchiveTeam::from(team)).await?;
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    out.raw(b"],\"prompts\":[").await?;
    first = true;
    cursor.clear();
    loop {
        let page = fetch(state, user_id, ExportSection::Prompts, &cursor).await?;
        for prompt in page.prompts {
            out.item(&mut first, &ArchivePrompt::from(prompt)).await?;
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    out.raw(b"],\"journalEntries\":[").await?;
    first = true;
    cursor.clear();
    loop {
        let page = fetch(state, user_id, ExportSection::JournalEntries, &cursor).await?;
        for entry in page.journal_entries {
            out.item(&mut first, &ArchiveJournalEntry::from(entry))
                .await?;
        }
        if page.next_cursor.is_empty() {
            break;
        }
        cursor = page.next_cursor;
    }
    out.raw(b"]}").await?;
    out.out
        .flush()
        .await
        .map_err(|error| HandlerError::retry(format!("writing the archive: {error}")))?;
    Ok(())
}

/// One page of one section from the api.
async fn fetch(
    state: &WorkerState,
    user_id: UserId,
    section: ExportSection,
    cursor: &str,
) -> Result<ExportDataReply, HandlerError> {
    let request = ExportDataRequest {
        user_id: user_id.to_string(),
        section: section as i32,
        cursor: cursor.to_owned(),
    };
    let reply = state.bus.request(&request, QUERY_TIMEOUT).await?;
    match reply.error_code.as_str() {
        "" => Ok(reply),
        // The account is gone: retrying cannot help.
        "USER_NOT_FOUND" | "BAD_REQUEST" => Err(HandlerError::permanent(format!(
            "the api answered {}: {}",
            reply.error_code, reply.error_message
        ))),
        code => Err(HandlerError::retry(format!(
            "the api answered {code}: {}",
            reply.error_message
        ))),
    }
}

struct Archive {
    out: BufWriter<tokio::fs::File>,
}

impl Archive {
    async fn raw(&mut self, bytes: &[u8]) -> Result<(), HandlerError> {
        self.out
            .write_all(bytes)
            .await
            .map_err(|error| HandlerError::retry(format!("writing the archive: {error}")))
    }

    async fn value<T: Serialize>(&mut self, value: &T) -> Result<(), HandlerError> {
        let bytes = serde_json::to_vec(value).map_err(HandlerError::retry)?;
        self.raw(&bytes).await
    }

    /// An array element, with a comma before all but the first.
    async fn item<T: Serialize>(
        &mut self,
        first: &mut bool,
        value: &T,
    ) -> Result<(), HandlerError> {
        if !std::mem::take(first) {
            self.raw(b",").await?;
        }
        self.value(value).await
    }
}

/// The archive's leading fields. Timestamps are epoch milliseconds, fields camelCase, as on
/// the wire everywhere else.
#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Header {
    format: &'static str,
    format_version: u32,
    export_id: ExportId,
    user_id: UserId,
    requested_at: i64,
    generated_at: i64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveProfile {
    user_id: String,
    email: String,
    name: String,
    avatar_url: Option<String>,
    timezone: String,
    email_verified: bool,
    created_at: i64,
    updated_at: i64,
}

impl From<ExportedProfile> for ArchiveProfile {
    fn from(profile: ExportedProfile) -> Self {
        Self {
            user_id: profile.user_id,
            email: profile.email,
            name: profile.name,
            avatar_url: profile.avatar_url,
            timezone: profile.timezone,
            email_verified: profile.email_verified,
            created_at: profile.created_at_ms,
            updated_at: profile.updated_at_ms,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveTeam {
    team_id: String,
    team_name: String,
    role: String,
    joined_at: i64,
    left_at: Option<i64>,
    team_deleted_at: Option<i64>,
}

impl From<ExportedTeamMembership> for ArchiveTeam {
    fn from(team: ExportedTeamMembership) -> Self {
        Self {
            team_id: team.team_id,
            team_name: team.team_name,
            role: team.role,
            joined_at: team.joined_at_ms,
            left_at: team.left_at_ms,
            team_deleted_at: team.team_deleted_at_ms,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveSchedule {
    time: String,
    timezone: String,
    weekdays: Vec<i32>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchivePrompt {
    prompt_id: String,
    team_id: Option<String>,
    text: String,
    schedule: Option<ArchiveSchedule>,
    created_at: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
}

impl From<ExportedPrompt> for ArchivePrompt {
    fn from(prompt: ExportedPrompt) -> Self {
        let schedule = match (prompt.schedule_time, prompt.schedule_timezone) {
            (Some(time), Some(timezone)) => Some(ArchiveSchedule {
                time,
                timezone,
                weekdays: prompt.schedule_weekdays,
            }),
            _ => None,
        };
        Self {
            prompt_id: prompt.prompt_id,
            team_id: prompt.team_id,
            text: prompt.text,
            schedule,
            created_at: prompt.created_at_ms,
            updated_at: prompt.updated_at_ms,
            deleted_at: prompt.deleted_at_ms,
        }
    }
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct ArchiveJournalEntry {
    journal_entry_id: String,
    team_id: Option<String>,
    prompt_id: Option<String>,
    title: String,
    content: String,
    mood: Option<i32>,
    tags: Vec<String>,
    entry_date: Option<String>,
    created_at: i64,
    updated_at: i64,
    deleted_at: Option<i64>,
    version: i64,
}

impl From<ExportedJournalEntry> for ArchiveJournalEntry {
    fn from(entry: ExportedJournalEntry) -> Self {
        Self {
            journal_entry_id: entry.journal_entry_id,
            team_id: entry.team_id,
            prompt_id: entry.prompt_id,
            title: entry.title,
            content: entry.content,
            mood: entry.mood,
            tags: entry.tags,
            entry_date: entry.entry_date,
            created_at: entry.created_at_ms,
            updated_at: entry.updated_at_ms,
            deleted_at: entry.deleted_at_ms,
            version: entry.version,
        }
    }
}
