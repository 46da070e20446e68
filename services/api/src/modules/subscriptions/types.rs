//! A subscription, its usage periods and the procedures' inputs.

use domain::ids::{ApiTeamId, SubscriptionId, TeamId};
use serde::{Deserialize, Serialize};

use crate::http::validation::Input;
use crate::http::validation::{EpochMillis, Issues};
use crate::modules::subscriptions::api_teams::Plan;

/// Periods one `usageHistory` page holds by default, and at most.
pub const DEFAULT_HISTORY_LIMIT: i64 = 12;
pub const MAX_HISTORY_LIMIT: i64 = 100;
/// The longest plan id `subscriptions.changePlan` reads (longer ones cannot exist).
pub const PLAN_ID_MAX_CHARS: usize = 100;

// ---------------------------------------------------------------------------------------
// Outputs

/// A team's subscription now: its plan, the current period and what it used.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    pub subscription_id: SubscriptionId,
    pub api_team_id: ApiTeamId,
    pub team_id: TeamId,
    pub plan: Plan,
    /// Epoch milliseconds: the current metering period, `[periodStart, periodEnd)`.
    pub period_start: EpochMillis,
    /// Epoch milliseconds: when the count starts again.
    pub period_end: EpochMillis,
    /// Requests counted in the current period (over the REST API: this request included).
    pub usage_count: i64,
    /// What the plan still allows in this period (0 when a downgrade left the count above it).
    pub remaining: i64,
    /// false while API access is disabled: every request with the team's keys is refused.
    pub api_access_enabled: bool,
    /// Epoch milliseconds; set while API access is disabled.
    pub api_access_disabled_at: Option<EpochMillis>,
}

/// One closed metering period of the usage history.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsagePeriod {
    /// The plan in force when the period closed.
    pub plan_id: String,
    /// That plan's quota.
    pub monthly_request_quota: i64,
    /// Requests counted in the period.
    pub usage_count: i64,
    /// Epoch milliseconds.
    pub period_start: EpochMillis,
    /// Epoch milliseconds.
    pub period_end: EpochMillis,
    /// Epoch milliseconds: when the period was rolled over and recorded.
    pub closed_at: EpochMillis,
}

/// A page of the usage history, newest period first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageHistory {
    pub items: Vec<UsagePeriod>,
    /// Pass as `before` for the next (older) page; null on the last page.
    pub next_before: Option<i64>,
}

// ---------------------------------------------------------------------------------------
// Shared with the REST endpoints

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageHistoryInput {
    pub(crate) team_id: TeamId,
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_HISTORY_LIMIT))]
    pub(crate) limit: Option<i64>,
    /// Epoch milliseconds: only periods that started before (the previous page's
    /// `nextBefore`).
    #[serde(default)]
    pub(crate) before: Option<EpochMillis>,
}

impl Input for UsageHistoryInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(limit) = self.limit {
            issues.number_range("limit", limit, 1, MAX_HISTORY_LIMIT);
        }
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePlanInput {
    pub(crate) team_id: TeamId,
    #[schemars(length(min = 1, max = PLAN_ID_MAX_CHARS))]
    pub(crate) plan_id: String,
}

impl Input for ChangePlanInput {
    fn check(&self, issues: &mut Issues) {
        issues.string_length("planId", &self.plan_id, 1, PLAN_ID_MAX_CHARS);
    }
}
