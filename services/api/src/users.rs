//! Users: the profile (`users.me`, `users.update`) and account deletion (`users.delete`,
//! sensitive). A user row is synced to its own scope. Sign-in paths create or find users
//! through [`find_or_create`].

use axum::extract::State;
use axum::http::header::SET_COOKIE;
use chrono::{DateTime, Utc};
use messages::journal::v1::{UserCreated, UserDeleted, UserProfileUpdated};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::changes::{Changes, Op, Scope, SyncedRow};
use crate::contract::{Text, Timezone, errors};
use crate::error::ApiError;
use crate::rpc::{Input, NoInput, Rpc, RpcInput, RpcQuery, RpcRouter, RpcWithHeaders};
use crate::session::{self, Protected, Revoke, RevokeReason, Sensitive, clear_session_cookie};
use crate::validation::{Issues, URL_MAX_BYTES, check_http_url, parse_timezone};

/// The longest name (of a user, a team, an API key), trimmed, in characters.
pub const NAME_MAX_CHARS: usize = 100;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .query("users.me", me)
        .mutation("users.update", update)
        .mutation("users.delete", delete)
        .errors(&[
            errors::LAST_OWNER,
            errors::SESSION_NOT_FRESH,
            errors::STORAGE_UNAVAILABLE,
        ])
}

/// A user's profile as clients see it (and as it syncs).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: Uuid,
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    pub timezone: String,
    pub email_verified: bool,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl SyncedRow for User {
    const TABLE: &'static str = "users";
    fn row_id(&self) -> String {
        self.user_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

pub(crate) const USER_COLUMNS: &str = "user_id, email, name, avatar_url, timezone, email_verified, \
                            created_at, updated_at, deleted_at, version";

pub async fn load(db: &sqlx::PgPool, user_id: Uuid) -> Result<User, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_id = $1 AND deleted_at IS NULL"
    ))
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::not_found("User"))
}

/// Who is signing in.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Lowercased.
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    /// Google's `sub`, when signing in with Google.
    pub google_subject: Option<String>,
    /// The provider vouches for the address (Google's `email_verified`).
    pub email_verified: bool,
    /// `google` or `dev`, for the `user.created` event.
    pub via: &'static str,
}

/// Find the user who is signing in, or create them (in the caller's transaction):
/// 1. by Google subject, when there is one;
/// 2. by email — and a Google sign-in links the account only when Google verified the address
///    (otherwise anybody could claim an account by registering its address elsewhere);
/// 3. otherwise a new user (`user.created`, and the row synced to the user's scope).
pub async fn find_or_create(conn: &mut PgConnection, new: NewUser) -> Result<User, ApiError> {
    if let Some(subject) = &new.google_subject {
        let by_subject: Option<User> = sqlx::query_as(&format!(
            "UPDATE users SET email_verified = email_verified OR $2
              WHERE google_subject = $1 AND deleted_at IS NULL
              RETURNING {USER_COLUMNS}"
        ))
        .bind(subject)
        .bind(new.email_verified)
        .fetch_optional(&mut *conn)
        .await?;
        if let Some(user) = by_subject {
            return Ok(user);
        }
    }
    let by_email: Option<(Uuid, Option<String>)> = sqlx::query_as(
        "SELECT user_id, google_subject FROM users
          WHERE lower(email) = lower($1) AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(&new.email)
    .fetch_optional(&mut *conn)
    .await?;
    if let Some((user_id, linked_subject)) = by_email {
        if let Some(subject) = &new.google_subject {
            if !new.email_verified {
                return Err(ApiError::forbidden(
                    "Google has not verified this email address; it cannot sign in to an existing account",
                ));
            }
            if linked_subject.is_some() {
                return Err(ApiError::forbidden(
                    "This email address belongs to an account linked to another Google account",
                ));
            }
            let mut changes = Changes::new();
            let linked: User = sqlx::query_as(&format!(
                "UPDATE users SET google_subject = $2, email_verified = true,
                        updated_at = now(), version = version + 1
                  WHERE user_id = $1 RETURNING {USER_COLUMNS}"
            ))
            .bind(user_id)
            .bind(subject)
            .fetch_one(&mut *conn)
            .await?;
            changes.record(&[Scope::User(user_id)], Op::Update, &linked)?;
            changes.write(conn).await?;
            return Ok(linked);
        }
        return sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_one(&mut *conn)
        .await
        .map_err(ApiError::from);
    }
    // ON CONFLICT: two first sign-ins with one address at once create one user.
    let created: Option<User> = sqlx::query_as(&format!(
        "INSERT INTO users (email, name, avatar_url, google_subject, email_verified)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING
         RETURNING {USER_COLUMNS}"
    ))
    .bind(&new.email)
    .bind(&new.name)
    .bind(&new.avatar_url)
    .bind(&new.google_subject)
    .bind(new.email_verified)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(user) = created else {
        return Err(ApiError::defined(
            "CONFLICT",
            axum::http::StatusCode::CONFLICT,
            "This account is being created by another request; retry",
        ));
    };
    bus::outbox::emit(
        &mut *conn,
        &UserCreated {
            user_id: user.user_id.to_string(),
            via: new.via.to_owned(),
            email: user.email.clone(),
            name: user.name.clone(),
            timezone: user.timezone.clone(),
            version: user.version,
        },
    )
    .await?;
    let mut changes = Changes::new();
    changes.record(&[Scope::User(user.user_id)], Op::Insert, &user)?;
    changes.write(conn).await?;
    Ok(user)
}

/// `users.me` (protected, GET-able).
async fn me(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<User>, ApiError> {
    load(&state.db, session.user_id).await.map(Rpc)
}

/// `users.update` input: every field optional; `avatarUrl: null` removes the avatar.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInput {
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    name: Option<String>,
    #[serde(default, deserialize_with = "crate::validation::explicit_null")]
    #[schemars(transform = Text::raw().format("http-url").max_bytes(URL_MAX_BYTES))]
    avatar_url: Option<Option<String>>,
    #[schemars(with = "Option<Timezone>")]
    timezone: Option<String>,
}

impl Input for UpdateInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(name) = &self.name {
            issues.string_length("name", name.trim(), 1, NAME_MAX_CHARS);
        }
        if let Some(Some(url)) = &self.avatar_url {
            check_http_url(issues, "avatarUrl", url);
        }
        if let Some(zone) = &self.timezone {
            parse_timezone(issues, "timezone", zone);
        }
    }
}

/// `users.update {name?, avatarUrl?, timezone?}` → the profile.
async fn update(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<UpdateInput>,
) -> Result<Rpc<User>, ApiError> {
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    changes.record(&[Scope::User(user.user_id)], Op::Update, &user)?;
    changes.write(&mut tx).await?;
    // The notifier re-identifies the user (ordered per user: versions only grow).
    bus::outbox::emit_ordered(
        &mut tx,
        &UserProfileUpdated {
            user_id: user.user_id.to_string(),
            email: user.email.clone(),
            name: user.name.clone(),
            timezone: user.timezone.clone(),
            version: user.version,
        },
        &user.user_id.to_string(),
    )
    .await?;
    tx.commit().await?;
    Ok(Rpc(user))
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    deleted_at: DateTime<Utc>,
}

/// `users.delete` (sensitive): soft-deletes the account, frees its address for a new sign-up
/// (kept in `deleted_email` until the purge), leaves the caller's teams, revokes every
/// session and every export link (the archives are deleted before the commit). One
/// transaction. What the account owned is purged `ACCOUNT_PURGE_RETENTION_DAYS` later
/// ([`crate::account_purge`]; docs/api.md, "Account deletion").
async fn delete(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(NoInput): RpcInput<NoInput>,
) -> Result<RpcWithHeaders<Deleted>, ApiError> {
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    changes.record(&[Scope::User(user.user_id)], Op::Delete, &user)?;
    let deleted_teams = crate::teams::leave_all_teams(&mut tx, user.user_id, &mut changes).await?;
    changes.write(&mut tx).await?;
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
    crate::exports::revoke_for_user(&mut tx, &state.storage, user.user_id).await?;
    let deleted_at = user.deleted_at.unwrap_or_else(Utc::now);
    bus::outbox::emit(
        &mut tx,
        &UserDeleted {
            user_id: user.user_id.to_string(),
            deleted_at_ms: deleted_at.timestamp_millis(),
        },
    )
    .await?;
    tx.commit().await?;
    for team_id in deleted_teams {
        state.api_keys.team_deleted(team_id).await;
    }
    Ok(RpcWithHeaders(
        vec![(SET_COOKIE, clear_session_cookie(&state.config))],
        Deleted { deleted_at },
    ))
}
