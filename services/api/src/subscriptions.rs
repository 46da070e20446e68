//! Subscriptions: an API team's plan, its metering period and usage, the usage of past periods,
//! plan changes and the switch that disables a team's open API access. The app team's roles
//! govern them, as for `apiTeams`:
//!
//! - anyone signed in may list the plans (`subscriptions.plans`): they are public limits;
//! - any active member may read a team's subscription and its usage history
//!   (`subscriptions.get`, `subscriptions.usageHistory`);
//! - only **owners** change the plan (`subscriptions.changePlan`, **sensitive**): it is what
//!   the team pays for;
//! - owners and admins disable and re-enable API access (`subscriptions.disableApiAccess`,
//!   `subscriptions.enableApiAccess`, **sensitive**), like the rest of the team's API access.
//!
//! Effects (see `metering`): a plan change applies to the next open API request on every
//! replica (the quota and the access switch are read from Postgres in the statement that
//! counts each request; the per-key rate, cached per replica, is reloaded on the broadcast
//! `subscriptionChanged`, or within `open_api::KEY_CONTEXT_TTL` if a replica missed it). The
//! count of the current period is kept across a plan change; a downgrade below it refuses
//! the next requests with `USAGE_EXCEEDED` until the period ends.
//!
//! Every change writes its event through the outbox in its transaction
//! (`subscription.plan_changed`, `subscription.api_access_changed`; metering writes
//! `subscription.period_closed`), ordered by API team.

use axum::extract::State;
use chrono::{DateTime, Utc};
use messages::journal::v1::{SubscriptionApiAccessChanged, SubscriptionPlanChanged};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::api_teams::{Plan, api_not_enabled, api_team_id, caller_role, require_manager};
use crate::contract::errors;
use crate::error::ApiError;
use crate::metering;
use crate::rpc::{Input, NoInput, Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::session::{Protected, Sensitive};
use crate::teams::{Role, TeamInput};

use crate::validation::{EpochMillis, Issues};

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .query("subscriptions.plans", plans)
        .query("subscriptions.get", get)
        .query("subscriptions.usageHistory", usage_history)
        .mutation("subscriptions.changePlan", change_plan)
        .errors(&[errors::API_NOT_ENABLED, errors::SESSION_NOT_FRESH])
        .mutation("subscriptions.disableApiAccess", disable_api_access)
        .errors(&[errors::API_NOT_ENABLED, errors::SESSION_NOT_FRESH])
        .mutation("subscriptions.enableApiAccess", enable_api_access)
        .errors(&[errors::API_NOT_ENABLED, errors::SESSION_NOT_FRESH])
}

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
    pub subscription_id: Uuid,
    pub api_team_id: Uuid,
    pub team_id: Uuid,
    pub plan: Plan,
    /// Epoch milliseconds: the current metering period, `[periodStart, periodEnd)`.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub period_start: DateTime<Utc>,
    /// Epoch milliseconds: when the count starts again.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub period_end: DateTime<Utc>,
    /// Requests counted in the current period (over the REST API: this request included).
    pub usage_count: i64,
    /// What the plan still allows in this period (0 when a downgrade left the count above it).
    pub remaining: i64,
    /// false while API access is disabled: every request with the team's keys is refused.
    pub api_access_enabled: bool,
    /// Epoch milliseconds; set while API access is disabled.
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    #[schema(value_type = Option<i64>)]
    pub api_access_disabled_at: Option<DateTime<Utc>>,
}

#[derive(sqlx::FromRow)]
struct StatusRow {
    subscription_id: Uuid,
    api_team_id: Uuid,
    team_id: Uuid,
    #[sqlx(flatten)]
    plan: Plan,
    period_start: DateTime<Utc>,
    period_end: DateTime<Utc>,
    usage_count: i64,
    api_access_disabled_at: Option<DateTime<Utc>>,
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
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub period_start: DateTime<Utc>,
    /// Epoch milliseconds.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub period_end: DateTime<Utc>,
    /// Epoch milliseconds: when the period was rolled over and recorded.
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    #[schema(value_type = i64)]
    pub closed_at: DateTime<Utc>,
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

/// The subscription of `api_team_id` now, its period rolled over first if it has ended (a
/// late scheduled task must not show an ended period as current). `None` when the API team
/// has none.
pub async fn load_status(
    conn: &mut PgConnection,
    api_team_id: Uuid,
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
        period_start: row.period_start,
        period_end: row.period_end,
        usage_count: row.usage_count,
        api_access_enabled: row.api_access_disabled_at.is_none(),
        api_access_disabled_at: row.api_access_disabled_at,
    }))
}

/// Closed periods of `api_team_id`, newest first, starting before `before` if given; `limit`
/// is already checked (1..=[`MAX_HISTORY_LIMIT`]).
pub async fn load_history(
    conn: &mut PgConnection,
    api_team_id: Uuid,
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
        items
            .last()
            .map(|last| last.period_start.timestamp_millis())
    } else {
        None
    };
    Ok(UsageHistory { items, next_before })
}

// ---------------------------------------------------------------------------------------
// Procedures

/// `subscriptions.plans` (GET-able, no input) → `[Plan]`, smallest quota first. Anyone
/// signed in.
async fn plans(
    State(state): State<AppState>,
    Protected(_session): Protected,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<Vec<Plan>>, ApiError> {
    let plans: Vec<Plan> = sqlx::query_as(
        "SELECT plan_id, name, monthly_request_quota, requests_per_second FROM plans
          ORDER BY monthly_request_quota, plan_id",
    )
    .fetch_all(&state.db)
    .await?;
    Ok(Rpc(plans))
}

/// `subscriptions.get {teamId}` (GET-able) → `SubscriptionStatus`, or `null` when API access
/// was never enabled. Any member.
async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<TeamInput>,
) -> Result<Rpc<Option<SubscriptionStatus>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    caller_role(&mut conn, input.team_id, session.user_id).await?;
    let Some(api_team_id) = api_team_id(&mut conn, input.team_id, false).await? else {
        return Ok(Rpc(None));
    };
    Ok(Rpc(load_status(&mut conn, api_team_id).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UsageHistoryInput {
    team_id: Uuid,
    #[serde(default)]
    #[schemars(range(min = 1, max = MAX_HISTORY_LIMIT))]
    limit: Option<i64>,
    /// Epoch milliseconds: only periods that started before (the previous page's
    /// `nextBefore`).
    #[serde(default)]
    before: Option<EpochMillis>,
}

impl Input for UsageHistoryInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(limit) = self.limit {
            issues.number_range("limit", limit, 1, MAX_HISTORY_LIMIT);
        }
    }
}

/// `subscriptions.usageHistory {teamId, limit?, before?}` (GET-able) → `{items, nextBefore}`:
/// the closed periods with their counts, newest first; `{items: []}` when API access was
/// never enabled. Any member.
async fn usage_history(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<UsageHistoryInput>,
) -> Result<Rpc<UsageHistory>, ApiError> {
    let mut conn = state.db.acquire().await?;
    caller_role(&mut conn, input.team_id, session.user_id).await?;
    let Some(api_team_id) = api_team_id(&mut conn, input.team_id, false).await? else {
        return Ok(Rpc(UsageHistory {
            items: Vec::new(),
            next_before: None,
        }));
    };
    // A period that ended but was not rolled over yet belongs in the history already.
    metering::roll_over_team(&mut conn, api_team_id).await?;
    let history = load_history(
        &mut conn,
        api_team_id,
        input.before.map(EpochMillis::at),
        input.limit.unwrap_or(DEFAULT_HISTORY_LIMIT),
    )
    .await?;
    Ok(Rpc(history))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePlanInput {
    team_id: Uuid,
    #[schemars(length(min = 1, max = PLAN_ID_MAX_CHARS))]
    plan_id: String,
}

impl Input for ChangePlanInput {
    fn check(&self, issues: &mut Issues) {
        issues.string_length("planId", &self.plan_id, 1, PLAN_ID_MAX_CHARS);
    }
}

/// `subscriptions.changePlan {teamId, planId}` (sensitive) → `SubscriptionStatus`. Owners
/// only. The new plan's limits apply to the next request; the period and its count stay (an
/// ended period is rolled over first, so it closes on the old plan). Changing to the current
/// plan returns the subscription unchanged, without an event.
async fn change_plan(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<ChangePlanInput>,
) -> Result<Rpc<SubscriptionStatus>, ApiError> {
    let mut tx = state.db.begin().await?;
    let role = caller_role(&mut tx, input.team_id, session.user_id).await?;
    if role != Role::Owner {
        return Err(ApiError::forbidden(
            "Only owners can change the team's plan",
        ));
    }
    // Locked: plan changes and access switches of one API team happen one at a time.
    let api_team_id = api_team_id(&mut tx, input.team_id, true)
        .await?
        .ok_or_else(api_not_enabled)?;
    let plan: Plan = sqlx::query_as(
        "SELECT plan_id, name, monthly_request_quota, requests_per_second FROM plans
          WHERE plan_id = $1",
    )
    .bind(&input.plan_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| {
        ApiError::field(
            "planId",
            "invalid_value",
            format!(
                "Unknown plan \"{}\": subscriptions.plans lists them",
                input.plan_id
            ),
        )
    })?;
    metering::roll_over_team(&mut tx, api_team_id).await?;
    let (subscription_id, previous_plan_id): (Uuid, String) = sqlx::query_as(
        "SELECT subscription_id, plan_id FROM subscriptions WHERE api_team_id = $1 FOR UPDATE",
    )
    .bind(api_team_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::internal("an api team without a subscription"))?;
    let changed = previous_plan_id != plan.plan_id;
    if changed {
        let (period_start, period_end, usage_count, changed_at): (
            DateTime<Utc>,
            DateTime<Utc>,
            i64,
            DateTime<Utc>,
        ) = sqlx::query_as(
            "UPDATE subscriptions SET plan_id = $2, updated_at = now()
              WHERE subscription_id = $1
              RETURNING period_start, period_end, usage_count, updated_at",
        )
        .bind(subscription_id)
        .bind(&plan.plan_id)
        .fetch_one(&mut *tx)
        .await?;
        bus::outbox::emit_ordered(
            &mut tx,
            &SubscriptionPlanChanged {
                subscription_id: subscription_id.to_string(),
                api_team_id: api_team_id.to_string(),
                team_id: input.team_id.to_string(),
                previous_plan_id: previous_plan_id.clone(),
                plan_id: plan.plan_id.clone(),
                changed_by_user_id: session.user_id.to_string(),
                changed_at_ms: changed_at.timestamp_millis(),
                period_start_ms: period_start.timestamp_millis(),
                period_end_ms: period_end.timestamp_millis(),
                usage_count,
                monthly_request_quota: plan.monthly_request_quota,
                requests_per_second: plan.requests_per_second,
            },
            &api_team_id.to_string(),
        )
        .await?;
    }
    let status = load_status(&mut tx, api_team_id)
        .await?
        .ok_or_else(|| ApiError::internal("subscription vanished during changePlan"))?;
    tx.commit().await?;
    if changed {
        // Every replica drops the plan rate it cached for the team's keys.
        state.api_keys.subscription_changed(api_team_id).await;
        tracing::info!(%api_team_id, from = %previous_plan_id, to = %plan.plan_id, "subscription plan changed");
    }
    Ok(Rpc(status))
}

/// `subscriptions.disableApiAccess {teamId}` (sensitive) → `SubscriptionStatus`. Owners and
/// admins. From the commit on, every open API request with the team's keys is refused with
/// `403 API_ACCESS_DISABLED` on every replica (the switch is read in the statement that counts
/// each request); keys, allow-list and plan are kept. Disabling a disabled team returns it
/// unchanged.
async fn disable_api_access(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<SubscriptionStatus>, ApiError> {
    set_api_access(&state, session.user_id, input.team_id, false).await
}

/// `subscriptions.enableApiAccess {teamId}` (sensitive) → `SubscriptionStatus`. Owners and
/// admins. Lifts `disableApiAccess`: the team's keys work again at once.
async fn enable_api_access(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<SubscriptionStatus>, ApiError> {
    set_api_access(&state, session.user_id, input.team_id, true).await
}

async fn set_api_access(
    state: &AppState,
    user_id: Uuid,
    team_id: Uuid,
    enabled: bool,
) -> Result<Rpc<SubscriptionStatus>, ApiError> {
    let mut tx = state.db.begin().await?;
    require_manager(caller_role(&mut tx, team_id, user_id).await?)?;
    let api_team_id = api_team_id(&mut tx, team_id, true)
        .await?
        .ok_or_else(api_not_enabled)?;
    // Only a real change is written (and announced).
    let sql = if enabled {
        "UPDATE api_teams
            SET api_access_disabled_at = NULL, api_access_disabled_by_user_id = NULL,
                updated_at = now()
          WHERE api_team_id = $1 AND api_access_disabled_at IS NOT NULL
         RETURNING updated_at"
    } else {
        "UPDATE api_teams
            SET api_access_disabled_at = now(), api_access_disabled_by_user_id = $2,
                updated_at = now()
          WHERE api_team_id = $1 AND api_access_disabled_at IS NULL
         RETURNING updated_at"
    };
    let mut query = sqlx::query_scalar(sql).bind(api_team_id);
    if !enabled {
        query = query.bind(user_id);
    }
    let changed_at: Option<DateTime<Utc>> = query.fetch_optional(&mut *tx).await?;
    if let Some(changed_at) = changed_at {
        bus::outbox::emit_ordered(
            &mut tx,
            &SubscriptionApiAccessChanged {
                api_team_id: api_team_id.to_string(),
                team_id: team_id.to_string(),
                enabled,
                changed_by_user_id: user_id.to_string(),
                changed_at_ms: changed_at.timestamp_millis(),
            },
            &api_team_id.to_string(),
        )
        .await?;
    }
    let status = load_status(&mut tx, api_team_id)
        .await?
        .ok_or_else(|| ApiError::internal("subscription vanished during an access change"))?;
    tx.commit().await?;
    if changed_at.is_some() {
        tracing::info!(%api_team_id, enabled, "api access switched");
    }
    Ok(Rpc(status))
}
