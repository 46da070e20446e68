//! The `users.*` procedures.

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use domain::time::EpochMillis;
use messages::journal::v1::{UserDeleted, UserProfileUpdated};

use super::store::load;
use super::types::{Deleted, UpdateInput, User};
use crate::http::error::ApiError;
use crate::http::rpc::{NoInput, Rpc, RpcInput, RpcQuery, RpcWithHeaders};
use crate::modules::auth::session;
use crate::modules::auth::session::{Revoke, RevokeReason, clear_session_cookie};
use crate::modules::users::store::USER_COLUMNS;
use crate::procedures::session::{Protected, Sensitive};
use crate::state::AppState;
use sync_protocol::changes::{Op, Scope};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// `users.me` (protected, GET-able).
pub(crate) async fn me(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<User>, ApiError> {
    load(&state.db, session.user_id).await.map(Rpc)
}

/// `users.update {name?, avatarUrl?, timezone?}` → the profile.
pub(crate) async fn update(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<UpdateInput>,
) -> Result<Rpc<User>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let user: User = sqlx::query_as(&format!(
        "UPDATE users SET
            name = coalesce($2, name),
            avatar_url = CASE WHEN $3 THEN $4 ELSE avatar_url END,
            timezone = coalesce($5, timezone),
            updated_at = now(), version = version + 1
          WHERE user_id = $1 AND deleted_at IS NULL
          RETURNING {USER_COLUMNS}"
    ))
    .bind(session.user_id)
    .bind(input.name.as_deref().map(str::trim))
    .bind(input.avatar_url.is_some())
    .bind(input.avatar_url.flatten())
    .bind(input.timezone)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("User"))?;
    tx.record(&[Scope::User(user.user_id)], Op::Update, &user)?;
    // The notifier re-identifies the user (ordered per user: versions only grow).
    tx.emit_ordered(
        &UserProfileUpdated {
            user_id: user.user_id.to_string(),
            email: user.email.clone(),
            name: user.name.clone(),
            timezone: user.timezone.clone(),
            version: user.version,
        },
        &user.user_id.to_string(),
    );
    tx.commit().await?;
    Ok(Rpc(user))
}

/// `users.delete` (sensitive): soft-deletes the account, frees its address for a new sign-up
/// (kept in `deleted_email` until the purge), leaves the caller's teams, revokes every
/// session and every export link (the archives are deleted before the commit). One
/// transaction. What the account owned is purged `ACCOUNT_PURGE_RETENTION_DAYS` later
/// ([`crate::modules::users::account_purge`]; docs/api.md, "Account deletion").
pub(crate) async fn delete(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(NoInput): RpcInput<NoInput>,
) -> Result<RpcWithHeaders<Deleted>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    // A team must keep an owner: the last owner hands the team over (or removes everyone)
    // before deleting the account.
    let sole_owner_of: Option<String> = sqlx::query_scalar(
        "SELECT t.name FROM team_members m JOIN teams t ON t.team_id = m.team_id
          WHERE m.user_id = $1 AND m.role = 'owner' AND m.deleted_at IS NULL
            AND t.deleted_at IS NULL
            AND NOT EXISTS (SELECT 1 FROM team_members o
                             WHERE o.team_id = m.team_id AND o.user_id <> m.user_id
                               AND o.role = 'owner' AND o.deleted_at IS NULL)
            AND EXISTS (SELECT 1 FROM team_members o
                         WHERE o.team_id = m.team_id AND o.user_id <> m.user_id
                           AND o.deleted_at IS NULL)
          LIMIT 1",
    )
    .bind(session.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(team_name) = sole_owner_of {
        return Err(ApiError::defined(
            "LAST_OWNER",
            axum::http::StatusCode::CONFLICT,
            format!(
                "You are the last owner of team \"{team_name}\": make someone else an owner first"
            ),
        ));
    }
    let user: User = sqlx::query_as(&format!(
        "UPDATE users SET deleted_at = now(), deleted_email = email,
                email = 'deleted+' || user_id || '@deleted.invalid',
                google_subject = NULL, updated_at = now(), version = version + 1
          WHERE user_id = $1 AND deleted_at IS NULL
          RETURNING {USER_COLUMNS}"
    ))
    .bind(session.user_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("User"))?;
    tx.record(&[Scope::User(user.user_id)], Op::Delete, &user)?;
    let deleted_teams =
        crate::modules::teams::store::leave_all_teams(&mut tx, user.user_id).await?;
    session::revoke_sessions(
        &mut tx,
        &state.sessions,
        user.user_id,
        Revoke::All,
        RevokeReason::AccountDeleted,
    )
    .await?;
    // Last, just before the commit: object storage failing fails the deletion (503), so no
    // export link outlives it.
    crate::modules::exports::store::revoke_for_user(&mut tx, &state.storage, user.user_id).await?;
    let deleted_at = user.deleted_at.unwrap_or_else(EpochMillis::now);
    tx.emit(&UserDeleted {
        user_id: user.user_id.to_string(),
        deleted_at_ms: deleted_at.millis(),
    });
    tx.commit().await?;
    for team_id in deleted_teams {
        state.api_keys.team_deleted(team_id).await;
    }
    Ok(RpcWithHeaders(
        vec![(SET_COOKIE, clear_session_cookie(&state.config))],
        Deleted { deleted_at },
    ))
}
