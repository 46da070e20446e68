//! The `subscriptions.*` procedures.

use axum::extract::State;
use chrono::{DateTime, Utc};
use domain::ids::{SubscriptionId, TeamId, UserId};
use messages::journal::v1::{SubscriptionApiAccessChanged, SubscriptionPlanChanged};

use super::store::{load_history, load_status};
use super::types::{
    ChangePlanInput, DEFAULT_HISTORY_LIMIT, SubscriptionStatus, UsageHistory, UsageHistoryInput,
};
use crate::http::error::ApiError;
use crate::http::rpc::{NoInput, Rpc, RpcInput, RpcQuery};
use crate::http::validation::EpochMillis;
use crate::modules::subscriptions::api_teams::{
    Plan, api_not_enabled, api_team_id, require_manager,
};
use crate::modules::subscriptions::metering;
use crate::modules::teams::store::caller_role;
use crate::modules::teams::types::{Role, TeamInput};
use crate::procedures::session::{Protected, Sensitive};
use crate::state::AppState;

/// `subscriptions.plans` (GET-able, no input) → `[Plan]`, smallest quota first. Anyone
/// signed in.
pub(crate) async fn plans(
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
pub(crate) async fn get(
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

/// `subscriptions.usageHistory {teamId, limit?, before?}` (GET-able) → `{items, nextBefore}`:
/// the closed periods with their counts, newest first; `{items: []}` when API access was
/// never enabled. Any member.
pub(crate) async fn usage_history(
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

/// `subscriptions.changePlan {teamId, planId}` (sensitive) → `SubscriptionStatus`. Owners
/// only. The new plan's limits apply to the next request; the period and its count stay (an
/// ended period is rolled over first, so it closes on the old plan). Changing to the current
/// plan returns the subscription unchanged, without an event.
pub(crate) async fn change_plan(
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
    let (subscription_id, previous_plan_id): (SubscriptionId, String) = sqlx::query_as(
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
pub(crate) async fn disable_api_access(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<SubscriptionStatus>, ApiError> {
    set_api_access(&state, session.user_id, input.team_id, false).await
}

/// `subscriptions.enableApiAccess {teamId}` (sensitive) → `SubscriptionStatus`. Owners and
/// admins. Lifts `disableApiAccess`: the team's keys work again at once.
pub(crate) async fn enable_api_access(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<SubscriptionStatus>, ApiError> {
    set_api_access(&state, session.user_id, input.team_id, true).await
}

async fn set_api_access(
    state: &AppState,
    user_id: UserId,
    team_id: TeamId,
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
