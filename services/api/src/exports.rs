//! Data exports: `exports.create|get|list`, the answer to the worker's `ExportDataRequest`,
//! and the `export.ready` event that marks an export ready.
//!
//! - `exports.create` records the request and sends the worker the task
//!   `exports.export_user_data` in one transaction. While an export of the caller requested
//!   within the last hour is still pending, it answers that one instead of starting another.
//! - The worker builds the archive from the api's answers to `ExportDataRequest` (NATS
//!   request/reply, `queries.api.export_data`): the api reads its own schema, one section and
//!   one page at a time, and the worker never touches the api's tables.
//! - The worker's `export.ready` event (also what the notifier e-mails) marks the export
//!   ready, with its size and presigned download link; `exports.get` shows the link until it
//!   expires (status `expired` afterwards: ask for a new export).
//!
//! What an archive holds (docs/worker.md): the profile; every team membership, past ones too;
//! the prompts the user owns or wrote for a team; every journal entry the user wrote,
//! personal and team ones — soft-deleted rows included with their `deletedAt`, since the
//! backend still holds them until the purge. Entries other members wrote in the user's teams
//! are theirs, not the user's, and are not included.

use axum::extract::State;
use bus::{HandlerError, Msg, State as BusState};
use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use messages::journal::v1::{
    ExportDataReply, ExportDataRequest, ExportReady, ExportSection, ExportUserData,
    ExportedJournalEntry, ExportedProfile, ExportedPrompt, ExportedTeamMembership,
};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;
use crate::pagination::KeysetCursor;
use crate::rpc::{Input, NoInput, Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::session::Protected;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("exports.create", create)
        .query("exports.get", get)
        .query("exports.list", list)
}

/// A pending export younger than this is answered instead of starting another.
const PENDING_REUSE_SECONDS: i64 = 3600;
/// `exports.list` answers the most recent ones.
const LIST_LIMIT: i64 = 20;

/// An export as clients see it.
#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Export {
    pub export_id: Uuid,
    /// `pending`, `ready`, `expired` (ready, but the download link has expired) or `revoked`
    /// (the account was deleted: the archive is gone).
    pub status: String,
    /// Epoch milliseconds.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub requested_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub ready_at: Option<DateTime<Utc>>,
    pub size_bytes: Option<i64>,
    /// The presigned download link, while it is valid.
    pub download_url: Option<String>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub expires_at: Option<DateTime<Utc>>,
}

const EXPORT_COLUMNS: &str = "export_id, \
     CASE WHEN revoked_at IS NOT NULL THEN 'revoked' \
          WHEN status = 'ready' AND download_expires_at <= now() THEN 'expired' ELSE status END \
       AS status, \
     requested_at, ready_at, size_bytes, \
     CASE WHEN download_expires_at > now() AND revoked_at IS NULL THEN download_url END \
       AS download_url, \
     download_expires_at AS expires_at";

/// `exports.create` → the export (pending).
pub async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(_): RpcInput<NoInput>,
) -> Result<Rpc<Export>, ApiError> {
    let mut tx = state.db.begin().await?;
    // One request at a time per user: concurrent calls queue here.
    sqlx::query("SELECT 1 FROM users WHERE user_id = $1 FOR UPDATE")
        .bind(session.user_id)
        .execute(&mut *tx)
        .await?;
    let pending: Option<Export> = sqlx::query_as(&format!(
        "SELECT {EXPORT_COLUMNS} FROM exports
          WHERE user_id = $1 AND status = 'pending'
            AND requested_at > now() - make_interval(secs => $2)
          ORDER BY requested_at DESC LIMIT 1"
    ))
    .bind(session.user_id)
    .bind(PENDING_REUSE_SECONDS as f64)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(pending) = pending {
        return Ok(Rpc(pending));
    }
    let export: Export = sqlx::query_as(&format!(
        "INSERT INTO exports (user_id) VALUES ($1) RETURNING {EXPORT_COLUMNS}"
    ))
    .bind(session.user_id)
    .fetch_one(&mut *tx)
    .await?;
    let task = ExportUserData {
        export_id: export.export_id.to_string(),
        user_id: session.user_id.to_string(),
        requested_at_ms: export.requested_at.timestamp_millis(),
    };
    bus::outbox::emit(&mut tx, &task).await?;
    tx.commit().await?;
    Ok(Rpc(export))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct GetInput {
    pub export_id: Uuid,
}

impl Input for GetInput {}

/// `exports.get {exportId}` → the caller's export (`NOT_FOUND` for anyone else's).
pub async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<GetInput>,
) -> Result<Rpc<Export>, ApiError> {
    let export: Option<Export> = sqlx::query_as(&format!(
        "SELECT {EXPORT_COLUMNS} FROM exports WHERE export_id = $1 AND user_id = $2"
    ))
    .bind(input.export_id)
    .bind(session.user_id)
    .fetch_optional(&state.db)
    .await?;
    export.map(Rpc).ok_or_else(|| ApiError::not_found("Export"))
}

/// `exports.list` → the caller's 20 most recent exports, newest first.
pub async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(_): RpcQuery<NoInput>,
) -> Result<Rpc<Vec<Export>>, ApiError> {
    let exports: Vec<Export> = sqlx::query_as(&format!(
        "SELECT {EXPORT_COLUMNS} FROM exports WHERE user_id = $1
          ORDER BY requested_at DESC, export_id DESC LIMIT $2"
    ))
    .bind(session.user_id)
    .bind(LIST_LIMIT)
    .fetch_all(&state.db)
    .await?;
    Ok(Rpc(exports))
}

/// `export.ready` → the export is ready. Applying it twice writes the same values.
pub async fn on_export_ready(
    BusState(state): BusState<AppState>,
    Msg(ready): Msg<ExportReady>,
) -> Result<(), HandlerError> {
    let export_id = Uuid::parse_str(&ready.export_id).map_err(|_| {
        HandlerError::permanent(format!("export_id `{}` is not a uuid", ready.export_id))
    })?;
    let user_id = Uuid::parse_str(&ready.user_id).map_err(|_| {
        HandlerError::permanent(format!("user_id `{}` is not a uuid", ready.user_id))
    })?;
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

/// Revoke every export link of `user_id` at once (in the caller's transaction, which deletes
/// the account): the rows are marked revoked, and their archives are deleted from object
/// storage before the transaction commits. A presigned URL cannot be revoked, but once its
/// object is gone it answers 404. If storage fails, the caller's transaction fails with it
/// (`503 STORAGE_UNAVAILABLE`) and the account is not deleted: no link outlives a deletion.
/// Returns how many exports were revoked.
pub async fn revoke_for_user(
    conn: &mut sqlx::PgConnection,
    storage: &platform::s3::ObjectStore,
    user_id: Uuid,
) -> Result<u64, ApiError> {
    let revoked: Vec<Uuid> = sqlx::query_scalar(
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
    user_id: Uuid,
    export_ids: &[Uuid],
) -> Result<(), ApiError> {
    for export_id in export_ids {
        storage
            .delete(&messages::export_archive_key(user_id, export_id))
            .await
            .map_err(crate::attachments::storage_unavailable)?;
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// answering the worker

/// Rows per page (fewer when their text would make the reply too large).
const PAGE_ROWS: i64 = 200;
/// Text per page: well under NATS's default 1 MB message limit, even with protobuf overhead.
/// A page always holds at least one row (an entry is at most 100,000 characters, < 400 KB).
const PAGE_TEXT_BYTES: usize = 512 * 1024;

/// Answer one `ExportDataRequest` from the api's own schema.
pub async fn answer_export_data(db: PgPool, request: ExportDataRequest) -> ExportDataReply {
    match export_page(&db, &request).await {
        Ok(reply) => reply,
        Err(PageError::Client { code, message }) => ExportDataReply {
            error_code: code.to_owned(),
            error_message: message,
            ..Default::default()
        },
        Err(PageError::Database(error)) => {
            tracing::error!(%error, "answering an export data request");
            ExportDataReply {
                error_code: "INTERNAL".to_owned(),
                error_message: "the api could not read the data; try again".to_owned(),
                ..Default::default()
            }
        }
    }
}

#[derive(Debug, thiserror::Error)]
enum PageError {
    #[error("{code}: {message}")]
    Client { code: &'static str, message: String },
    #[error(transparent)]
    Database(#[from] sqlx::Error),
}

fn bad_request(message: impl Into<String>) -> PageError {
    PageError::Client {
        code: "BAD_REQUEST",
        message: message.into(),
    }
}

async fn export_page(
    db: &PgPool,
    request: &ExportDataRequest,
) -> Result<ExportDataReply, PageError> {
    let user_id = Uuid::parse_str(&request.user_id)
        .map_err(|_| bad_request(format!("user_id `{}` is not a uuid", request.user_id)))?;
    let after = match request.cursor.as_str() {
        "" => None,
        cursor => Some(
            KeysetCursor::decode(cursor)
                .ok_or_else(|| bad_request("cursor is not one we issued"))?,
        ),
    };
    let section = ExportSection::try_from(request.section)
        .map_err(|_| bad_request(format!("unknown section {}", request.section)))?;
    match section {
        ExportSection::Unspecified => Err(bad_request("section is required")),
        ExportSection::Profile => profile(db, user_id).await,
        ExportSection::Teams => teams(db, user_id, after).await,
        ExportSection::Prompts => prompts(db, user_id, after).await,
        ExportSection::JournalEntries => journal_entries(db, user_id, after).await,
    }
}

fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

#[derive(sqlx::FromRow)]
struct ProfileRow {
    user_id: Uuid,
    email: String,
    name: String,
    avatar_url: Option<String>,
    timezone: String,
    email_verified: bool,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
}

async fn profile(db: &PgPool, user_id: Uuid) -> Result<ExportDataReply, PageError> {
    let row: Option<ProfileRow> = sqlx::query_as(
        "SELECT user_id, email, name, avatar_url, timezone, email_verified, created_at, updated_at
           FROM users WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_optional(db)
    .await?;
    let row = row.ok_or(PageError::Client {
        code: "USER_NOT_FOUND",
        message: format!("user {user_id} does not exist or was deleted"),
    })?;
    Ok(ExportDataReply {
        profile: Some(ExportedProfile {
            user_id: row.user_id.to_string(),
            email: row.email,
            name: row.name,
            avatar_url: row.avatar_url,
            timezone: row.timezone,
            email_verified: row.email_verified,
            created_at_ms: millis(row.created_at),
            updated_at_ms: millis(row.updated_at),
        }),
        ..Default::default()
    })
}

/// Keyset condition "after the cursor" in ascending `(created_at, id)` order; `$2`/`$3` are
/// the cursor's parts (NULL on the first page).
fn after_cursor(created_at: &str, id: &str) -> String {
    format!("($2::timestamptz IS NULL OR ({created_at}, {id}) > ($2, $3))")
}

/// Keep rows while their text fits the page budget (at least one), and say where the next
/// page starts when rows were fetched beyond it.
fn cut_page<T>(
    rows: &mut Vec<T>,
    text_bytes: impl Fn(&T) -> usize,
    key: impl Fn(&T) -> KeysetCursor,
) -> String {
    let fetched = rows.len();
    let mut budget = 0usize;
    let mut keep = 0usize;
    for row in rows.iter() {
        budget = budget.saturating_add(text_bytes(row));
        if keep > 0 && budget > PAGE_TEXT_BYTES {
            break;
        }
        keep += 1;
    }
    let limit = usize::try_from(PAGE_ROWS).unwrap_or(usize::MAX);
    rows.truncate(keep.min(limit));
    if fetched > rows.len() {
        rows.last()
            .map(|last| key(last).encode())
            .unwrap_or_default()
    } else {
        String::new()
    }
}

#[derive(sqlx::FromRow)]
struct TeamRow {
    team_id: Uuid,
    team_name: String,
    role: String,
    created_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    team_deleted_at: Option<DateTime<Utc>>,
}

async fn teams(
    db: &PgPool,
    user_id: Uuid,
    after: Option<KeysetCursor>,
) -> Result<ExportDataReply, PageError> {
    let mut rows: Vec<TeamRow> = sqlx::query_as(&format!(
        "SELECT m.team_id, t.name AS team_name, m.role, m.created_at, m.deleted_at,
                t.deleted_at AS team_deleted_at
           FROM team_members m JOIN teams t ON t.team_id = m.team_id
          WHERE m.user_id = $1 AND {}
          ORDER BY m.created_at, m.team_id LIMIT $4",
        after_cursor("m.created_at", "m.team_id")
    ))
    .bind(user_id)
    .bind(after.map(|cursor| cursor.created_at))
    .bind(after.map(|cursor| cursor.id))
    .bind(PAGE_ROWS + 1)
    .fetch_all(db)
    .await?;
    let next_cursor = cut_page(
        &mut rows,
        |row| row.team_name.len(),
        |row| KeysetCursor {
            created_at: row.created_at,
            id: row.team_id,
        },
    );
    Ok(ExportDataReply {
        teams: rows
            .into_iter()
            .map(|row| ExportedTeamMembership {
                team_id: row.team_id.to_string(),
                team_name: row.team_name,
                role: row.role,
                joined_at_ms: millis(row.created_at),
                left_at_ms: row.deleted_at.map(millis),
                team_deleted_at_ms: row.team_deleted_at.map(millis),
            })
            .collect(),
        next_cursor,
        ..Default::default()
    })
}

#[derive(sqlx::FromRow)]
struct PromptRow {
    prompt_id: Uuid,
    team_id: Option<Uuid>,
    text: String,
    schedule_time: Option<NaiveTime>,
    schedule_timezone: Option<String>,
    schedule_weekdays: Option<Vec<i16>>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
}

async fn prompts(
    db: &PgPool,
    user_id: Uuid,
    after: Option<KeysetCursor>,
) -> Result<ExportDataReply, PageError> {
    let mut rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "SELECT prompt_id, team_id, text, schedule_time, schedule_timezone, schedule_weekdays,
                created_at, updated_at, deleted_at
           FROM prompts
          WHERE (owner_user_id = $1 OR author_user_id = $1) AND {}
          ORDER BY created_at, prompt_id LIMIT $4",
        after_cursor("created_at", "prompt_id")
    ))
    .bind(user_id)
    .bind(after.map(|cursor| cursor.created_at))
    .bind(after.map(|cursor| cursor.id))
    .bind(PAGE_ROWS + 1)
    .fetch_all(db)
    .await?;
    let next_cursor = cut_page(
        &mut rows,
        |row| row.text.len(),
        |row| KeysetCursor {
            created_at: row.created_at,
            id: row.prompt_id,
        },
    );
    Ok(ExportDataReply {
        prompts: rows
            .into_iter()
            .map(|row| ExportedPrompt {
                prompt_id: row.prompt_id.to_string(),
                team_id: row.team_id.map(|id| id.to_string()),
                text: row.text,
                schedule_time: row
                    .schedule_time
                    .map(|time| time.format("%H:%M").to_string()),
                schedule_timezone: row.schedule_timezone,
                schedule_weekdays: row
                    .schedule_weekdays
                    .unwrap_or_default()
                    .into_iter()
                    .map(i32::from)
                    .collect(),
                created_at_ms: millis(row.created_at),
                updated_at_ms: millis(row.updated_at),
                deleted_at_ms: row.deleted_at.map(millis),
            })
            .collect(),
        next_cursor,
        ..Default::default()
    })
}

#[derive(sqlx::FromRow)]
struct EntryRow {
    journal_entry_id: Uuid,
    team_id: Option<Uuid>,
    prompt_id: Option<Uuid>,
    title: String,
    content: String,
    mood: Option<i16>,
    tags: Vec<String>,
    entry_date: Option<NaiveDate>,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    deleted_at: Option<DateTime<Utc>>,
    version: i64,
}

async fn journal_entries(
    db: &PgPool,
    user_id: Uuid,
    after: Option<KeysetCursor>,
) -> Result<ExportDataReply, PageError> {
    let mut rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT journal_entry_id, team_id, prompt_id, title, content, mood, tags, entry_date,
                created_at, updated_at, deleted_at, version
           FROM journal_entries
          WHERE author_user_id = $1 AND {}
          ORDER BY created_at, journal_entry_id LIMIT $4",
        after_cursor("created_at", "journal_entry_id")
    ))
    .bind(user_id)
    .bind(after.map(|cursor| cursor.created_at))
    .bind(after.map(|cursor| cursor.id))
    .bind(PAGE_ROWS + 1)
    .fetch_all(db)
    .await?;
    let next_cursor = cut_page(
        &mut rows,
        |row| row.title.len() + row.content.len() + row.tags.iter().map(String::len).sum::<usize>(),
        |row| KeysetCursor {
            created_at: row.created_at,
            id: row.journal_entry_id,
        },
    );
    Ok(ExportDataReply {
        journal_entries: rows
            .into_iter()
            .map(|row| ExportedJournalEntry {
                journal_entry_id: row.journal_entry_id.to_string(),
                team_id: row.team_id.map(|id| id.to_string()),
                prompt_id: row.prompt_id.map(|id| id.to_string()),
                title: row.title,
                content: row.content,
                mood: row.mood.map(i32::from),
                tags: row.tags,
                entry_date: row
                    .entry_date
                    .map(|date| date.format("%Y-%m-%d").to_string()),
                created_at_ms: millis(row.created_at),
                updated_at_ms: millis(row.updated_at),
                deleted_at_ms: row.deleted_at.map(millis),
                version: row.version,
            })
            .collect(),
        next_cursor,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pages_keep_at_least_one_row_and_stop_at_the_text_budget() {
        let at = DateTime::from_timestamp_micros(1_700_000_000_000_000).unwrap_or_default();
        let key = |size: &(usize, Uuid)| KeysetCursor {
            created_at: at,
            id: size.1,
        };
        // One huge row alone still makes a page.
        let mut rows = vec![(PAGE_TEXT_BYTES * 2, Uuid::nil()), (10, Uuid::max())];
        let next = cut_page(&mut rows, |row| row.0, key);
        assert_eq!(rows.len(), 1);
        assert_eq!(next, key(&(0, Uuid::nil())).encode());
        // Small rows all fit: no next page when nothing was left over.
        let mut rows: Vec<(usize, Uuid)> = (0..5).map(|_| (100, Uuid::new_v4())).collect();
        assert_eq!(cut_page(&mut rows, |row| row.0, key), "");
        assert_eq!(rows.len(), 5);
        // Rows over the budget go to the next page.
        let mut rows: Vec<(usize, Uuid)> = (0..4)
            .map(|_| (PAGE_TEXT_BYTES / 3, Uuid::new_v4()))
            .collect();
        let last_kept = rows[2].1;
        let next = cut_page(&mut rows, |row| row.0, key);
        assert_eq!(rows.len(), 3);
        assert_eq!(next, key(&(0, last_kept)).encode());
    }
}
