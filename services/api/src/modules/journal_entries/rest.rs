//! The open API's journal-entry endpoints (`/api/v1/journal-entries`): team entries of the
//! API team's app team, authored by the key's creator, through the same write path as the RPC
//! procedures (same rows, changesets and outbox events); only the edge differs.

use axum::extract::{Path, Request, State};
use axum::http::StatusCode;
use axum::{Extension, Json};
use domain::ids::JournalEntryId;

use crate::http::error::ApiError;
use crate::http::rest::{JsonObject, RestError};
use crate::http::validation::{Issue, Issues, PathSegment};
use crate::modules::journal_entries;
use crate::modules::journal_entries::types::{CreateEntryBody, JournalEntry, UpdateEntryBody};
use crate::procedures::api_key::{Caller, KeyRefusals};
use crate::state::AppState;
use sync_protocol::synced_tx::SyncedTx;

/// The `{journalEntryId}` of a path: a malformed one is a 404, like an id that does not
/// exist (also one that does not even percent-decode to UTF-8, which axum's `Path` would
/// answer with a plain-text 400 outside the error shape).
pub struct EntryId(JournalEntryId);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for EntryId {
    type Rejection = RestError;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        state: &S,
    ) -> Result<Self, RestError> {
        let not_found = || RestError(ApiError::not_found("Journal entry"));
        let Path(text) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| not_found())?;
        text.parse().map(Self).map_err(|_| not_found())
    }
}

#[utoipa::path(
    post,
    path = "/api/v1/journal-entries",
    tag = "journal entries",
    request_body = journal_entries::types::CreateEntryBody,
    responses(
        (status = 201, description = "The new team entry", body = JournalEntry),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::http::rest::ErrorBody),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::http::rest::ErrorBody),
        (status = 413, description = "Body over 1 MiB (`PAYLOAD_TOO_LARGE`)", body = crate::http::rest::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Create a team entry
///
/// `POST /api/v1/journal-entries` → 201 the entry (a team entry, authored by the key's
/// creator).
pub async fn create_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: JsonObject,
) -> Result<(StatusCode, Json<JournalEntry>), RestError> {
    let input = body.decode(|entry: CreateEntryBody| entry.into_input(caller.key.team_id))?;
    let created = journal_entries::create::create_entry(&state.db, caller.user_id, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

#[utoipa::path(
    get,
    path = "/api/v1/journal-entries/{journalEntryId}",
    tag = "journal entries",
    params(("journalEntryId" = Uuid, Path, description = "The entry's id")),
    responses(
        (status = 200, description = "The entry", body = JournalEntry),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::http::rest::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Get an entry
///
/// `GET /api/v1/journal-entries/{journalEntryId}` → a live entry of the team (else 404).
pub async fn get_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    EntryId(journal_entry_id): EntryId,
) -> Result<Json<JournalEntry>, RestError> {
    let mut conn = state.db.acquire().await?;
    let entry = journal_entries::store::load_in_team(
        &mut conn,
        journal_entry_id,
        caller.key.team_id,
        false,
    )
    .await?;
    Ok(Json(entry))
}

#[utoipa::path(
    get,
    path = "/api/v1/journal-entries",
    tag = "journal entries",
    params(
        ("limit" = Option<i64>, Query, minimum = 1, maximum = 100, description = "1–100, default 20"),
        ("cursor" = Option<String>, Query, description = "`nextCursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "A page of the team's live entries, newest first", body = journal_entries::types::Page),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::http::rest::ErrorBody),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// List the team's entries
///
/// `GET /api/v1/journal-entries?limit=&cursor=` → `{items, nextCursor}`: the team's live
/// entries, newest first, keyset pages.
pub async fn list_entries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<journal_entries::types::Page>, RestError> {
    let mut input = journal_entries::types::ListInput {
        team_id: Some(caller.key.team_id),
        ..Default::default()
    };
    let mut issues = Issues::default();
    let query = request.uri().query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => match value.parse() {
                Ok(limit) => input.limit = Some(limit),
                Err(_) => issues.push(Issue::new("invalid_type", "limit", "Expected an integer")),
            },
            "cursor" => input.cursor = Some(value.into_owned()),
            other => {
                let mut issue = Issue::new(
                    "unrecognized_keys",
                    Vec::<PathSegment>::new(),
                    format!("Unrecognized query parameter: \"{other}\""),
                );
                issue.keys = Some(vec![other.to_owned()]);
                issues.push(issue);
            }
        }
    }
    input.check_fields(&mut issues);
    issues.into_result()?;
    let mut conn = state.db.acquire().await?;
    let page = journal_entries::store::list_page(&mut conn, caller.user_id, &input).await?;
    Ok(Json(page))
}

#[utoipa::path(
    patch,
    path = "/api/v1/journal-entries/{journalEntryId}",
    tag = "journal entries",
    params(("journalEntryId" = Uuid, Path, description = "The entry's id")),
    request_body = journal_entries::types::UpdateEntryBody,
    responses(
        (status = 200, description = "The updated entry", body = JournalEntry),
        (status = 409, description = "`expectedVersion` is stale (`EDIT_CONFLICT`)", body = crate::http::rest::ErrorBody),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::http::rest::ErrorBody),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::http::rest::ErrorBody),
        (status = 413, description = "Body over 1 MiB (`PAYLOAD_TOO_LARGE`)", body = crate::http::rest::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Update an entry
///
/// `PATCH /api/v1/journal-entries/{journalEntryId}` → the entry: a partial update
/// (`expectedVersion` optional, `mood`/`entryDate` null clear them).
pub async fn update_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    EntryId(journal_entry_id): EntryId,
    body: JsonObject,
) -> Result<Json<JournalEntry>, RestError> {
    let input = body.decode(|update: UpdateEntryBody| update.into_input(journal_entry_id))?;
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current =
        journal_entries::store::load_in_team(&mut tx, journal_entry_id, caller.key.team_id, true)
            .await?;
    let updated =
        journal_entries::store::update_loaded(&mut tx, current, input, caller.user_id).await?;
    tx.commit().await?;
    Ok(Json(updated))
}

#[utoipa::path(
    delete,
    path = "/api/v1/journal-entries/{journalEntryId}",
    tag = "journal entries",
    params(("journalEntryId" = Uuid, Path, description = "The entry's id")),
    responses(
        (status = 204, description = "Deleted (soft)"),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::http::rest::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Delete an entry
///
/// `DELETE /api/v1/journal-entries/{journalEntryId}` → 204: a soft delete (the sync clients
/// get the tombstone); afterwards the entry answers 404 here.
pub async fn delete_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    EntryId(journal_entry_id): EntryId,
) -> Result<StatusCode, RestError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current =
        journal_entries::store::load_in_team(&mut tx, journal_entry_id, caller.key.team_id, true)
            .await?;
    journal_entries::store::delete_loaded(&mut tx, current, caller.user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// prompts
