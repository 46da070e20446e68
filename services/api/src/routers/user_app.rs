//! The user-app RPC (`/rpc/<router>/<procedure>`, oRPC's wire protocol): every feature's
//! procedures merged into one router, each declared a query (GET-able) or a mutation (POST
//! only), with oRPC batching in front.

use axum::Router;

use crate::http::error::ApiError;
use crate::http::{rpc, rpc_batch};
use crate::modules::subscriptions::{api_keys, api_teams};
use crate::modules::{
    auth, cdn, exports, journal_entries, logs, prompts, subscriptions, sync, teams, users,
};
use crate::state::AppState;

/// Every RPC procedure, each declared a query (GET-able) or a mutation (POST only).
fn rpc_router() -> rpc::RpcRouter {
    auth::rpc_routes()
        .merge(users::routes())
        .merge(teams::routes())
        .merge(journal_entries::routes())
        .merge(prompts::routes())
        .merge(logs::routes())
        .merge(api_teams::routes())
        .merge(api_keys::routes())
        .merge(subscriptions::routes())
        .merge(exports::routes())
        .merge(sync::routes())
        .merge(cdn::routes())
}

/// The list of RPC procedures the service serves (what [`routes`] mounts under `/rpc`), so
/// tests can cover every procedure without a hand-kept list.
pub fn rpc_procedures() -> Vec<rpc::Procedure> {
    rpc_router().procedures().to_vec()
}

/// The procedures under `/rpc`, single calls and batches (`x-orpc-batch`).
pub fn routes(state: &AppState) -> Router<AppState> {
    let procedures = rpc_router()
        .into_router()
        // oRPC answers an unknown procedure with 404 (C12); ours keeps the error shape.
        .route(
            "/rpc/{*procedure}",
            axum::routing::any(|| async { ApiError::ProcedureNotFound }),
        )
        .layer(axum::extract::DefaultBodyLimit::max(rpc::MAX_BODY_BYTES));
    // A batch (`x-orpc-batch`) runs each of its calls through the same procedures.
    let batch = rpc_batch::BatchDispatch::new(procedures.clone().with_state(state.clone()));
    procedures.layer(axum::middleware::from_fn_with_state(
        batch,
        rpc_batch::middleware,
    ))
}
