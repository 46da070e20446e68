//! The session tiers (the original's `public`, `protected` and `sensitive` procedures),
//! defined once as extractors:
//!
//! - [`MaybeSession`]: public procedures; the session when there is a valid one.
//! - [`Protected`]: a valid session, or 401.
//! - [`Sensitive`]: a session younger than `SESSION_FRESH_AGE_SECONDS`, or 403
//!   `SESSION_NOT_FRESH` (sign in again).
//!
//! Cookie calls that change state must come from an allowed origin (the browser's `Origin`,
//! or `Referer`): that is the CSRF protection, since a cookie is sent on cross-site requests
//! and a bearer header is not. Revocation is checked on every request: no cache.
//! [`refresh_cookie`] sends the extended cookie when a session was extended.

use domain::ids::{SessionId, UserId};
use std::sync::{Arc, Mutex};

use axum::extract::{FromRequestParts, Request, State};
use axum::http::header::{AUTHORIZATION, COOKIE, ORIGIN, REFERER, SET_COOKIE};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

use crate::config::Config;
use crate::http::error::ApiError;
use crate::modules::auth::session::{SESSION_COOKIE, SESSION_DAYS, session_cookie};
use crate::modules::auth::session_cache::{CachedSession, TokenHash};
use crate::state::AppState;

/// A valid session of an active user.
#[derive(Debug, Clone)]
pub struct Session {
    pub session_id: SessionId,
    pub user_id: UserId,
    pub created_at: DateTime<Utc>,
    pub expires_at: DateTime<Utc>,
    /// The credential came as the cookie (not a bearer header).
    pub via_cookie: bool,
}

pub(crate) enum Credential {
    Bearer(String),
    Cookie(String),
}

pub(crate) fn credential(headers: &HeaderMap) -> Option<Credential> {
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
pub(crate) struct SessionRow {
    pub(crate) session_id: SessionId,
    pub(crate) user_id: UserId,
    pub(crate) created_at: DateTime<Utc>,
    pub(crate) expires_at: DateTime<Utc>,
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
pub(crate) struct CookieRefresh(Arc<Mutex<Option<String>>>);

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
