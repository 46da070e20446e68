//! Sign-in endpoints (`/auth/*`) and the `auth.*` procedures: the session, the list of one's
//! sessions, revocation and logout. Google sign-in is in [`crate::modules::auth::google`], sessions
//! in [`crate::modules::auth::session`], the procedure tiers in [`crate::procedures::session`].

pub mod google;
pub mod procedures;
pub mod session;
pub mod session_cache;
pub mod types;

use axum::Router;
use axum::http::{HeaderName, Method};
use axum::routing::{get, post};
use tower_http::cors::{AllowOrigin, CorsLayer};

use self::procedures::{
    current_session, dev_login, list_sessions, logout, revoke_all_sessions, revoke_other_sessions,
    revoke_session,
};
use crate::config::Config;
use crate::http::rpc::RpcRouter;
use crate::state::AppState;

/// `/auth/dev/login`, `/auth/google/start`, `/auth/google/callback`.
pub fn http_routes() -> Router<AppState> {
    Router::new()
        .route("/auth/dev/login", post(dev_login))
        .route(
            "/auth/google/start",
            get(crate::modules::auth::google::start),
        )
        .route(
            "/auth/google/callback",
            get(crate::modules::auth::google::callback),
        )
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
