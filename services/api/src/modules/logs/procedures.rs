//! The `logs.list` procedure.

use axum::extract::State;
use sqlx::{Postgres, QueryBuilder};

use super::types::{ListInput, Page, RequestLogRow};
use crate::http::error::ApiError;
use crate::http::pagination::{KeysetCursor, finish_page};
use crate::http::rpc::{Rpc, RpcQuery};
use crate::http::validation::EpochMillis;
use crate::modules::teams::store::require_role;
use crate::modules::teams::types::Role;
use crate::procedures::session::Protected;
use crate::state::AppState;

/// `logs.list` (GET-able): for the team's owners and admins; a member is `FORBIDDEN`,
/// anybody else `NOT_FOUND`.
pub(crate) async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<ListInput>,
) -> Result<Rpc<Page>, ApiError> {
    let limit = input.limit.unwrap_or(50);
    let mut conn = state.db.acquire().await?;
    require_role(
        &mut conn,
        input.team_id,
        session.user_id,
        Role::Admin,
        "Only the team's owners and admins can read its request logs",
    )
    .await?;
    let mut query = QueryBuilder::<Postgres>::new(
        "SELECT request_log_id, created_at, team_id, api_team_id, api_key_prefix, method, path,
                status, duration_us, host(client_ip) AS client_ip, user_agent, request_id,
                request_bytes, response_bytes, error_code, request_headers
           FROM request_logs WHERE team_id = ",
    );
    query.push_bind(input.team_id);
    if let Some(status) = input.status {
        query.push(" AND status = ");
        query.push_bind(status);
    }
    if let Some(class) = input.status_class {
        query.push(" AND status / 100 = ");
        query.push_bind(class);
    }
    if let Some(path) = &input.path_prefix {
        query.push(" AND starts_with(path, ");
        query.push_bind(path.clone());
        query.push(")");
    }
    if let Some(prefix) = &input.api_key_prefix {
        query.push(" AND api_key_prefix = ");
        query.push_bind(prefix.clone());
    }
    if let Some(from) = input.from.map(EpochMillis::at) {
        query.push(" AND created_at >= ");
        query.push_bind(from);
    }
    if let Some(to) = input.to.map(EpochMillis::at) {
        query.push(" AND created_at < ");
        query.push_bind(to);
    }
    if let Some(cursor) = input.cursor.as_deref().and_then(KeysetCursor::decode) {
        query.push(" AND (created_at, request_log_id) < (");
        query.push_bind(cursor.created_at);
        query.push(", ");
        query.push_bind(cursor.id);
        query.push(")");
    }
    query.push(" ORDER BY created_at DESC, request_log_id DESC LIMIT ");
    query.push_bind(limit + 1);
    let mut items: Vec<RequestLogRow> = query.build_query_as().fetch_all(&mut *conn).await?;
    let next_cursor = finish_page(&mut items, limit, |last| KeysetCursor {
        created_at: last.created_at.at(),
        id: last.request_log_id,
    });
    Ok(Rpc(Page { items, next_cursor }))
}
