//! Sessions: a 256-bit random token given to the client; only its SHA-256 is stored.
//! The dev login (`POST /auth/dev/login`) exists only when `AUTH_DEV_LOGIN=true`, and the
//! service refuses to start with it in production.

use axum::Json;
use axum::extract::{FromRequestParts, State};
use axum::http::header::{AUTHORIZATION, SET_COOKIE};
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::AppState;
use crate::error::ApiError;

pub const SESSION_COOKIE: &str = "session";
const SESSION_DAYS: i64 = 7;

/// A new random session token (43 characters of base64url).
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Create a session for `user_id`; returns the token (shown to the client once).
pub async fn create_session(db: &sqlx::PgPool, user_id: Uuid) -> Result<String, ApiError> {
    let token = new_token();
    sqlx::query(
        "INSERT INTO sessions (user_id, token_hash, expires_at)
         VALUES ($1, $2, now() + make_interval(days => $3))",
    )
    .bind(user_id)
    .bind(hash_token(&token))
    .bind(SESSION_DAYS as i32)
    .execute(db)
    .await?;
    Ok(token)
}

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DevLoginInput {
    email: String,
    name: String,
}

#[derive(serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct DevLoginOutput {
    token: String,
    user_id: Uuid,
}

/// `POST /auth/dev/login {"email","name"}` → `{"token","userId"}` and the session cookie.
pub async fn dev_login(
    State(state): State<AppState>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    if !state.config.auth_dev_login {
        return Err(ApiError::NotFound);
    }
    let input: DevLoginInput = serde_json::from_slice(&body).map_err(|error| {
        ApiError::Validation(vec![crate::error::Issue {
            path: vec![],
            message: error.to_string(),
        }])
    })?;
    let email = input.email.trim().to_ascii_lowercase();
    if email.len() > 254 || !email.contains('@') || email.starts_with('@') || email.ends_with('@') {
        return Err(ApiError::field("email", "must be an email address"));
    }
    let name = input.name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(ApiError::field("name", "must be 1 to 100 characters"));
    }
    let user_id: Uuid = sqlx::query_scalar(
        "INSERT INTO users (email, name) VALUES ($1, $2)
         ON CONFLICT (lower(email)) DO UPDATE SET updated_at = users.updated_at
         RETURNING user_id",
    )
    .bind(&email)
    .bind(name)
    .fetch_one(&state.db)
    .await?;
    let token = create_session(&state.db, user_id).await?;
    let cookie = format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={}",
        SESSION_DAYS * 24 * 3600
    );
    Ok((
        [(SET_COOKIE, cookie)],
        Json(DevLoginOutput { token, user_id }),
    )
        .into_response())
}

/// A valid session, from `Authorization: Bearer <token>`. (Cookie sessions arrive with the
/// CSRF origin check in the api issue.)
#[derive(Debug, Clone, Copy)]
pub struct AuthSession {
    pub user_id: Uuid,
    pub session_id: Uuid,
}

impl FromRequestParts<AppState> for AuthSession {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = parts
            .headers
            .get(AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|token| !token.is_empty())
            .ok_or(ApiError::Unauthorized)?;
        let row: Option<(Uuid, Uuid)> = sqlx::query_as(
            "SELECT s.session_id, s.user_id
               FROM sessions s JOIN users u ON u.user_id = s.user_id
              WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                AND u.deleted_at IS NULL",
        )
        .bind(hash_token(token))
        .fetch_optional(&state.db)
        .await?;
        let (session_id, user_id) = row.ok_or(ApiError::Unauthorized)?;
        Ok(Self {
            user_id,
            session_id,
        })
    }
}
