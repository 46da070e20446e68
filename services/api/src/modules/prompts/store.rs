//! Prompts' SQL, shared by the RPC procedures and the open API's REST handlers.

use super::types::CreateInput;
use super::types::{Prompt, PromptRow};
use crate::modules::prompts::ApiError;
use crate::modules::prompts::types::Schedule;
use crate::modules::prompts::types::parse_time;
use crate::modules::teams::store::MY_TEAMS_SQL;
use crate::modules::teams::store::{member_role, require_role};
use crate::modules::teams::types::Role;
use chrono::NaiveTime;
use domain::ids::{PromptId, TeamId, UserId};
use sqlx::PgConnection;
use sync_protocol::changes::Op;
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

pub(crate) const COLUMNS: &str = "prompt_id, owner_user_id, team_id, author_user_id, text, schedule_time, \
                       schedule_timezone, schedule_weekdays, created_at, updated_at, deleted_at, \
                       version";

/// The schedule's columns (time, zone, sorted weekdays), all `None` without a schedule.
pub(crate) fn schedule_columns(
    schedule: Option<&Schedule>,
) -> (Option<NaiveTime>, Option<String>, Option<Vec<i16>>) {
    match schedule.and_then(|schedule| {
        parse_time(&schedule.time).map(|time| {
            let mut weekdays = schedule.weekdays.clone();
            weekdays.sort_unstable();
            (time, schedule.timezone.clone(), weekdays)
        })
    }) {
        Some((time, zone, weekdays)) => (Some(time), Some(zone), Some(weekdays)),
        None => (None, None, None),
    }
}

/// Why a member below admin may not change a team's prompts.
const MANAGE_PROMPTS: &str = "Only team admins and owners can manage the team's prompts";

/// `NOT_FOUND` for a team the caller is not in, `FORBIDDEN` below admin.
async fn require_team_admin(
    conn: &mut PgConnection,
    team_id: TeamId,
    user_id: UserId,
) -> Result<(), ApiError> {
    require_role(conn, team_id, user_id, Role::Admin, MANAGE_PROMPTS).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// create

/// Create a prompt by `author_user_id` (checked input; a team's prompt only by its admins)
/// with its changeset, in one transaction. Shared by the RPC procedure and the open API's
/// `POST /api/v1/prompts` (author = the key's creator).
pub async fn create_prompt(
    db: &sqlx::PgPool,
    author_user_id: UserId,
    input: CreateInput,
) -> Result<Prompt, ApiError> {
    let mut tx = SyncedTx::begin(db).await?;
    if let Some(team_id) = input.team_id {
        require_team_admin(&mut tx, team_id, author_user_id).await?;
    }
    let owner = match input.team_id {
        Some(_) => None,
        None => Some(author_user_id),
    };
    let (time, zone, weekdays) = schedule_columns(input.schedule.as_ref());
    let row: PromptRow = sqlx::query_as(&format!(
        "INSERT INTO prompts (owner_user_id, team_id, author_user_id, text,
                              schedule_time, schedule_timezone, schedule_weekdays)
         VALUES ($1, $2, $3, $4, $5, $6, $7)
         RETURNING {COLUMNS}"
    ))
    .bind(owner)
    .bind(input.team_id)
    .bind(author_user_id)
    .bind(input.text.trim())
    .bind(time)
    .bind(zone)
    .bind(weekdays)
    .fetch_one(&mut *tx)
    .await?;
    let prompt = Prompt::from(row);
    tx.record(&[prompt.scope()], Op::Insert, &prompt)?;
    tx.commit().await?;
    Ok(prompt)
}

// ---------------------------------------------------------------------------------------------
// list

/// The prompts `user_id` sees (theirs and their teams'), or `team_id`'s whose membership the
/// caller has checked (or, in the open API, that the key belongs to), newest first.
pub async fn list_prompts(
    conn: &mut PgConnection,
    user_id: UserId,
    team_id: Option<TeamId>,
    include_deleted: bool,
) -> Result<Vec<Prompt>, ApiError> {
    let rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts
          WHERE (CASE WHEN $2::uuid IS NULL
                      THEN owner_user_id = $1 OR team_id IN ({MY_TEAMS_SQL})
                      ELSE team_id = $2 END)
            AND ($3 OR deleted_at IS NULL)
          ORDER BY created_at DESC, prompt_id DESC"
    ))
    .bind(user_id)
    .bind(team_id)
    .bind(include_deleted)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.into_iter().map(Prompt::from).collect())
}

// ---------------------------------------------------------------------------------------------
// update, delete

/// A prompt the caller can see (owner, or member of its team), locked for the transaction,
/// checked that they may change it (owner, or admin of its team).
pub(crate) async fn load_changeable(
    conn: &mut PgConnection,
    prompt_id: PromptId,
    user_id: UserId,
) -> Result<Prompt, ApiError> {
    let row: Option<PromptRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM prompts WHERE prompt_id = $1 FOR UPDATE"
    ))
    .bind(prompt_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(prompt) = row.map(Prompt::from) else {
        return Err(ApiError::not_found("Prompt"));
    };
    match prompt.team_id {
        None if prompt.owner_user_id == Some(user_id) => Ok(prompt),
        None => Err(ApiError::not_found("Prompt")),
        Some(team_id) => match member_role(conn, team_id, user_id).await? {
            None => Err(ApiError::not_found("Prompt")),
            Some(role) if role < Role::Admin => Err(ApiError::forbidden(MANAGE_PROMPTS)),
            Some(_) => Ok(prompt),
        },
    }
}

/// The account purge (`crate::modules::users::account_purge`): soft-delete the personal prompts of
/// `user_id` (deleted ones too) with their text and schedule cleared, in the caller's transaction.
/// A prompt the user wrote for a team stays: it is the team's. Returns the rows changed (their
/// tombstones are the caller's to record).
pub(crate) async fn purge_personal(
    conn: &mut sqlx::PgConnection,
    user_id: UserId,
) -> Result<Vec<Prompt>, ApiError> {
    let rows: Vec<PromptRow> = sqlx::query_as(&format!(
        "UPDATE prompts
            SET text = '', schedule_time = NULL, schedule_timezone = NULL,
                schedule_weekdays = NULL, deleted_at = coalesce(deleted_at, now()),
                updated_at = now(), version = version + 1
          WHERE owner_user_id = $1
            AND (deleted_at IS NULL OR text <> '' OR schedule_time IS NOT NULL)
          RETURNING {COLUMNS}"
    ))
    .bind(user_id)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Prompt::from).collect())
}
