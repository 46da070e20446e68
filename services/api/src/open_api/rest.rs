//! The open API's REST endpoints, in the API team's team scope: journal entries are team
//! entries of the API team's app team, authored by the key's creator; prompts are the
//! team's prompts. They reuse the RPC procedures' functions (same rows, changesets and
//! outbox events), only the edge differs: plain JSON bodies, path ids, query parameters.
//!
//! Inputs are the RPC inputs, typed and checked the same way (`400 BAD_REQUEST` with
//! `issues[].path`); the team is never taken from the client (`teamId` in a body is an
//! unknown field), and a path id overrides nothing (an id in the body is an unknown field).

use axum::body::Bytes;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::{Extension, Json, Router};
use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::{Map, Value};
use uuid::Uuid;

use super::{Caller, MAX_BODY_BYTES, RestError};
use crate::AppState;
use crate::error::ApiError;
use crate::journal_entries::{self, JournalEntry};
use crate::prompts::{self, Prompt};
use crate::rpc::{Envelope, Input, decode};
use crate::subscriptions::{self, SubscriptionStatus, UsageHistory};
use crate::validation::{EpochMillis, Issue, Issues, PathSegment};

pub fn routes() -> Router<AppState> {
    Router::new()
        .route(
            "/api/v1/journal-entries",
            get(list_entries).post(create_entry),
        )
        .route(
            "/api/v1/journal-entries/{journal_entry_id}",
            get(get_entry).patch(update_entry).delete(delete_entry),
        )
        .route("/api/v1/prompts", get(list_prompts).post(create_prompt))
        .route("/api/v1/usage", get(usage))
        .route("/api/v1/usage/history", get(usage_history))
        .route("/api/v1/subscription", get(subscription))
}

/// A JSON object body: at most [`MAX_BODY_BYTES`] (else 413), valid JSON (else 400
/// `BAD_REQUEST`), an object (else 400 with the root path).
pub struct JsonObject(pub Map<String, Value>);

impl<S: Send + Sync> FromRequest<S> for JsonObject {
    type Rejection = RestError;

    async fn from_request(request: Request, state: &S) -> Result<Self, RestError> {
        let body =
            Bytes::from_request(request, state)
                .await
                .map_err(|rejection| match rejection.status() {
                    StatusCode::PAYLOAD_TOO_LARGE => ApiError::PayloadTooLarge,
                    _ => ApiError::Malformed,
                })?;
        if body.len() > MAX_BODY_BYTES {
            return Err(RestError(ApiError::PayloadTooLarge));
        }
        match serde_json::from_slice(&body) {
            Ok(Value::Object(object)) => Ok(Self(object)),
            Ok(_) => Err(RestError(ApiError::Validation(vec![Issue::new(
                "invalid_type",
                Vec::<PathSegment>::new(),
                "Expected a JSON object",
            )]))),
            Err(_) => Err(RestError(ApiError::Malformed)),
        }
    }
}

impl JsonObject {
    /// Set a field the server decides (the team, a path id); the client may not send it.
    fn fix(&mut self, field: &str, value: Uuid) -> Result<(), ApiError> {
        if self.0.contains_key(field) {
            let mut issue = Issue::new(
                "unrecognized_keys",
                Vec::<PathSegment>::new(),
                format!("Unrecognized key: \"{field}\""),
            );
            issue.keys = Some(vec![field.to_owned()]);
            return Err(ApiError::Validation(vec![issue]));
        }
        self.0
            .insert(field.to_owned(), Value::String(value.to_string()));
        Ok(())
    }

    /// Type and check as the RPC input `T`.
    fn decode<T: Input>(self) -> Result<T, ApiError> {
        decode(Envelope::of(Value::Object(self.0)))
    }
}

/// The `{journalEntryId}` of a path: a malformed one is a 404, like an id that does not
/// exist (also one that does not even percent-decode to UTF-8, which axum's `Path` would
/// answer with a plain-text 400 outside the error shape).
pub struct EntryId(Uuid);

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
        Uuid::parse_str(&text).map(Self).map_err(|_| not_found())
    }
}

/// The answers every API-key endpoint can give before its handler runs (the key, the caller's
/// IP and the team's access, its rate and quota), documented once for all of them.
#[derive(utoipa::IntoResponses)]
#[allow(dead_code)] // only documents responses: the handlers answer with `ApiError`
enum KeyRefusals {
    #[response(
        status = 401,
        description = "Missing or invalid API key (`INVALID_API_KEY`)"
    )]
    InvalidKey(crate::open_api::docs::ErrorBody),
    #[response(
        status = 403,
        description = "Caller IP not allowed (`IP_NOT_ALLOWED`), API access disabled (`API_ACCESS_DISABLED`) or no subscription (`FORBIDDEN`)"
    )]
    Forbidden(crate::open_api::docs::ErrorBody),
    #[response(
        status = 429,
        description = "Over the key's rate (`RATE_LIMITED`) or the monthly quota (`USAGE_EXCEEDED`), with `Retry-After`"
    )]
    Limited(crate::open_api::docs::ErrorBody),
}

// ---------------------------------------------------------------------------------------------
// journal entries

#[utoipa::path(
    post,
    path = "/api/v1/journal-entries",
    tag = "journal entries",
    request_body = journal_entries::CreateInput,
    responses(
        (status = 201, description = "The new team entry", body = JournalEntry),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::open_api::docs::ErrorBody),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::open_api::docs::ErrorBody),
        (status = 413, description = "Body over 1 MiB (`PAYLOAD_TOO_LARGE`)", body = crate::open_api::docs::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Create a team entry
///
/// `POST /api/v1/journal-entries` → 201 the entry (a team entry, authored by the key's
/// creator).
pub(super) async fn create_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut body: JsonObject,
) -> Result<(StatusCode, Json<JournalEntry>), RestError> {
    body.fix("teamId", caller.key.team_id)?;
    let input: journal_entries::CreateInput = body.decode()?;
    let created = journal_entries::create_entry(&state.db, caller.user_id, input).await?;
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
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::open_api::docs::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Get an entry
///
/// `GET /api/v1/journal-entries/{journalEntryId}` → a live entry of the team (else 404).
pub(super) async fn get_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    EntryId(journal_entry_id): EntryId,
) -> Result<Json<JournalEntry>, RestError> {
    let mut conn = state.db.acquire().await?;
    let entry =
        journal_entries::load_in_team(&mut conn, journal_entry_id, caller.key.team_id, false)
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
        (status = 200, description = "A page of the team's live entries, newest first", body = journal_entries::Page),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::open_api::docs::ErrorBody),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// List the team's entries
///
/// `GET /api/v1/journal-entries?limit=&cursor=` → `{items, nextCursor}`: the team's live
/// entries, newest first, keyset pages.
pub(super) async fn list_entries(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<journal_entries::Page>, RestError> {
    let mut input = journal_entries::ListInput {
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
    let page = journal_entries::list_page(&mut conn, caller.user_id, &input).await?;
    Ok(Json(page))
}

#[utoipa::path(
    patch,
    path = "/api/v1/journal-entries/{journalEntryId}",
    tag = "journal entries",
    params(("journalEntryId" = Uuid, Path, description = "The entry's id")),
    request_body = journal_entries::UpdateInput,
    responses(
        (status = 200, description = "The updated entry", body = JournalEntry),
        (status = 409, description = "`expectedVersion` is stale (`EDIT_CONFLICT`)", body = crate::open_api::docs::ErrorBody),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::open_api::docs::ErrorBody),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::open_api::docs::ErrorBody),
        (status = 413, description = "Body over 1 MiB (`PAYLOAD_TOO_LARGE`)", body = crate::open_api::docs::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Update an entry
///
/// `PATCH /api/v1/journal-entries/{journalEntryId}` → the entry: a partial update
/// (`expectedVersion` optional, `mood`/`entryDate` null clear them).
pub(super) async fn update_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    EntryId(journal_entry_id): EntryId,
    mut body: JsonObject,
) -> Result<Json<JournalEntry>, RestError> {
    body.fix("journalEntryId", journal_entry_id)?;
    let input: journal_entries::UpdateInput = body.decode()?;
    let mut tx = state.db.begin().await?;
    let current =
        journal_entries::load_in_team(&mut tx, journal_entry_id, caller.key.team_id, true).await?;
    let updated = journal_entries::update_loaded(&mut tx, current, input, caller.user_id).await?;
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
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::open_api::docs::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Delete an entry
///
/// `DELETE /api/v1/journal-entries/{journalEntryId}` → 204: a soft delete (the sync clients
/// get the tombstone); afterwards the entry answers 404 here.
pub(super) async fn delete_entry(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    EntryId(journal_entry_id): EntryId,
) -> Result<StatusCode, RestError> {
    let mut tx = state.db.begin().await?;
    let current =
        journal_entries::load_in_team(&mut tx, journal_entry_id, caller.key.team_id, true).await?;
    journal_entries::delete_loaded(&mut tx, current, caller.user_id).await?;
    tx.commit().await?;
    Ok(StatusCode::NO_CONTENT)
}

// ---------------------------------------------------------------------------------------------
// prompts

#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct PromptList {
    pub items: Vec<Prompt>,
}

#[utoipa::path(
    get,
    path = "/api/v1/prompts",
    tag = "prompts",
    responses(
        (status = 200, description = "The team's live prompts, newest first", body = PromptList),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// List the team's prompts
///
/// `GET /api/v1/prompts` → `{items}`: the team's live prompts, newest first.
pub(super) async fn list_prompts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<PromptList>, RestError> {
    let mut conn = state.db.acquire().await?;
    let items =
        prompts::list_prompts(&mut conn, caller.user_id, Some(caller.key.team_id), false).await?;
    Ok(Json(PromptList { items }))
}

#[utoipa::path(
    post,
    path = "/api/v1/prompts",
    tag = "prompts",
    request_body = prompts::CreateInput,
    responses(
        (status = 201, description = "The team's new prompt", body = Prompt),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::open_api::docs::ErrorBody),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::open_api::docs::ErrorBody),
        (status = 413, description = "Body over 1 MiB (`PAYLOAD_TOO_LARGE`)", body = crate::open_api::docs::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Create a team prompt
///
/// `POST /api/v1/prompts {text, schedule?}` → 201 the team's new prompt (the key's creator
/// must still be a team admin, as in the app).
pub(super) async fn create_prompt(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    mut body: JsonObject,
) -> Result<(StatusCode, Json<Prompt>), RestError> {
    body.fix("teamId", caller.key.team_id)?;
    let input: prompts::CreateInput = body.decode()?;
    let created = prompts::create_prompt(&state.db, caller.user_id, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

// ---------------------------------------------------------------------------------------------
// usage

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub plan_id: String,
    pub plan_name: String,
    pub limit: i64,
    /// This request included.
    pub used: i64,
    pub remaining: i64,
    /// Epoch milliseconds.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schema(value_type = i64)]
    pub period_start: DateTime<Utc>,
    /// Epoch milliseconds: when the count starts again.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schema(value_type = i64)]
    pub period_end: DateTime<Utc>,
}

#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    responses(
        (status = 200, description = "The plan and the current period's count (this request included)", body = UsageReport),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// Current usage
///
/// `GET /api/v1/usage` → the API team's plan and its current period's count.
pub(super) async fn usage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<UsageReport>, RestError> {
    let report: Option<UsageReport> = sqlx::query_as(
        "SELECT p.plan_id, p.name AS plan_name, p.monthly_request_quota AS limit,
                s.usage_count AS used,
                greatest(p.monthly_request_quota - s.usage_count, 0) AS remaining,
                s.period_start, s.period_end
           FROM subscriptions s JOIN plans p ON p.plan_id = s.plan_id
          WHERE s.api_team_id = $1",
    )
    .bind(caller.key.api_team_id)
    .fetch_optional(&state.db)
    .await?;
    report
        .map(Json)
        .ok_or_else(|| RestError(ApiError::forbidden("This team has no API subscription")))
}

#[utoipa::path(
    get,
    path = "/api/v1/subscription",
    tag = "usage",
    responses(
        (status = 200, description = "The plan with its limits, the current period and its count (this request included)", body = SubscriptionStatus),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// The subscription
///
/// `GET /api/v1/subscription` → the API team's subscription: plan and limits (quota and
/// per-key rate), the current period, its count and what is left.
pub(super) async fn subscription(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SubscriptionStatus>, RestError> {
    let mut conn = state.db.acquire().await?;
    subscriptions::load_status(&mut conn, caller.key.api_team_id)
        .await?
        .map(Json)
        .ok_or_else(|| RestError(ApiError::forbidden("This team has no API subscription")))
}

#[utoipa::path(
    get,
    path = "/api/v1/usage/history",
    tag = "usage",
    params(
        ("limit" = Option<i64>, Query, description = "Periods per page, 1–100 (default 12)", minimum = 1, maximum = 100),
        ("before" = Option<i64>, Query, description = "Epoch milliseconds: only periods that started before (the previous page's `nextBefore`)", minimum = 0, maximum = 253402300799999.0),
    ),
    responses(
        (status = 200, description = "Closed metering periods with their counts, newest first", body = UsageHistory),
        (status = 400, description = "Invalid query parameter (`BAD_REQUEST`, with `issues[].path`)", body = crate::open_api::docs::ErrorBody),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// Usage history
///
/// `GET /api/v1/usage/history?limit=&before=` → `{items, nextBefore}`: the API team's closed
/// metering periods (plan, quota, count), newest first. The current period is
/// `GET /api/v1/subscription`.
pub(super) async fn usage_history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<UsageHistory>, RestError> {
    let mut limit = subscriptions::DEFAULT_HISTORY_LIMIT;
    let mut before = None;
    let mut issues = Issues::default();
    let query = request.uri().query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => match value.parse() {
                Ok(value) => {
                    limit = value;
                    issues.number_range("limit", value, 1, subscriptions::MAX_HISTORY_LIMIT);
                }
                Err(_) => issues.push(Issue::new("invalid_type", "limit", "Expected an integer")),
            },
            "before" => match value.parse().ok().and_then(EpochMillis::from_millis) {
                Some(at) => before = Some(at.at()),
                None => issues.push(Issue::new(
                    "invalid_type",
                    "before",
                    "Expected epoch milliseconds",
                )),
            },
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
    issues.into_result()?;
    let mut conn = state.db.acquire().await?;
    let history =
        subscriptions::load_history(&mut conn, caller.key.api_team_id, before, limit).await?;
    Ok(Json(history))
}
