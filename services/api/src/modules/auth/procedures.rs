//! The dev login and the `auth.*` procedures: the session, the list of one's sessions,
//! revocation and logout.

use axum::Json;
use axum::extract::State;
use axum::http::HeaderMap;
use axum::http::header::SET_COOKIE;
use axum::response::{IntoResponse, Response};

use super::types::{
    CurrentSession, DevLoginInput, DevLoginOutput, ListedSession, RevokeSessionInput, Revoked,
    SessionInfo,
};
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, PlainError};
use crate::http::rpc::{NoInput, Rpc, RpcInput, RpcQuery, RpcWithHeaders};
use crate::modules::auth::session;
use crate::modules::auth::session::{
    Revoke, RevokeReason, clear_session_cookie, session_cookie, session_origin,
};
use crate::modules::users;
use crate::modules::users::types::NewUser;
use crate::procedures::session::{MaybeSession, Protected};
use crate::state::AppState;
use sync_protocol::synced_tx::SyncedTx;

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
    let input: DevLoginInput = crate::http::validation::decode_input(json)?;
    let mut tx = SyncedTx::begin(&state.db).await?;
    let user = users::store::find_or_create(
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

/// `auth.session` (public, GET-able): the caller's session and user, or nulls.
pub(crate) async fn current_session(
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
    let user = users::store::load(&state.db, session.user_id).await?;
    Ok(Rpc(CurrentSession {
        session: Some(SessionInfo {
            session_id: session.session_id,
            created_at: session.created_at.into(),
            expires_at: session.expires_at.into(),
        }),
        user: Some(user),
    }))
}

/// `auth.listSessions` (protected, GET-able): the caller's live sessions, newest first.
pub(crate) async fn list_sessions(
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

/// `auth.revokeSession {sessionId}`: one of the caller's sessions (possibly the current one).
pub(crate) async fn revoke_session(
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
pub(crate) async fn revoke_other_sessions(
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
pub(crate) async fn revoke_all_sessions(
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
pub(crate) async fn logout(
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
