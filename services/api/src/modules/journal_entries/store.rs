//! Journal entries' SQL: reads, pages, updates and soft deletes (row, changeset and outbox
//! event in one transaction), shared by the RPC procedures and the open API's REST handlers.

use chrono::Timelike;
use domain::ids::{JournalEntryId, TeamId, UserId};

use super::types::ListInput;
use super::types::Page;
use super::types::UpdateInput;
use crate::http::error::ApiError;
use crate::http::error::ErrorData;
use crate::http::pagination::KeysetCursor;
use crate::http::pagination::finish_page;
use crate::http::validation::EpochMillis;
use crate::modules::journal_entries::JournalEntry;
use crate::modules::journal_entries::types::ListScope;
use crate::modules::teams::store::member_role;
use crate::modules::teams::types::Role;
use axum::http::StatusCode;
use chrono::DateTime;
use chrono::Utc;
use chrono_tz::Tz;
use domain::time::DateInput;
use messages::journal::v1::JournalEntryDeleted;
use messages::journal::v1::JournalEntryFacts;
use messages::journal::v1::JournalEntryUpdated;
use sqlx::PgConnection;
use sqlx::Postgres;
use sqlx::QueryBuilder;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

pub(crate) const COLUMNS: &str = "journal_entry_id, author_user_id, team_id, prompt_id, title, content, \
                       mood, tags, entry_date, created_at, updated_at, deleted_at, version";

/// What a write returns: the entry and, for its event's facts, its author's timezone (read in
/// the same statement, so a write costs no extra round trip).
const WRITTEN_COLUMNS: &str = "journal_entry_id, author_user_id, team_id, prompt_id, title, \
     content, mood, tags, entry_date, created_at, updated_at, deleted_at, version, \
     (SELECT timezone FROM users WHERE users.user_id = journal_entries.author_user_id) \
     AS author_timezone";

/// An entry as a write left it.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct Written {
    #[sqlx(flatten)]
    pub(crate) entry: JournalEntry,
    pub(crate) author_timezone: Option<String>,
}

impl Written {
    /// What the worker's insights need to know (`journal_entry.*` events carry it).
    pub(crate) fn facts(&self) -> JournalEntryFacts {
        let entry = &self.entry;
        let zone: Tz = self
            .author_timezone
            .as_deref()
            .and_then(|zone| zone.parse().ok())
            .unwrap_or(Tz::UTC);
        let created_local = entry.created_at.at().with_timezone(&zone);
        JournalEntryFacts {
            word_count: i32::try_from(entry.content.split_whitespace().count()).unwrap_or(i32::MAX),
            entry_date: entry
                .entry_date
                .map(|date| date.format("%Y-%m-%d").to_string()),
            created_local_date: created_local.date_naive().format("%Y-%m-%d").to_string(),
            created_local_hour: created_local.hour() as i32,
            created_at_ms: entry.created_at.millis(),
        }
    }
}

/// An entry the caller can see, with their role in its team (for team entries). With
/// `for_update` the row is locked for the rest of the transaction.
pub(crate) async fn load_visible(
    conn: &mut PgConnection,
    journal_entry_id: JournalEntryId,
    user_id: UserId,
    for_update: bool,
) -> Result<(JournalEntry, Option<Role>), ApiError> {
    let entry: Option<JournalEntry> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM journal_entries WHERE journal_entry_id = $1{}",
        if for_update { " FOR UPDATE" } else { "" }
    ))
    .bind(journal_entry_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(entry) = entry else {
        return Err(ApiError::not_found("Journal entry"));
    };
    match entry.team_id {
        None if entry.author_user_id == user_id => Ok((entry, None)),
        None => Err(ApiError::not_found("Journal entry")),
        Some(team_id) => match member_role(conn, team_id, user_id).await? {
            Some(role) => Ok((entry, Some(role))),
            None => Err(ApiError::not_found("Journal entry")),
        },
    }
}

/// A live entry of `team_id` (the open API's scope: an API key acts for its whole team).
/// Anything else, a deleted entry included, answers `NOT_FOUND`.
pub async fn load_in_team(
    conn: &mut PgConnection,
    journal_entry_id: JournalEntryId,
    team_id: TeamId,
    for_update: bool,
) -> Result<JournalEntry, ApiError> {
    let entry: Option<JournalEntry> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM journal_entries
          WHERE journal_entry_id = $1 AND team_id = $2 AND deleted_at IS NULL{}",
        if for_update { " FOR UPDATE" } else { "" }
    ))
    .bind(journal_entry_id)
    .bind(team_id)
    .fetch_optional(conn)
    .await?;
    entry.ok_or_else(|| ApiError::not_found("Journal entry"))
}

/// A visible entry the caller may change (author, or admin/owner of its team), locked.
pub(crate) async fn load_changeable(
    conn: &mut PgConnection,
    journal_entry_id: JournalEntryId,
    user_id: UserId,
) -> Result<JournalEntry, ApiError> {
    let (entry, role) = load_visible(conn, journal_entry_id, user_id, true).await?;
    let may_change =
        entry.author_user_id == user_id || role.is_some_and(|role| role >= Role::Admin);
    if !may_change {
        return Err(ApiError::forbidden(
            "Only the author or a team admin can change this journal entry",
        ));
    }
    Ok(entry)
}

/// One page of the entries `user_id` sees, filtered by `input` (checked). With `teamId` the
/// team's entries, whose membership the caller has checked (or, in the open API, that the
/// key belongs to).
pub async fn list_page(
    conn: &mut PgConnection,
    user_id: UserId,
    input: &ListInput,
) -> Result<Page, ApiError> {
    let limit = input.limit.unwrap_or(20);
    let mut query =
        QueryBuilder::<Postgres>::new(format!("SELECT {COLUMNS} FROM journal_entries WHERE "));
    let personal = |query: &mut QueryBuilder<Postgres>| {
        query.push("(team_id IS NULL AND author_user_id = ");
        query.push_bind(user_id);
        query.push(")");
    };
    let my_teams = |query: &mut QueryBuilder<Postgres>| {
        query.push("team_id IN (SELECT m.team_id FROM team_members m JOIN teams t ON t.team_id = m.team_id WHERE m.user_id = ");
        query.push_bind(user_id);
        query.push(" AND m.deleted_at IS NULL AND t.deleted_at IS NULL)");
    };
    match (input.team_id, input.scope.unwrap_or_default()) {
        // Membership was checked above.
        (Some(team_id), _) => {
            query.push("team_id = ");
            query.push_bind(team_id);
        }
        (None, ListScope::Personal) => personal(&mut query),
        (None, ListScope::Team) => my_teams(&mut query),
        (None, ListScope::All) => {
            query.push("(");
            personal(&mut query);
            query.push(" OR ");
            my_teams(&mut query);
            query.push(")");
        }
    }
    query.push(if input.deleted.unwrap_or(false) {
        " AND deleted_at IS NOT NULL"
    } else {
        " AND deleted_at IS NULL"
    });
    if let Some(tag) = &input.tag {
        query.push(" AND tags @> ARRAY[");
        query.push_bind(tag.clone());
        query.push("]::text[]");
    }
    if let Some(from) = input.entry_date_from.as_ref().and_then(DateInput::date) {
        query.push(" AND entry_date >= ");
        query.push_bind(from);
    }
    if let Some(to) = input.entry_date_to.as_ref().and_then(DateInput::date) {
        query.push(" AND entry_date <= ");
        query.push_bind(to);
    }
    if let Some(after) = input.created_after.map(EpochMillis::at) {
        // Timestamps go out in milliseconds but are stored in microseconds: "after an
        // entry's createdAt" must not return that entry, so compare at millisecond precision
        // (as `>= after + 1 ms`, which keeps the index usable).
        query.push(" AND created_at >= ");
        query.push_bind(after + chrono::TimeDelta::milliseconds(1));
    }
    if let Some(before) = input.created_before.map(EpochMillis::at) {
        query.push(" AND created_at < ");
        query.push_bind(before);
    }
    if let Some(q) = &input.q {
        // The exact expression of journal_entries_search_idx, so the index is used.
        query.push(
            " AND to_tsvector('simple'::regconfig, title || ' ' || content) \
             @@ websearch_to_tsquery('simple', ",
        );
        query.push_bind(q.clone());
        query.push(")");
    }
    if let Some(cursor) = input.cursor.as_deref().and_then(KeysetCursor::decode) {
        query.push(" AND (created_at, journal_entry_id) < (");
        query.push_bind(cursor.created_at);
        query.push(", ");
        query.push_bind(cursor.id);
        query.push(")");
    }
    query.push(" ORDER BY created_at DESC, journal_entry_id DESC LIMIT ");
    query.push_bind(limit + 1);

    let mut items: Vec<JournalEntry> = query.build_query_as().fetch_all(&mut *conn).await?;
    let next_cursor = finish_page(&mut items, limit, |last| KeysetCursor {
        created_at: last.created_at.at(),
        id: last.journal_entry_id.uuid(),
    });
    Ok(Page { items, next_cursor })
}

// ---------------------------------------------------------------------------------------------
// update

/// `EDIT_CONFLICT` (409) with the row's current version, when it is not `expected`.
pub fn check_version(
    expected: Option<i64>,
    current_version: i64,
    current_updated_at: DateTime<Utc>,
    what: &str,
) -> Result<(), ApiError> {
    match expected {
        Some(expected) if expected != current_version => Err(ApiError::Defined {
            code: "EDIT_CONFLICT",
            status: StatusCode::CONFLICT,
            message: format!(
                "{what} was changed by someone else (version {current_version}, you edited version {expected})"
            ),
            data: Some(ErrorData::EditConflict {
                current_version,
                current_updated_at: current_updated_at.timestamp_millis(),
            }),
        }),
        _ => Ok(()),
    }
}

/// Apply a (checked) partial update to `current`, locked in `tx` and live, by `actor_user_id`:
/// the row, its changeset and its `journal_entry.updated` event. Not committed. Shared by the
/// RPC procedure and `PATCH /api/v1/journal-entries/{id}`.
pub async fn update_loaded(
    tx: &mut SyncedTx<'_>,
    current: JournalEntry,
    input: UpdateInput,
    actor_user_id: UserId,
) -> Result<JournalEntry, ApiError> {
    check_version(
        input.expected_version,
        current.version,
        current.updated_at.at(),
        "This journal entry",
    )?;
    if input.changes_nothing() {
        return Ok(current);
    }
    let written: Written = sqlx::query_as(&format!(
        "UPDATE journal_entries SET
            title = coalesce($2, title),
            content = coalesce($3, content),
            mood = CASE WHEN $4 THEN $5 ELSE mood END,
            tags = coalesce($6, tags),
            entry_date = CASE WHEN $7 THEN $8 ELSE entry_date END,
            updated_at = now(), version = version + 1
          WHERE journal_entry_id = $1
          RETURNING {WRITTEN_COLUMNS}"
    ))
    .bind(current.journal_entry_id)
    .bind(input.title.as_deref().map(str::trim))
    .bind(&input.content)
    .bind(input.mood.is_some())
    .bind(input.mood.flatten())
    .bind(&input.tags)
    .bind(input.entry_date.is_some())
    .bind(
        input
            .entry_date
            .flatten()
            .as_ref()
            .and_then(DateInput::date),
    )
    .fetch_one(&mut **tx)
    .await?;
    let facts = written.facts();
    let updated = written.entry;
    let event = JournalEntryUpdated {
        journal_entry_id: updated.journal_entry_id.to_string(),
        author_user_id: updated.author_user_id.to_string(),
        team_id: updated.team_id_text(),
        version: updated.version,
        updated_by_user_id: actor_user_id.to_string(),
        facts: Some(facts),
    };
    tx.emit_ordered(&event, &updated.journal_entry_id.to_string());
    tx.record(&[updated.scope()], Op::Update, &updated)?;
    Ok(updated)
}

// ---------------------------------------------------------------------------------------------
// delete, restore

/// Soft-delete the live entry `current`, locked in `tx`, by `actor_user_id`: the row, its
/// changeset and its `journal_entry.deleted` event. Not committed. Shared by the RPC
/// procedure and `DELETE /api/v1/journal-entries/{id}`.
pub async fn delete_loaded(
    tx: &mut SyncedTx<'_>,
    current: JournalEntry,
    actor_user_id: UserId,
) -> Result<JournalEntry, ApiError> {
    let written = set_deleted(tx, current.journal_entry_id, true).await?;
    let facts = written.facts();
    let deleted = written.entry;
    let event = JournalEntryDeleted {
        journal_entry_id: deleted.journal_entry_id.to_string(),
        author_user_id: deleted.author_user_id.to_string(),
        team_id: deleted.team_id_text(),
        version: deleted.version,
        deleted_by_user_id: actor_user_id.to_string(),
        facts: Some(facts),
    };
    tx.emit_ordered(&event, &deleted.journal_entry_id.to_string());
    tx.record(&[deleted.scope()], Op::Delete, &deleted)?;
    // Its attachments go with it (and come back with a restore).
    crate::modules::cdn::store::delete_for_entry(tx, deleted.journal_entry_id).await?;
    Ok(deleted)
}

/// Soft-delete (`deleted`) or restore an entry; either is a change, so the version moves.
pub(crate) async fn set_deleted(
    connection: &mut PgConnection,
    journal_entry_id: JournalEntryId,
    deleted: bool,
) -> Result<Written, ApiError> {
    let entry = sqlx::query_as(&format!(
        "UPDATE journal_entries
            SET deleted_at = CASE WHEN $2 THEN now() END, updated_at = now(),
                version = version + 1
          WHERE journal_entry_id = $1
          RETURNING {WRITTEN_COLUMNS}"
    ))
    .bind(journal_entry_id)
    .bind(deleted)
    .fetch_one(&mut *connection)
    .await?;
    Ok(entry)
}
