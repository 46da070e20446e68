//! Sessions: a session is a 256-bit random token; only its SHA-256 is stored (a database leak
//! yields no usable session). It arrives as `Authorization: Bearer <token>` or as the HttpOnly
//! `session` cookie. Sessions last 7 days, extended to 7 days from now when used more than a
//! day after the last extension (so the database sees at most one write per session and day),
//! but never past their absolute lifetime (`SESSION_ABSOLUTE_LIFETIME_DAYS` from sign-in,
//! default 30): a stolen token that keeps being used still dies. This file creates, describes
//! and revokes them; the tiers that check them on every request are in
//! `procedures::session`.

use axum::http::HeaderMap;
use axum::http::header::USER_AGENT;
use base64::Engine;
use chrono::{DateTime, Utc};
use domain::ids::{SessionId, UserId};
use messages::journal::v1::SessionRevoked;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;

use crate::config::Config;
use crate::http::client_ip::ClientIp;
use crate::http::error::ApiError;
use crate::modules::auth::session_cache::SessionCache;

pub const SESSION_COOKIE: &str = "session";
pub const SESSION_DAYS: i64 = 7;
/// Browsers cap cookie lifetimes at 400 days; the server's expiry is the one that counts,
/// and the cookie is re-sent with a fresh `Max-Age` whenever the session slides.
const COOKIE_MAX_AGE_SECONDS: i64 = SESSION_DAYS * 24 * 3600;

/// A new random session token: 32 bytes from the OS-seeded CSPRNG, as 43 base64url chars.
pub fn new_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn hash_token(token: &str) -> Vec<u8> {
    Sha256::digest(token.as_bytes()).to_vec()
}

/// Where a new session comes from, for `auth.listSessions`.
#[derive(Debug, Clone, Default)]
pub struct SessionOrigin {
    pub user_agent: Option<String>,
    pub ip_address: Option<String>,
}

/// Where a new session comes from: its user agent and client address.
pub fn session_origin(headers: &HeaderMap, client_ip: ClientIp) -> SessionOrigin {
    SessionOrigin {
        user_agent: headers
            .get(USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        ip_address: (!client_ip.0.is_unspecified()).then(|| client_ip.0.to_string()),
    }
}

/// Create a session for `user_id` inside the caller's transaction; returns the token (shown
/// to the client once).
pub async fn create_session(
    conn: &mut PgConnection,
    user_id: UserId,
    origin: &SessionOrigin,
) -> Result<String, ApiError> {
    let token = new_token();
    sqlx::query(
        "INSERT INTO sessions (user_id, token_hash, expires_at, user_agent, ip_address)
         VALUES ($1, $2, now() + make_interval(days => $3), $4, $5)",
    )
    .bind(user_id)
    .bind(hash_token(&token))
    .bind(SESSION_DAYS as i32)
    .bind(
        origin
            .user_agent
            .as_deref()
            .map(|agent| truncate(agent, 512)),
    )
    .bind(origin.ip_address.as_deref())
    .execute(conn)
    .await?;
    Ok(token)
}

fn truncate(text: &str, max_chars: usize) -> &str {
    match text.char_indices().nth(max_chars) {
        Some((index, _)) => &text[..index],
        None => text,
    }
}

/// The `Set-Cookie` value that carries `token`.
pub fn session_cookie(config: &Config, token: &str) -> String {
    format!(
        "{SESSION_COOKIE}={token}; HttpOnly; SameSite=Lax; Path=/; Max-Age={COOKIE_MAX_AGE_SECONDS}{}",
        if config.session_cookie_secure {
            "; Secure"
        } else {
            ""
        }
    )
}

/// The `Set-Cookie` value that removes the session cookie.
pub fn clear_session_cookie(config: &Config) -> String {
    format!(
        "{SESSION_COOKIE}=; HttpOnly; SameSite=Lax; Path=/; Max-Age=0{}",
        if config.session_cookie_secure {
            "; Secure"
        } else {
            ""
        }
    )
}

/// Why a session ended early (stored in `sessions.revoked_reason`, sent in the event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevokeReason {
    Logout,
    Revoked,
    RevokedOthers,
    RevokedAll,
    AccountDeleted,
}

impl RevokeReason {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Logout => "logout",
            Self::Revoked => "revoked",
            Self::RevokedOthers => "revoked_others",
            Self::RevokedAll => "revoked_all",
            Self::AccountDeleted => "account_deleted",
        }
    }
}

/// Which of a user's sessions to revoke.
#[derive(Debug, Clone, Copy)]
pub enum Revoke {
    One(SessionId),
    AllBut(SessionId),
    All,
}

/// Revoke sessions of `user_id` inside the caller's transaction, emitting `session.revoked`
/// for each (the sync-streamer closes their streams; every api replica drops them from its
/// session cache). This replica forgets them at once, before the commit: a request reading
/// the row meanwhile cannot re-cache it, and a rollback only costs a few lookups. Returns how
/// many were revoked.
pub async fn revoke_sessions(
    conn: &mut PgConnection,
    sessions: &SessionCache,
    user_id: UserId,
    which: Revoke,
    reason: RevokeReason,
) -> Result<u64, ApiError> {
    let (filter, session_id) = match which {
        Revoke::One(session_id) => ("AND session_id = $2", Some(session_id)),
        Revoke::AllBut(session_id) => ("AND session_id <> $2", Some(session_id)),
        Revoke::All => ("AND $2::uuid IS NULL", None),
    };
    let revoked: Vec<(SessionId, DateTime<Utc>)> = sqlx::query_as(&format!(
        "UPDATE sessions SET revoked_at = now(), revoked_reason = $3
          WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now() {filter}
          RETURNING session_id, revoked_at"
    ))
    .bind(user_id)
    .bind(session_id)
    .bind(reason.as_str())
    .fetch_all(&mut *conn)
    .await?;
    for (session_id, _) in &revoked {
        sessions.forget(*session_id);
    }
    for (session_id, revoked_at) in &revoked {
        let event = SessionRevoked {
            session_id: session_id.to_string(),
            user_id: user_id.to_string(),
            reason: reason.as_str().to_owned(),
            revoked_at_ms: revoked_at.timestamp_millis(),
        };
        bus::outbox::emit(conn, &event).await?;
    }
    Ok(revoked.len() as u64)
}
