//! Sign-in endpoints (`/auth/*`) and the `auth.*` procedures: the session, the list of one's
//! sessions, revocation and logout. Google sign-in is in [`crate::google`]; sessions and the
//! procedure tiers in [`crate::session`].

use axum::Json;
use axum::Router;
use axum::extract::State;
use axum::http::header::{SET_COOKIE, USER_AGENT};
use axum::http::{HeaderMap, HeaderName, Method};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tower_http::cors::{AllowOrigin, CorsLayer};
use uuid::Uuid;

use crate::AppState;
use crate::client_ip::ClientIp;
use crate::config::Config;
use crate::error::{ApiError, PlainError};
use crate::rpc::{Input, NoInput, Rpc, RpcInput, RpcQuery, RpcRouter, RpcWithHeaders};
use crate::session::{
    self, MaybeSession, Protected, Revoke, RevokeReason, SessionOrigin, clear_session_cookie,
    session_cookie,
};
use crate::users::{self, NewUser, User};
use crate::validation::{Issues, check_email};

/// `/auth/dev/login`, `/auth/google/start`, `/auth/google/callback`.
pub fn http_routes() -> Router<AppState> {
    Router::new()
        .route("/auth/dev/login", post(dev_login))
        .route("/auth/google/start", get(crate::google::start))
        .route("/auth/google/callback", get(crate::google::callback))
}

/// `auth.session`, `auth.listSessions`, `auth.revokeSession`, `auth.revokeOtherSessions`,
/// `auth.revokeAllSessions`, `auth.logout`.
pub fn rpc_routes() -> RpcRouter {
    RpcRouter::new()
        .query("auth.session", current_session)
        .query("auth.listSessions", list_sessions)
        .mutation("auth.revokeSession", revoke_session)
        .mutation("auth.revokeOtherSessions", revoke_other_sessions)
        .mutation("auth.revokeAllSessions", revoke_all_sessions)
        .mutation("auth.logout", logout)
}

/// CORS for the allowed origins, with credentials (cookies), and the headers oRPC clients
/// send. oRPC itself sets no CORS headers; browsers on another origin need these.
pub fn cors_layer(config: &Config) -> CorsLayer {
    let origins: Vec<axum::http::HeaderValue> = config
        .allowed_origins
        .iter()
        .filter_map(|origin| origin.parse().ok())
        .collect();
    CorsLayer::new()
        .allow_origin(AllowOrigin::list(origins))
        .allow_credentials(true)
        .allow_methods([
            Method::GET,
            Method::POST,
            Method::PUT,
            Method::PATCH,
            Method::DELETE,
        ])
        .allow_headers([
            axum::http::header::AUTHORIZATION,
            axum::http::header::CONTENT_TYPE,
            HeaderName::from_static("last-event-id"),
            HeaderName::from_static("x-orpc-batch"),
            HeaderName::from_static("x-request-id"),
        ])
        .expose_headers([
            axum::http::header::RETRY_AFTER,
            HeaderName::from_static("x-request-id"),
        ])
        .max_age(std::time::Duration::from_secs(600))
}

pub fn session_origin(headers: &HeaderMap, client_ip: ClientIp) -> SessionOrigin {
    SessionOrigin {
        user_agent: headers
            .get(USER_AGENT)
            .and_then(|value| value.to_str().ok())
            .map(str::to_owned),
        ip_address: (!client_ip.0.is_unspecified()).then(|| client_ip.0.to_string()),
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevLoginInput {
    email: String,
    name: String,
}

impl Input for DevLoginInput {
    fn check(&self, issues: &mut Issues) {
        check_email(issues, "email", self.email.trim());
        issues.string_length("name", self.name.trim(), 1, 100);
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevLoginOutput {
    token: String,
    user_id: Uuid,
}

/// `POST /auth/dev/login {"email","name"}` → `{"token","userId"}` and the session cookie.
/// Exists only with `AUTH_DEV_LOGIN=true` (never in production). Plain JSON, not RPC.
pub async fn dev_login(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, PlainError> {
    if !state.config.auth_dev_login {
        return Err(PlainError(ApiError::NotFound(
            "The dev login is disabled (AUTH_DEV_LOGIN)".to_owned(),
        )));
    }
    state.auth_limiter.check(client_ip.0)?;
    let json: serde_json::Value = serde_json::from_slice(&body).map_err(|_| ApiError::Malformed)?;
    let input: DevLoginInput = crate::rpc::decode(crate::rpc::Envelope::of(json))?;
    let mut tx = state.db.begin().await?;
    let user = users::find_or_create(
        &mut tx,
        NewUser {
            email: input.email.trim().to_lowercase(),
            name: input.name.trim().to_owned(),
            avatar_url: None,
            google_subject: None,
            // The developer vouches for the address (the dev login never runs in production);
            // invitations need a verified one.
            email_verified: true,
            via: "dev",
        },
    )
    .await?;
    let token =
        session::create_session(&mut tx, user.user_id, &session_origin(&headers, client_ip))
            .await?;
    tx.commit().await?;
    Ok((
        [(SET_COOKIE, session_cookie(&state.config, &token))],
        Json(DevLoginOutput {
            token,
            user_id: user.user_id,
        }),
    )
        .into_response())
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: Uuid,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub expires_at: DateTime<Utc>,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentSession {
    /// `null` when the caller is not signed in.
    session: Option<SessionInfo>,
    user: Option<User>,
}

/// `auth.session` (public, GET-able): the caller's session and user, or nulls.
async fn current_session(
    State(state): State<AppState>,
    MaybeSession(session): MaybeSession,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<CurrentSession>, ApiError> {
    let Some(session) = session else {
        return Ok(Rpc(CurrentSession {
            session: None,
            user: None,
        }));
    };
    let user = users::load(&state.db, session.user_id).await?;
    Ok(Rpc(CurrentSession {
        session: Some(SessionInfo {
            session_id: session.session_id,
            created_at: session.created_at,
            expires_at: session.expires_at,
        }),
        user: Some(user),
    }))
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedSession {
    session_id: Uuid,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    last_seen_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    expires_at: DateTime<Utc>,
    user_agent: Option<String>,
    ip_address: Option<String>,
    /// The session making this call.
    #[sqlx(default)]
    current: bool,
}

/// `auth.listSessions` (protected, GET-able): the caller's live sessions, newest first.
async fn list_sessions(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<Vec<ListedSession>>, ApiError> {
    let mut sessions: Vec<ListedSession> = sqlx::query_as(
        "SELECT session_id, created_at, last_seen_at, expires_at, user_agent, ip_address
           FROM sessions
          WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()
          ORDER BY created_at DESC, session_id",
    )
    .bind(session.user_id)
    .fetch_all(&state.db)
    .await?;
    for listed in &mut sessions {
        listed.current = listed.session_id == session.session_id;
    }
    Ok(Rpc(sessions))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeSessionInput {
    session_id: Uuid,
}

impl Input for RevokeSessionInput {}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    revoked: u64,
}

/// `auth.revokeSession {sessionId}`: one of the caller's sessions (possibly the current one).
async fn revoke_session(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<RevokeSessionInput>,
) -> Result<RpcWithHeaders<Revoked>, ApiError> {
    let mut tx = state.db.begin().await?;
    let revoked = session::revoke_sessions(
        &mut tx,
        &state.sessions,
        session.user_id,
        Revoke::One(input.session_id),
        RevokeReason::Revoked,
    )
    .await?;
    if revoked == 0 {
        return Err(ApiError::not_found("Session"));
    }
    tx.commit().await?;
    let output = Revoked { revoked };
    if input.session_id == session.session_id && session.via_cookie {
        return Ok(RpcWithHeaders(
            vec![(SET_COOKIE, clear_session_cookie(&state.config))],
            output,
        ));
    }
    Ok(RpcWithHeaders::plain(output))
}

/// `auth.revokeOtherSessions`: every session of the caller but the current one.
async fn revoke_other_sessions(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(NoInput): RpcInput<NoInput>,
) -> Result<Rpc<Revoked>, ApiError> {
    let mut tx = state.db.begin().await?;
    let revoked = session::revoke_sessions(
        &mut tx,
        &state.sessions,
        session.user_id,
        Revoke::AllBut(session.session_id),
        RevokeReason::RevokedOthers,
    )
    .await?;
    tx.commit().await?;
    Ok(Rpc(Revoked { revoked }))
}

/// `auth.revokeAllSessions`: every session of the caller, the current one included.
async fn revoke_all_sessions(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(NoInput): RpcInput<NoInput>,
) -> Result<RpcWithHeaders<Revoked>, ApiError> {
    let mut tx = state.db.begin().await?;
    let revoked = session::revoke_sessions(
        &mut tx,
        &state.sessions,
        session.user_id,
        Revoke::All,
        RevokeReason::RevokedAll,
    )
    .await?;
    tx.commit().await?;
    Ok(RpcWithHeaders(
        vec![(SET_COOKIE, clear_session_cookie(&state.config))],
        Revoked { revoked },
    ))
}

/// `auth.logout`: ends the current session and clears the cookie.
async fn logout(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(NoInput): RpcInput<NoInput>,
) -> Result<RpcWithHeaders<Revoked>, ApiError> {
    let mut tx = state.db.begin().await?;
    session::revoke_sessions(
        &mut tx,
        &state.sessions,
        session.user_id,
        Revoke::One(session.session_id),
        RevokeReason::Logout,
    )
    .await?;
    tx.commit().await?;
    Ok(RpcWithHeaders(
        vec![(SET_COOKIE, clear_session_cookie(&state.config))],
        Revoked { revoked: 1 },
    ))
}
