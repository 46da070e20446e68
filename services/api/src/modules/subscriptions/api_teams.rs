//! API teams: the `teams_api` side of the dual team model. An app team may enable API access;
//! it then has one API team with a plan subscription, API keys (`api_keys`) and an IP
//! allow-list. The app team's roles govern it:
//!
//! - any active member may read (`apiTeams.get`, `apiKeys.list`): nothing they return is a
//!   secret (keys show only their prefix), and members who build against the API need to see
//!   the plan, usage and keys;
//! - owners and admins manage (`apiTeams.enable`, `apiTeams.setIpAllowlist`, `apiKeys.create`,
//!   `apiKeys.revoke`); all four are **sensitive** (a fresh session), as they hand out or take
//!   away access.
//!
//! A team the caller is not an active member of is `NOT_FOUND`, as everywhere. Managing a team
//! whose API access is not enabled is `API_NOT_ENABLED` (409). API teams are not synced to
//! clients.

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use domain::ids::{ApiTeamId, SubscriptionId, TeamId, UserId};
use domain::time::EpochMillis;
use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;

use crate::contract::errors;
use crate::http::error::ApiError;
use crate::http::rpc::{Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::http::validation::Input;
use crate::http::validation::{Issues, item};
use crate::modules::teams::store::caller_role;
use crate::modules::teams::types::Role;
use crate::modules::teams::types::TeamInput;
use crate::procedures::session::{Protected, Sensitive};
use crate::state::AppState;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("apiTeams.enable", enable)
        .errors(&[errors::SESSION_NOT_FRESH])
        .query("apiTeams.get", get)
        .mutation("apiTeams.setIpAllowlist", set_ip_allowlist)
        .errors(&[errors::API_NOT_ENABLED, errors::SESSION_NOT_FRESH])
}

/// The plan a newly enabled API team starts on.
pub const DEFAULT_PLAN_ID: &str = "free";
/// Most networks one allow-list may hold.
pub const MAX_ALLOWLIST_ENTRIES: usize = 100;

// ---------------------------------------------------------------------------------------
// Shared with api_keys

/// Owners and admins manage API access; members only read.
pub fn require_manager(role: Role) -> Result<(), ApiError> {
    if role < Role::Admin {
        return Err(ApiError::forbidden(
            "Only admins and owners can manage a team's API access",
        ));
    }
    Ok(())
}

pub fn api_not_enabled() -> ApiError {
    ApiError::defined(
        "API_NOT_ENABLED",
        StatusCode::CONFLICT,
        "API access is not enabled for this team",
    )
}

/// The team's API team id, if API access is enabled; `lock` takes the row `FOR UPDATE`,
/// which serialises the changes of one API team (allow-list, key limit).
pub async fn api_team_id(
    conn: &mut PgConnection,
    team_id: TeamId,
    lock: bool,
) -> Result<Option<ApiTeamId>, ApiError> {
    let sql = if lock {
        "SELECT api_team_id FROM api_teams WHERE team_id = $1 FOR UPDATE"
    } else {
        "SELECT api_team_id FROM api_teams WHERE team_id = $1"
    };
    Ok(sqlx::query_scalar(sql)
        .bind(team_id)
        .fetch_optional(conn)
        .await?)
}

// ---------------------------------------------------------------------------------------
// Outputs

/// A plan's limits.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Plan {
    /// `free`, `pro`, …: stable ids.
    pub plan_id: String,
    pub name: String,
    /// Requests per metering period (a calendar month).
    pub monthly_request_quota: i64,
    /// Requests per second per key (per api replica).
    pub requests_per_second: i32,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Subscription {
    pub subscription_id: SubscriptionId,
    pub plan_id: String,
    pub period_start: EpochMillis,
    pub period_end: EpochMillis,
    pub usage_count: i64,
}

/// `apiTeams.get` and the answer of the changing procedures.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiTeam {
    pub api_team_id: ApiTeamId,
    pub team_id: TeamId,
    pub enabled_by_user_id: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub plan: Plan,
    pub subscription: Subscription,
    /// false while an owner or admin has switched the team's open API access off
    /// (`subscriptions.disableApiAccess`): its keys are refused with `API_ACCESS_DISABLED`.
    pub api_access_enabled: bool,
    pub api_access_disabled_at: Option<EpochMillis>,
    pub api_access_disabled_by_user_id: Option<UserId>,
    /// CIDRs such as `203.0.113.0/24` or `2001:db8::/32`, IPv4 first, in address order;
    /// empty = every network may use the team's keys.
    pub ip_allowlist: Vec<String>,
}

#[derive(sqlx::FromRow)]
struct ApiTeamRow {
    api_team_id: ApiTeamId,
    team_id: TeamId,
    enabled_by_user_id: UserId,
    created_at: DateTime<Utc>,
    updated_at: DateTime<Utc>,
    api_access_disabled_at: Option<DateTime<Utc>>,
    api_access_disabled_by_user_id: Option<UserId>,
    #[sqlx(flatten)]
    plan: Plan,
    #[sqlx(flatten)]
    subscription: Subscription,
}

async fn load_api_team(
    conn: &mut PgConnection,
    team_id: TeamId,
) -> Result<Option<ApiTeam>, ApiError> {
    let row: Option<ApiTeamRow> = sqlx::query_as(
        "SELECT a.api_team_id, a.team_id, a.enabled_by_user_id, a.created_at, a.updated_at,
                a.api_access_disabled_at, a.api_access_disabled_by_user_id,
                p.plan_id, p.name, p.monthly_request_quota, p.requests_per_second,
                s.subscription_id, s.period_start, s.period_end, s.usage_count
           FROM api_teams a
           JOIN subscriptions s ON s.api_team_id = a.api_team_id
           JOIN plans p ON p.plan_id = s.plan_id
          WHERE a.team_id = $1",
    )
    .bind(team_id)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let ip_allowlist: Vec<String> = sqlx::query_scalar(
        // Qualified: a bare `cidr` in ORDER BY would name the text output column.
        "SELECT r.cidr::text FROM api_team_ip_rules r WHERE r.api_team_id = $1 ORDER BY r.cidr",
    )
    .bind(row.api_team_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Some(ApiTeam {
        api_team_id: row.api_team_id,
        team_id: row.team_id,
        enabled_by_user_id: row.enabled_by_user_id,
        created_at: row.created_at.into(),
        updated_at: row.updated_at.into(),
        plan: row.plan,
        subscription: row.subscription,
        api_access_enabled: row.api_access_disabled_at.is_none(),
        api_access_disabled_at: row.api_access_disabled_at.map(Into::into),
        api_access_disabled_by_user_id: row.api_access_disabled_by_user_id,
        ip_allowlist,
    }))
}

// ---------------------------------------------------------------------------------------
// Procedures

/// `apiTeams.enable {teamId}` (sensitive) → `ApiTeam`. Owners and admins. Creates the API
/// team and its subscription on the free plan (first period: one month from now) in one
/// transaction; enabling an enabled team returns it unchanged.
async fn enable(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<ApiTeam>, ApiError> {
    let mut tx = state.db.begin().await?;
    let role = caller_role(&mut tx, input.team_id, session.user_id).await?;
    require_manager(role)?;
    // ON CONFLICT: two concurrent enables make one API team; the loser sees no row and
    // creates no second subscription.
    let created: Option<ApiTeamId> = sqlx::query_scalar(
        "INSERT INTO api_teams (team_id, enabled_by_user_id) VALUES ($1, $2)
         ON CONFLICT (team_id) DO NOTHING RETURNING api_team_id",
    )
    .bind(input.team_id)
    .bind(session.user_id)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(api_team_id) = created {
        sqlx::query(
            "INSERT INTO subscriptions (api_team_id, plan_id, period_start, period_end)
             VALUES ($1, $2, now(), now() + interval '1 month')",
        )
        .bind(api_team_id)
        .bind(DEFAULT_PLAN_ID)
        .execute(&mut *tx)
        .await?;
    }
    let api_team = load_api_team(&mut tx, input.team_id)
        .await?
        .ok_or_else(|| ApiError::internal("api team vanished after enable"))?;
    tx.commit().await?;
    Ok(Rpc(api_team))
}

/// `apiTeams.get {teamId}` (GET-able) → `ApiTeam`, or `null` when API access is not enabled.
/// Any member.
async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<TeamInput>,
) -> Result<Rpc<Option<ApiTeam>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    caller_role(&mut conn, input.team_id, session.user_id).await?;
    Ok(Rpc(load_api_team(&mut conn, input.team_id).await?))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SetIpAllowlistInput {
    team_id: TeamId,
    #[schemars(length(max = MAX_ALLOWLIST_ENTRIES))]
    cidrs: Vec<String>,
}

impl Input for SetIpAllowlistInput {
    fn check(&self, issues: &mut Issues) {
        issues.array_length("cidrs", self.cidrs.len(), MAX_ALLOWLIST_ENTRIES);
        for (index, cidr) in self.cidrs.iter().enumerate() {
            if let Err(message) = parse_cidr(cidr) {
                issues.format(item("cidrs", index), "cidr", &message);
            }
        }
    }
}

/// A network in CIDR notation (`203.0.113.0/24`, `2001:db8::/32`) or a single address (a /32
/// or /128). Host bits must be zero, as Postgres' `cidr` demands: `10.1.2.3/8` is refused
/// with the network it probably meant, rather than silently widened or narrowed.
pub fn parse_cidr(text: &str) -> Result<IpNet, String> {
    let text = text.trim();
    let network = text
        .parse::<IpNet>()
        .or_else(|_| text.parse::<std::net::IpAddr>().map(IpNet::from))
        .map_err(|_| {
            "Invalid CIDR: expected a network such as 203.0.113.0/24 or 2001:db8::/32, or an IP address"
                .to_owned()
        })?;
    if network.trunc() != network {
        return Err(format!(
            "Invalid CIDR: host bits are set (did you mean {}?)",
            network.trunc()
        ));
    }
    Ok(network)
}

/// `apiTeams.setIpAllowlist {teamId, cidrs}` (sensitive) → `ApiTeam`. Owners and admins.
/// Replaces the allow-list (duplicates collapse; kept entries keep their creation time) and
/// tells every api replica to reload it.
async fn set_ip_allowlist(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<SetIpAllowlistInput>,
) -> Result<Rpc<ApiTeam>, ApiError> {
    let cidrs = input
        .cidrs
        .iter()
        .map(|cidr| parse_cidr(cidr).map(|network| network.to_string()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|message| ApiError::field("cidrs", "invalid_format", message))?;
    let mut tx = state.db.begin().await?;
    let role = caller_role(&mut tx, input.team_id, session.user_id).await?;
    require_manager(role)?;
    let api_team_id = api_team_id(&mut tx, input.team_id, true)
        .await?
        .ok_or_else(api_not_enabled)?;
    sqlx::query(
        "DELETE FROM api_team_ip_rules
          WHERE api_team_id = $1 AND cidr <> ALL($2::text[]::cidr[])",
    )
    .bind(api_team_id)
    .bind(&cidrs)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "INSERT INTO api_team_ip_rules (api_team_id, cidr, created_by_user_id)
         SELECT $1, network, $3 FROM unnest($2::text[]::cidr[]) AS network
         ON CONFLICT (api_team_id, cidr) DO NOTHING",
    )
    .bind(api_team_id)
    .bind(&cidrs)
    .bind(session.user_id)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE api_teams SET updated_at = now() WHERE api_team_id = $1")
        .bind(api_team_id)
        .execute(&mut *tx)
        .await?;
    let api_team = load_api_team(&mut tx, input.team_id)
        .await?
        .ok_or_else(|| ApiError::internal("api team vanished during setIpAllowlist"))?;
    tx.commit().await?;
    state.api_keys.allowlist_changed(api_team_id).await;
    Ok(Rpc(api_team))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cidrs_are_networks_or_addresses_without_host_bits() {
        assert_eq!(
            parse_cidr("203.0.113.0/24").unwrap().to_string(),
            "203.0.113.0/24"
        );
        assert_eq!(
            parse_cidr(" 198.51.100.7 ").unwrap().to_string(),
            "198.51.100.7/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::/32").unwrap().to_string(),
            "2001:db8::/32"
        );
        assert_eq!(
            parse_cidr("2001:db8::1").unwrap().to_string(),
            "2001:db8::1/128"
        );
        assert!(parse_cidr("10.1.2.3/8").unwrap_err().contains("10.0.0.0/8"));
        assert!(parse_cidr("10.0.0.0/33").is_err());
        assert!(parse_cidr("example.com").is_err());
        assert!(parse_cidr("").is_err());
    }
}
