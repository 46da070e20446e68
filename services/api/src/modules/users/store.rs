//! Users' SQL: loading a user, and finding or creating one at sign-in.

use domain::ids::UserId;
use messages::journal::v1::UserCreated;

use super::types::User;
use crate::http::error::ApiError;
use crate::modules::users::types::NewUser;
use sync_protocol::changes::{Op, Scope};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

pub(crate) const USER_COLUMNS: &str = "user_id, email, name, avatar_url, timezone, email_verified, \
                            created_at, updated_at, deleted_at, version";

pub async fn load(db: &sqlx::PgPool, user_id: UserId) -> Result<User, ApiError> {
    sqlx::query_as(&format!(
        "SELECT {USER_COLUMNS} FROM users WHERE user_id = $1 AND deleted_at IS NULL"
    ))
    .bind(user_id)
    .fetch_optional(db)
    .await?
    .ok_or_else(|| ApiError::not_found("User"))
}

/// Find the user who is signing in, or create them (in the caller's transaction):
/// 1. by Google subject, when there is one;
/// 2. by email — and a Google sign-in links the account only when Google verified the address
///    (otherwise anybody could claim an account by registering its address elsewhere);
/// 3. otherwise a new user (`user.created`, and the row synced to the user's scope).
pub async fn find_or_create(tx: &mut SyncedTx<'_>, new: NewUser) -> Result<User, ApiError> {
    if let Some(subject) = &new.google_subject {
        let by_subject: Option<User> = sqlx::query_as(&format!(
            "UPDATE users SET email_verified = email_verified OR $2
              WHERE google_subject = $1 AND deleted_at IS NULL
              RETURNING {USER_COLUMNS}"
        ))
        .bind(subject)
        .bind(new.email_verified)
        .fetch_optional(&mut **tx)
        .await?;
        if let Some(user) = by_subject {
            return Ok(user);
        }
    }
    let by_email: Option<(UserId, Option<String>)> = sqlx::query_as(
        "SELECT user_id, google_subject FROM users
          WHERE lower(email) = lower($1) AND deleted_at IS NULL FOR UPDATE",
    )
    .bind(&new.email)
    .fetch_optional(&mut **tx)
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
            let linked: User = sqlx::query_as(&format!(
                "UPDATE users SET google_subject = $2, email_verified = true,
                        updated_at = now(), version = version + 1
                  WHERE user_id = $1 RETURNING {USER_COLUMNS}"
            ))
            .bind(user_id)
            .bind(subject)
            .fetch_one(&mut **tx)
            .await?;
            tx.record(&[Scope::User(user_id)], Op::Update, &linked)?;
            return Ok(linked);
        }
        return sqlx::query_as(&format!(
            "SELECT {USER_COLUMNS} FROM users WHERE user_id = $1"
        ))
        .bind(user_id)
        .fetch_one(&mut **tx)
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
    .fetch_optional(&mut **tx)
    .await?;
    let Some(user) = created else {
        return Err(ApiError::defined(
            "CONFLICT",
            axum::http::StatusCode::CONFLICT,
            "This account is being created by another request; retry",
        ));
    };
    tx.emit(&UserCreated {
        user_id: user.user_id.to_string(),
        via: new.via.to_owned(),
        email: user.email.clone(),
        name: user.name.clone(),
        timezone: user.timezone.clone(),
        version: user.version,
    });
    tx.record(&[Scope::User(user.user_id)], Op::Insert, &user)?;
    Ok(user)
}
