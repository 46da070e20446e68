//! The open API's endpoints about the key and its API team: `whoami`, the usage of the current
//! period, the subscription and the usage history.

use axum::extract::{Request, State};
use axum::{Extension, Json};
use domain::ids::{ApiKeyId, ApiTeamId, TeamId};
use serde::Serialize;

use crate::http::error::ApiError;
use crate::http::rest::RestError;
use crate::http::validation::{EpochMillis, Issue, Issues, PathSegment};
use crate::modules::subscriptions;
use crate::modules::subscriptions::types::{SubscriptionStatus, UsageHistory};
use crate::procedures::api_key::{Caller, KeyRefusals};
use crate::state::AppState;

#[derive(Debug, Serialize, sqlx::FromRow, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageReport {
    pub plan_id: String,
    pub plan_name: String,
    pub limit: i64,
    /// This request included.
    pub used: i64,
    pub remaining: i64,
    /// Epoch milliseconds.
    pub period_start: EpochMillis,
    /// Epoch milliseconds: when the count starts again.
    pub period_end: EpochMillis,
}

#[utoipa::path(
    get,
    path = "/api/v1/usage",
    tag = "usage",
    responses(
        (status = 200, description = "The plan and the current period's count (this request included)", body = UsageReport),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// Current usage
///
/// `GET /api/v1/usage` → the API team's plan and its current period's count.
pub async fn usage(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<UsageReport>, RestError> {
    let report: Option<UsageReport> = sqlx::query_as(
        "SELECT p.plan_id, p.name AS plan_name, p.monthly_request_quota AS limit,
                s.usage_count AS used,
                greatest(p.monthly_request_quota - s.usage_count, 0) AS remaining,
                s.period_start, s.period_end
           FROM subscriptions s JOIN plans p ON p.plan_id = s.plan_id
          WHERE s.api_team_id = $1",
    )
    .bind(caller.key.api_team_id)
    .fetch_optional(&state.db)
    .await?;
    report
        .map(Json)
        .ok_or_else(|| RestError(ApiError::forbidden("This team has no API subscription")))
}

#[utoipa::path(
    get,
    path = "/api/v1/subscription",
    tag = "usage",
    responses(
        (status = 200, description = "The plan with its limits, the current period and its count (this request included)", body = SubscriptionStatus),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// The subscription
///
/// `GET /api/v1/subscription` → the API team's subscription: plan and limits (quota and
/// per-key rate), the current period, its count and what is left.
pub async fn subscription(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
) -> Result<Json<SubscriptionStatus>, RestError> {
    let mut conn = state.db.acquire().await?;
    subscriptions::store::load_status(&mut conn, caller.key.api_team_id)
        .await?
        .map(Json)
        .ok_or_else(|| RestError(ApiError::forbidden("This team has no API subscription")))
}

#[utoipa::path(
    get,
    path = "/api/v1/usage/history",
    tag = "usage",
    params(
        ("limit" = Option<i64>, Query, description = "Periods per page, 1–100 (default 12)", minimum = 1, maximum = 100),
        ("before" = Option<i64>, Query, description = "Epoch milliseconds: only periods that started before (the previous page's `nextBefore`)", minimum = 0, maximum = 253402300799999.0),
    ),
    responses(
        (status = 200, description = "Closed metering periods with their counts, newest first", body = UsageHistory),
        (status = 400, description = "Invalid query parameter (`BAD_REQUEST`, with `issues[].path`)", body = crate::http::rest::ErrorBody),
        KeyRefusals,
    ),
    security(("api_key" = []))
)]
/// Usage history
///
/// `GET /api/v1/usage/history?limit=&before=` → `{items, nextBefore}`: the API team's closed
/// metering periods (plan, quota, count), newest first. The current period is
/// `GET /api/v1/subscription`.
pub async fn usage_history(
    State(state): State<AppState>,
    Extension(caller): Extension<Caller>,
    request: Request,
) -> Result<Json<UsageHistory>, RestError> {
    let mut limit = subscriptions::types::DEFAULT_HISTORY_LIMIT;
    let mut before = None;
    let mut issues = Issues::default();
    let query = request.uri().query().unwrap_or_default();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        match name.as_ref() {
            "limit" => match value.parse() {
                Ok(value) => {
                    limit = value;
                    issues.number_range("limit", value, 1, subscriptions::types::MAX_HISTORY_LIMIT);
                }
                Err(_) => issues.push(Issue::new("invalid_type", "limit", "Expected an integer")),
            },
            "before" => match value.parse().ok().and_then(EpochMillis::from_millis) {
                Some(at) => before = Some(at.at()),
                None => issues.push(Issue::new(
                    "invalid_type",
                    "before",
                    "Expected epoch milliseconds",
                )),
            },
            other => {
                let mut issue = Issue::new(
                    "unrecognized_keys",
                    Vec::<PathSegment>::new(),
                    format!("Unrecognized query parameter: \"{other}\""),
                );
                issue.keys = Some(vec![other.to_owned()]);
                issues.push(issue);
            }
        }
    }
    issues.into_result()?;
    let mut conn = state.db.acquire().await?;
    let history =
        subscriptions::store::load_history(&mut conn, caller.key.api_team_id, before, limit)
            .await?;
    Ok(Json(history))
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct WhoAmI {
    pub api_key_id: ApiKeyId,
    pub api_team_id: ApiTeamId,
    pub team_id: TeamId,
    pub key_prefix: String,
}

/// `GET /api/v1/whoami` → which key, API team and team the request authenticated as.
pub(crate) async fn whoami(
    axum::Extension(Caller { key, .. }): axum::Extension<Caller>,
) -> Json<WhoAmI> {
    Json(WhoAmI {
        api_key_id: key.api_key_id,
        api_team_id: key.api_team_id,
        team_id: key.team_id,
        key_prefix: key.prefix,
    })
}
