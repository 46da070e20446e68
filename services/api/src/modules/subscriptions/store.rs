//! Subscriptions' SQL, shared by the RPC procedures and the open API's REST handlers.

use chrono::{DateTime, Utc};
use domain::ids::{ApiTeamId, SubscriptionId, TeamId};
use sqlx::PgConnection;

use super::types::{SubscriptionStatus, UsageHistory, UsagePeriod};
use crate::http::error::ApiError;
use crate::modules::subscriptions::api_teams::Plan;
use crate::modules::subscriptions::metering;

#[derive(sqlx::FromRow)]
pub(crate) struct StatusRow {
    pub(crate) subscription_id: SubscriptionId,
    pub(crate) api_team_id: ApiTeamId,
    pub(crate) team_id: TeamId,
    #[sqlx(flatten)]
    pub(crate) plan: Plan,
    pub(crate) period_start: DateTime<Utc>,
    pub(crate) period_end: DateTime<Utc>,
    pub(crate) usage_count: i64,
    pub(crate) api_access_disabled_at: Option<DateTime<Utc>>,
}

/// The subscription of `api_team_id` now, its period rolled over first if it has ended (a
/// late scheduled task must not show an ended period as current). `None` when the API team
/// has none.
pub async fn load_status(
    conn: &mut PgConnection,
    api_team_id: ApiTeamId,
) -> Result<Option<SubscriptionStatus>, ApiError> {
    metering::roll_over_team(&mut *conn, api_team_id).await?;
    let row: Option<StatusRow> = sqlx::query_as(
        "SELECT s.subscription_id, a.api_team_id, a.team_id,
                p.plan_id, p.name, p.monthly_request_quota, p.requests_per_second,
                s.period_start, s.period_end, s.usage_count, a.api_access_disabled_at
           FROM api_teams a
           JOIN subscriptions s ON s.api_team_id = a.api_team_id
           JOIN plans p ON p.plan_id = s.plan_id
          WHERE a.api_team_id = $1",
    )
    .bind(api_team_id)
    .fetch_optional(&mut *conn)
    .await?;
    Ok(row.map(|row| SubscriptionStatus {
        subscription_id: row.subscription_id,
        api_team_id: row.api_team_id,
        team_id: row.team_id,
        remaining: (row.plan.monthly_request_quota - row.usage_count).max(0),
        plan: row.plan,
        period_start: row.period_start.into(),
        period_end: row.period_end.into(),
        usage_count: row.usage_count,
        api_access_enabled: row.api_access_disabled_at.is_none(),
        api_access_disabled_at: row.api_access_disabled_at.map(Into::into),
    }))
}

/// Closed periods of `api_team_id`, newest first, starting before `before` if given; `limit`
/// is already checked (1..=[`MAX_HISTORY_LIMIT`](super::types::MAX_HISTORY_LIMIT)).
pub async fn load_history(
    conn: &mut PgConnection,
    api_team_id: ApiTeamId,
    before: Option<DateTime<Utc>>,
    limit: i64,
) -> Result<UsageHistory, ApiError> {
    // One more than asked: whether an older page exists.
    let mut items: Vec<UsagePeriod> = sqlx::query_as(
        "SELECT u.plan_id, u.monthly_request_quota, u.usage_count, u.period_start,
                u.period_end, u.closed_at
           FROM subscription_usage_periods u
           JOIN subscriptions s ON s.subscription_id = u.subscription_id
          WHERE s.api_team_id = $1 AND ($2::timestamptz IS NULL OR u.period_start < $2)
          ORDER BY u.period_start DESC
          LIMIT $3",
    )
    .bind(api_team_id)
    .bind(before)
    .bind(limit + 1)
    .fetch_all(&mut *conn)
    .await?;
    let more = i64::try_from(items.len()).unwrap_or(i64::MAX) > limit;
    items.truncate(usize::try_from(limit).unwrap_or(0));
    let next_before = if more {
        // Periods are a month apart: the millisecond cursor never skips one.
        items.last().map(|last| last.period_start.millis())
    } else {
        None
    };
    Ok(UsageHistory { items, next_before })
}

// ---------------------------------------------------------------------------------------
// Procedures
