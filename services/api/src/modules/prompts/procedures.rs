//! The `prompts.*` procedures.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use chrono_tz::Tz;

use super::schedule::pick_for_day;
use super::store::COLUMNS;
use super::store::{create_prompt, list_prompts, load_changeable, schedule_columns};
use super::types::PromptRow;
use super::types::{
    CreateInput, IdInput, ListInput, Prompt, PromptList, Today, TodayInput, UpdateInput,
};
use crate::http::error::ApiError;
use crate::http::rpc::{Rpc, RpcInput, RpcQuery};
use crate::modules::journal_entries::store::check_version;
use crate::modules::teams::store::MY_TEAMS_SQL;
use crate::modules::teams::store::caller_role;
use crate::procedures::session::Protected;
use crate::state::AppState;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// `prompts.create {text, teamId?, schedule?}`: personal, or a team's (admins and owners).
pub(crate) async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<CreateInput>,
) -> Result<Rpc<Prompt>, ApiError> {
    create_prompt(&state.db, session.user_id, input)
        .await
        .map(Rpc)
}

/// `prompts.list {teamId?, includeDeleted?}` (GET-able) → `{items}`: the caller's prompts and
/// their teams' (or one team's), newest first.
pub(crate) async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<Option<ListInput>>,
) -> Result<Rpc<PromptList>, ApiError> {
    let input = input.unwrap_or_default();
    let mut conn = state.db.acquire().await?;
    if let Some(team_id) = input.team_id {
        caller_role(&mut conn, team_id, session.user_id).await?;
    }
    let items = list_prompts(
        &mut conn,
        session.user_id,
        input.team_id,
        input.include_deleted.unwrap_or(false),
    )
    .await?;
    Ok(Rpc(PromptList { items }))
}

/// `prompts.update {promptId, expectedVersion?, text?, schedule?}`: version + 1; a stale
/// `expectedVersion` answers `EDIT_CONFLICT`; without any field, the prompt unchanged.
pub(crate) async fn update(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<UpdateInput>,
) -> Result<Rpc<Prompt>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current = load_changeable(&mut tx, input.prompt_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Err(ApiError::defined(
            "PROMPT_DELETED",
            StatusCode::CONFLICT,
            "This prompt is deleted",
        ));
    }
    check_version(
        input.expected_version,
        current.version,
        current.updated_at.at(),
        "This prompt",
    )?;
    if input.text.is_none() && input.schedule.is_none() {
        return Ok(Rpc(current));
    }
    let (time, zone, weekdays) = schedule_columns(input.schedule.as_ref().and_then(Option::as_ref));
    let row: PromptRow = sqlx::query_as(&format!(
        "UPDATE prompts SET
            text = coalesce($2, text),
            schedule_time = CASE WHEN $3 THEN $4 ELSE schedule_time END,
            schedule_timezone = CASE WHEN $3 THEN $5 ELSE schedule_timezone END,
            schedule_weekdays = CASE WHEN $3 THEN $6 ELSE schedule_weekdays END,
            updated_at = now(), version = version + 1
          WHERE prompt_id = $1
          RETURNING {COLUMNS}"
    ))
    .bind(current.prompt_id)
    .bind(input.text.as_deref().map(str::trim))
    .bind(input.schedule.is_some())
    .bind(time)
    .bind(zone)
    .bind(weekdays)
    .fetch_one(&mut *tx)
    .await?;
    let prompt = Prompt::from(row);
    tx.record(&[prompt.scope()], Op::Update, &prompt)?;
    tx.commit().await?;
    Ok(Rpc(prompt))
}

/// `prompts.delete {promptId}`: soft delete; a deleted prompt answers unchanged. Entries that
/// answered it keep their `promptId`.
pub(crate) async fn delete(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<IdInput>,
) -> Result<Rpc<Prompt>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let current = load_changeable(&mut tx, input.prompt_id, session.user_id).await?;
    if current.deleted_at.is_some() {
        return Ok(Rpc(current));
    }
    let row: PromptRow = sqlx::query_as(&format!(
        "UPDATE prompts SET deleted_at = now(), updated_at = now(), version = version + 1
          WHERE prompt_id = $1
          RETURNING {COLUMNS}"
    ))
    .bind(current.prompt_id)
    .fetch_one(&mut *tx)
    .await?;
    let prompt = Prompt::from(row);
    tx.record(&[prompt.scope()], Op::Delete, &prompt)?;
    tx.commit().await?;
    Ok(Rpc(prompt))
}

// ---------------------------------------------------------------------------------------------
// today

/// `prompts.today {date?}` (GET-able) → `{date, prompt}`.
pub(crate) async fn today(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<Option<TodayInput>>,
) -> Result<Rpc<Today>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let timezone: Option<String> =
        sqlx::query_scalar("SELECT timezone FROM users WHERE user_id = $1")
            .bind(session.user_id)
            .fetch_optional(&mut *conn)
            .await?;
    let caller_zone: Tz = timezone
        .and_then(|zone| zone.parse().ok())
        .unwrap_or(Tz::UTC);
    let day = match input
        .and_then(|input| input.date)
        .and_then(|date| date.date())
    {
        Some(day) => day,
        None => Utc::now().with_timezone(&caller_zone).date_naive(),
    };
    let rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts
          WHERE (owner_user_id = $1 OR team_id IN ({MY_TEAMS_SQL})) AND deleted_at IS NULL"
    ))
    .bind(session.user_id)
    .fetch_all(&mut *conn)
    .await?;
    let prompts: Vec<Prompt> = rows.into_iter().map(Prompt::from).collect();
    let prompt = pick_for_day(&prompts, day, caller_zone).cloned();
    Ok(Rpc(Today {
        date: day.format("%Y-%m-%d").to_string(),
        prompt,
    }))
}
