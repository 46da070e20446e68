//! Where procedures meet paths: the user-app RPC (`/rpc/*`), the open API's REST
//! (`/api/v1/*`) and the cron-job hooks (`/cron/*`). No feature logic lives here.

pub mod cron_jobs;
pub mod open_api;
pub mod user_app;

use axum::Router;

use crate::modules::auth;
use crate::procedures::session;
use crate::state::AppState;

/// The service's routes (without the shared health and metrics routes): the sign-in
/// endpoints under `/auth`, the user-app RPC under `/rpc`, the open API, the cron hooks, CORS
/// for the allowed origins.
pub fn routes(state: AppState) -> Router {
    Router::new()
        .merge(auth::http_routes())
        .merge(cron_jobs::routes())
        .merge(open_api::routes(&state))
        .merge(user_app::routes(&state))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            session::refresh_cookie,
        ))
        .layer(auth::cors_layer(&state.config))
        .with_state(state)
}
