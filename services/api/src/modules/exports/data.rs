//! The answer to the worker's `ExportDataRequest`: a user's data, read from this schema in
//! pages (200 rows or ~512 KB of text per reply).

use chrono::{DateTime, NaiveDate, NaiveTime, Utc};
use domain::ids::{JournalEntryId, PromptId, TeamId, UserId};
use messages::journal::v1::{
    ExportDataReply, ExportDataRequest, ExportSection, ExportedJournalEntry, ExportedProfile,
    ExportedPrompt, ExportedTeamMembership,
};
use sqlx::PgPool;

use crate::http::pagination::KeysetCursor;

/// Rows per page (fewer when their text would make the reply too large).
const PAGE_ROWS: i64 = 200;
/// Text per page: well under NATS's default 1 MB message limit, even with protobuf overhead.
/// A page always holds at least one row (an entry is at most 100,000 characters, < 400 KB).
pub(crate) const PAGE_TEXT_BYTES: usize = 512 * 1024;

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
pub(crate) enum PageError {
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
    let user_id = request
        .parse_user_id()
        .map_err(|error| bad_request(error.to_string()))?;
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

pub(crate) fn millis(at: DateTime<Utc>) -> i64 {
    at.timestamp_millis()
}

#[derive(sqlx::FromRow)]
pub(crate) struct ProfileRow {
    pub(crate) user_id: UserId,
    pub(crate) email: String,
    pub(crate) name: String,
    pub(crate) avatar_url: Option<String>,
    pub(crate) timezone: String,
    pub(crate) email_verified: bool,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
}

pub(crate) async fn profile(db: &PgPool, user_id: UserId) -> Result<ExportDataReply, PageError> {
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
pub(crate) fn cut_page<T>(
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
pub(crate) struct TeamRow {
    pub(crate) team_id: TeamId,
    pub(crate) team_name: String,
    pub(crate) role: String,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
    pub(crate) team_deleted_at: Option<DateTime<Utc>>,
}

pub(crate) async fn teams(
    db: &PgPool,
    user_id: UserId,
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
            id: row.team_id.uuid(),
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
pub(crate) struct PromptRow {
    pub(crate) prompt_id: PromptId,
    pub(crate) team_id: Option<TeamId>,
    pub(crate) text: String,
    pub(crate) schedule_time: Option<NaiveTime>,
    pub(crate) schedule_timezone: Option<String>,
    pub(crate) schedule_weekdays: Option<Vec<i16>>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
}

pub(crate) async fn prompts(
    db: &PgPool,
    user_id: UserId,
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
            id: row.prompt_id.uuid(),
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
pub(crate) struct EntryRow {
    pub(crate) journal_entry_id: JournalEntryId,
    pub(crate) team_id: Option<TeamId>,
    pub(crate) prompt_id: Option<PromptId>,
    pub(crate) title: String,
    pub(crate) content: String,
    pub(crate) mood: Option<i16>,
    pub(crate) tags: Vec<String>,
    pub(crate) entry_date: Option<NaiveDate>,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) updated_at: DateTime<Utc>,
    pub(crate) deleted_at: Option<DateTime<Utc>>,
    pub(crate) version: i64,
}

pub(crate) async fn journal_entries(
    db: &PgPool,
    user_id: UserId,
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
            id: row.journal_entry_id.uuid(),
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
