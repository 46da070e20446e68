//! The open API's prompt endpoints (`/api/v1/prompts`): the API team's team prompts.

use axum::extract::State;
use axum::http::StatusCode;
use axum::{Extension, Json};
use serde::Serialize;

use crate::http::rest::{JsonObject, RestError};
use crate::modules::prompts;
use crate::modules::prompts::types::Prompt;
use crate::procedures::api_key::{Caller, KeyRefusals};
use crate::state::AppState;

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
pub async fn list_prompts(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<PromptList>, RestError> {
    let mut conn = state.db.acquire().await?;
    let items =
        prompts::store::list_prompts(&mut conn, caller.user_id, Some(caller.key.team_id), false)
            .await?;
    Ok(Json(PromptList { items }))
}

#[utoipa::path(
    post,
    path = "/api/v1/prompts",
    tag = "prompts",
    request_body = prompts::types::CreatePromptBody,
    responses(
        (status = 201, description = "The team's new prompt", body = Prompt),
        (status = 400, description = "Invalid input (`BAD_REQUEST`, with `issues[].path`)", body = crate::http::rest::ErrorBody),
        KeyRefusals,
        (status = 404, description = "Not found, or another team's (`NOT_FOUND`)", body = crate::http::rest::ErrorBody),
        (status = 413, description = "Body over 1 MiB (`PAYLOAD_TOO_LARGE`)", body = crate::http::rest::ErrorBody),
    ),
    security(("api_key" = []))
)]
/// Create a team prompt
///
/// `POST /api/v1/prompts {text, schedule?}` → 201 the team's new prompt (the key's creator
/// must still be a team admin, as in the app).
pub async fn create_prompt(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    body: JsonObject,
) -> Result<(StatusCode, Json<Prompt>), RestError> {
    let input = body
        .decode(|prompt: prompts::types::CreatePromptBody| prompt.into_input(caller.key.team_id))?;
    let created = prompts::store::create_prompt(&state.db, caller.user_id, input).await?;
    Ok((StatusCode::CREATED, Json(created)))
}

// ---------------------------------------------------------------------------------------------
// usage
