//! Sessions and the procedure tiers (the original's `public`, `protected` and `sensitive`
//! procedures), defined once as extractors:
//!
//! - [`MaybeSession`]: public procedures; the session when there is a valid one.
//! - [`Protected`]: a valid session, or 401.
//! - [`Sensitive`]: a session younger than `SESSION_FRESH_AGE_SECONDS`, or 403
//!   `SESSION_NOT_FRESH` (sign in again).
//!
//! A session is a 256-bit random token; only its SHA-256 is stored (a database leak yields
//! no usable session). It arrives as `Authorization: Bearer <token>` or as the HttpOnly
//! `session` cookie. Cookie calls that change state must come from an allowed origin (the
//! browser's `Origin`, or `Referer`): that is the CSRF protection, since a cookie is sent on
//! cross-site requests and a bearer header is not. Sessions last 7 days, extended to 7 days
//! from now when used more than a day after the last extension (so the database sees at most
//! one write per session and day), but never past their absolute lifetime
//! (`SESSION_ABSOLUTE_LIFETIME_DAYS` from sign-in, default 30): a stolen token that keeps
//! being used still dies. Revocation is checked on every request: no cache.

use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, ORIGIN, REFERER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use base64::Engine;
use chrono::{DateTime, Utc};
use messages::journal::v1::SessionRevoked;
use sha2::{Digest, Sha256};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::config::Config;
use crate::error::ApiError;
use crate::session_cache::{CachedSession, SessionCache, TokenHash};

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

/// Create a session for `user_id` inside the caller's transaction; returns the token (shown
/// to the client once).
pub async fn create_session(
    conn: &mut PgConnection,
    user_id: Uuid,
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

/// A valid session of an active user.
#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The credential came as the cookie (not a bearer header).
    pub via_cookie: bool,
}

enum Credential {
    Bearer(String),
    Cookie(String),
}

fn credential(headers: &HeaderMap) -> Option<Credential> {
    if let Some(value) = headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) {
        let token = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .unwrap_or_default()
            .trim();
        return Some(Credential::Bearer(token.to_owned()));
    }
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == SESSION_COOKIE)
        .map(|(_, token)| Credential::Cookie(token.trim().to_owned()))
}

/// CSRF protection for cookie sessions: a state-changing request must name an allowed
/// origin. Browsers send `Origin` on every cross-origin request and on same-origin POSTs;
/// `Referer` is the fallback some privacy settings leave.
fn check_origin(parts: &Parts, config: &Config) -> Result<(), ApiError> {
    if matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS) {
        return Ok(());
    }
    let origin = parts
        .headers
        .get(ORIGIN)
        .and_then(|value| value.to_str().ok())
        .map(str::to_owned)
        .or_else(|| {
            parts
                .headers
                .get(REFERER)
                .and_then(|value| value.to_str().ok())
                .and_then(|referer| url::Url::parse(referer).ok())
                .map(|url| platform::config::origin_of(&url))
        });
    match origin {
        Some(origin) if config.allowed_origins.contains(&origin) => Ok(()),
        Some(_) => Err(ApiError::CrossSiteRequest(
            "Cross-site request refused: the Origin is not allowed",
        )),
        None => Err(ApiError::CrossSiteRequest(
            "Cross-site request refused: a cookie-authenticated call needs an Origin header",
        )),
    }
}

#[derive(sqlx::FromRow)]
struct SessionRow {
    session_id: Uuid,
    user_id: Uuid,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
}

/// Look the request's session up. `Ok(None)`: no credentials at all.
async fn authenticate(parts: &mut Parts, state: &AppState) -> Result<Option<Session>, ApiError> {
    let Some(credential) = credential(&parts.headers) else {
        return Ok(None);
    };
    let (token, via_cookie) = match credential {
        Credential::Bearer(token) => (token, false),
        Credential::Cookie(token) => {
            check_origin(parts, &state.config)?;
            (token, true)
        }
    };
    const INVALID: ApiError = ApiError::Unauthorized("Invalid or expired session");
    if token.is_empty() || token.len() > 128 {
        return Err(INVALID);
    }
    let absolute_lifetime = state.config.session_absolute_lifetime;
    let token_hash: TokenHash = Sha256::digest(token.as_bytes()).into();
    // A cached session is trusted only while the clock says it is alive; an expired one goes
    // to Postgres like an unknown one (which refuses it).
    let cached = state
        .sessions
        .get(&token_hash)
        .await
        .filter(|session| session.is_live(Utc::now(), absolute_lifetime));
    let from_cache = cached.is_some();
    metrics::counter!(
        "api_session_lookups_total",
        "source" => if from_cache { "cache" } else { "postgres" }
    )
    .increment(1);
    let mut session = match cached {
        Some(session) => session,
        None => {
            let row: Option<SessionRow> = sqlx::query_as(
                "SELECT s.session_id, s.user_id, s.created_at, s.expires_at
                   FROM sessions s JOIN users u ON u.user_id = s.user_id
                  WHERE s.token_hash = $1 AND s.revoked_at IS NULL AND s.expires_at > now()
                    AND s.created_at > now() - make_interval(secs => $2)
                    AND u.deleted_at IS NULL",
            )
            .bind(token_hash.as_slice())
            .bind(absolute_lifetime.as_secs_f64())
            .fetch_optional(&state.db)
            .await?;
            let Some(row) = row else {
                state.sessions.remove(&token_hash).await;
                return Err(INVALID);
            };
            CachedSession {
                session_id: row.session_id,
                user_id: row.user_id,
                created_at: row.created_at,
                expires_at: row.expires_at,
            }
        }
    };
    // Slide: at most one write per session and day, never past the absolute lifetime (once
    // the expiry reached it, there is nothing left to extend). A cached session slides too.
    let end_of_life = session.created_at
        + chrono::Duration::from_std(absolute_lifetime).unwrap_or(chrono::Duration::MAX);
    let slides = session.expires_at < Utc::now() + chrono::Duration::days(SESSION_DAYS - 1)
        && session.expires_at < end_of_life;
    if slides {
        let extended: Option<DateTime<Utc>> = sqlx::query_scalar(
            "UPDATE sessions
                SET expires_at = LEAST(now() + make_interval(days => $2),
                                       created_at + make_interval(secs => $3)),
                    last_seen_at = now()
              WHERE session_id = $1 AND revoked_at IS NULL
              RETURNING expires_at",
        )
        .bind(session.session_id)
        .bind(SESSION_DAYS as i32)
        .bind(absolute_lifetime.as_secs_f64())
        .fetch_optional(&state.db)
        .await?;
        let Some(extended) = extended else {
            state.sessions.remove(&token_hash).await;
            return Err(INVALID);
        };
        session.expires_at = extended;
        if via_cookie && let Some(refresh) = parts.extensions.get::<CookieRefresh>() {
            refresh.set(session_cookie(&state.config, &token));
        }
    }
    if slides || !from_cache {
        state.sessions.insert(token_hash, session).await;
    }
    Ok(Some(Session {
        session_id: session.session_id,
        user_id: session.user_id,
        created_at: session.created_at,
        expires_at: session.expires_at,
        via_cookie,
    }))
}

/// Public tier: the session if there is a valid one. Invalid credentials are still 401, so a
/// client learns its token died.
#[derive(Debug, Clone)]
pub struct MaybeSession(pub Option<Session>);

/// Protected tier: a valid session.
#[derive(Debug, Clone)]
pub struct Protected(pub Session);

/// Sensitive tier: a valid session younger than the configured fresh age.
#[derive(Debug, Clone)]
pub struct Sensitive(pub Session);

impl FromRequestParts<AppState> for MaybeSession {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state).await.map(MaybeSession)
    }
}

impl FromRequestParts<AppState> for Protected {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        authenticate(parts, state)
            .await?
            .map(Protected)
            .ok_or(ApiError::Unauthorized("Unauthorized"))
    }
}

impl FromRequestParts<AppState> for Sensitive {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let Protected(session) = Protected::from_request_parts(parts, state).await?;
        require_fresh(&session, &state.config)?;
        Ok(Sensitive(session))
    }
}

/// The [`Sensitive`] tier's check, for procedures that are sensitive only for some inputs
/// (`teams.changeRole` to or from owner): `403 SESSION_NOT_FRESH` unless the session is
/// younger than `SESSION_FRESH_AGE_SECONDS`.
pub fn require_fresh(session: &Session, config: &Config) -> Result<(), ApiError> {
    let fresh_age =
        chrono::Duration::from_std(config.session_fresh_age).unwrap_or(chrono::Duration::MAX);
    if session.created_at + fresh_age < Utc::now() {
        return Err(ApiError::defined(
            "SESSION_NOT_FRESH",
            StatusCode::FORBIDDEN,
            "This needs a recent sign-in: sign in again and retry",
        ));
    }
    Ok(())
}

/// Lets the session extractor re-send the cookie with a fresh `Max-Age` after sliding.
#[derive(Clone, Default)]
struct CookieRefresh(Arc<Mutex<Option<String>>>);

impl CookieRefresh {
    fn set(&self, cookie: String) {
        if let Ok(mut slot) = self.0.lock() {
            *slot = Some(cookie);
        }
    }
    fn take(&self) -> Option<String> {
        self.0.lock().ok().and_then(|mut slot| slot.take())
    }
}

/// Middleware: appends the refreshed session cookie when the session slid.
pub async fn refresh_cookie(
    State(_state): State<AppState>,
    mut request: Request,
    next: Next,
) -> Response {
    let refresh = CookieRefresh::default();
    request.extensions_mut().insert(refresh.clone());
    let mut response = next.run(request).await;
    let already_set = response.headers().contains_key(SET_COOKIE);
    if let Some(cookie) = refresh.take()
        && !already_set
        && let Ok(value) = HeaderValue::from_str(&cookie)
    {
        response.headers_mut().append(SET_COOKIE, value);
    }
    response
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
    One(Uuid),
    AllBut(Uuid),
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
    user_id: Uuid,
    which: Revoke,
    reason: RevokeReason,
) -> Result<u64, ApiError> {
    let (filter, session_id) = match which {
        Revoke::One(session_id) => ("AND session_id = $2", Some(session_id)),
        Revoke::AllBut(session_id) => ("AND session_id <> $2", Some(session_id)),
        Revoke::All => ("AND $2::uuid IS NULL", None),
    };
    let revoked: Vec<(Uuid, DateTime<Utc>)> = sqlx::query_as(&format!(
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
