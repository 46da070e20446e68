//! Journal entries. `create` writes the entry and its `journal_entry.created` event in one
//! transaction, so the event exists exactly when the entry does.

use axum::body::Bytes;
use axum::extract::State;
use axum::response::Response;
use chrono::{DateTime, NaiveDate, Utc};
use messages::journal::v1::JournalEntryCreated;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::AppState;
use crate::auth::AuthSession;
use crate::error::{ApiError, Issue};
use crate::rpc;

/// `journalEntries.create` input (ARCHITECTURE §9).
#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    pub title: String,
    pub content: String,
    pub mood: Option<i16>,
    pub tags: Option<Vec<String>>,
    pub entry_date: Option<String>,
    pub team_id: Option<Uuid>,
    pub prompt_id: Option<Uuid>,
}

/// Checked input: only valid values get past [`CreateInput::validate`].
struct NewEntry {
    title: String,
    content: String,
    mood: Option<i16>,
    tags: Vec<String>,
    entry_date: Option<NaiveDate>,
}

impl CreateInput {
    fn validate(self) -> Result<NewEntry, ApiError> {
        let mut issues = Vec::new();
        let mut issue = |path: &str, message: &str| {
            issues.push(Issue {
                path: vec![path.to_owned()],
                message: message.to_owned(),
            })
        };
        let title_len = self.title.chars().count();
        if title_len == 0 || title_len > 200 {
            issue("title", "must be 1 to 200 characters");
        }
        if self.content.chars().count() > 100_000 {
            issue("content", "must be at most 100000 characters");
        }
        if self.mood.is_some_and(|mood| !(1..=5).contains(&mood)) {
            issue("mood", "must be between 1 and 5");
        }
        let tags = self.tags.unwrap_or_default();
        if tags.len() > 50
            || tags
                .iter()
                .any(|tag| tag.is_empty() || tag.chars().count() > 50)
        {
            issue("tags", "at most 50 tags of 1 to 50 characters");
        }
        let entry_date = match self.entry_date.as_deref() {
            None => None,
            Some(text) => match NaiveDate::parse_from_str(text, "%Y-%m-%d") {
                Ok(date) => Some(date),
                Err(_) => {
                    issue("entryDate", "must be a date as YYYY-MM-DD");
                    None
                }
            },
        };
        // Teams and prompts arrive with the api issue; until then they cannot be referenced.
        if self.team_id.is_some() {
            issue("teamId", "teams are not available yet");
        }
        if self.prompt_id.is_some() {
            issue("promptId", "prompts are not available yet");
        }
        if !issues.is_empty() {
            return Err(ApiError::Validation(issues));
        }
        Ok(NewEntry {
            title: self.title,
            content: self.content,
            mood: self.mood,
            tags,
            entry_date,
        })
    }
}

#[derive(Debug, Serialize, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct JournalEntry {
    pub journal_entry_id: Uuid,
    pub author_user_id: Uuid,
    pub team_id: Option<Uuid>,
    pub title: String,
    pub content: String,
    pub mood: Option<i16>,
    pub tags: Vec<String>,
    pub entry_date: Option<NaiveDate>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

/// `POST /rpc/journalEntries/create`.
pub async fn create(
    State(state): State<AppState>,
    session: AuthSession,
    body: Bytes,
) -> Result<Response, ApiError> {
    let entry = rpc::parse_input::<CreateInput>(&body)?.validate()?;
    let mut tx = state.db.begin().await?;
    let created: JournalEntry = sqlx::query_as(
        "INSERT INTO journal_entries (author_user_id, title, content, mood, tags, entry_date)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING journal_entry_id, author_user_id, team_id, title, content, mood, tags, entry_date,
                   created_at, updated_at, deleted_at, version",
    )
    .bind(session.user_id)
    .bind(&entry.title)
    .bind(&entry.content)
    .bind(entry.mood)
    .bind(&entry.tags)
    .bind(entry.entry_date)
    .fetch_one(&mut *tx)
    .await?;
    let event = JournalEntryCreated {
        journal_entry_id: created.journal_entry_id.to_string(),
        author_user_id: created.author_user_id.to_string(),
        team_id: created.team_id.map(|id| id.to_string()).unwrap_or_default(),
        created_at_ms: created.created_at.timestamp_millis(),
    };
    bus::outbox::emit_ordered(&mut tx, &event, &created.journal_entry_id.to_string()).await?;
    tx.commit().await?;
    Ok(rpc::output(created))
}
