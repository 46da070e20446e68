//! `sync.token` (ARCHITECTURE §9): a short-lived signed token for the sync-streamer, carrying
//! the user, the session it was issued from and the user's live teams (see
//! `shared/sync-protocol`). The streamer verifies it with the shared `SYNC_TOKEN_SECRET`,
//! without reading the api's schema.

use axum::extract::State;
use domain::ids::TeamId;
use serde::Serialize;
use sync_protocol::SyncClaims;

use crate::http::error::ApiError;
use crate::http::rpc::{NoInput, Rpc, RpcInput, RpcRouter};
use crate::procedures::session::Protected;
use crate::state::AppState;

pub fn routes() -> RpcRouter {
    RpcRouter::new().mutation("sync.token", token)
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SyncTokenOutput {
    pub token: String,
    /// Epoch milliseconds.
    pub expires_at: i64,
}

async fn token(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(NoInput): RpcInput<NoInput>,
) -> Result<Rpc<SyncTokenOutput>, ApiError> {
    let team_ids: Vec<TeamId> = sqlx::query_scalar(crate::modules::teams::store::MY_TEAMS_SQL)
        .bind(session.user_id)
        .fetch_all(&state.db)
        .await?;
    let now = chrono::Utc::now().timestamp_millis();
    // Never outlive the session the token comes from.
    let ttl_ms = i64::try_from(state.config.sync_token_ttl.as_millis()).unwrap_or(i64::MAX);
    let expires_at = now
        .saturating_add(ttl_ms)
        .min(session.expires_at.timestamp_millis());
    let claims = SyncClaims {
        user_id: session.user_id,
        session_id: session.session_id,
        team_ids,
        issued_at: now,
        expires_at,
    };
    Ok(Rpc(SyncTokenOutput {
        token: state.sync_tokens.sign(&claims),
        expires_at,
    }))
}
