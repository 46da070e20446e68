//! The `exports.*` procedures.

use axum::extract::State;
use messages::journal::v1::ExportUserData;

use super::store::{LIST_LIMIT, PENDING_REUSE_SECONDS};
use super::types::{Export, GetInput};
use crate::http::error::ApiError;
use crate::http::rpc::{NoInput, Rpc, RpcInput, RpcQuery};
use crate::modules::exports::store::EXPORT_COLUMNS;
use crate::procedures::session::Protected;
use crate::state::AppState;

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
        requested_at_ms: export.requested_at.millis(),
    };
    bus::outbox::emit(&mut tx, &task).await?;
    tx.commit().await?;
    Ok(Rpc(export))
}

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
