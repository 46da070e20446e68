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
//! Effects (see `metering`): a plan change applies to the next open API request on every replica
//! (the quota and the access switch are read from Postgres in the statement that counts each
//! request; the per-key rate, cached per replica, is reloaded on the broadcast
//! `subscriptionChanged`, or within `procedures::api_key::state::KEY_CONTEXT_TTL` if a replica
//! missed it). The count of the current period is kept across a plan change; a downgrade below it
//! refuses the next requests with `USAGE_EXCEEDED` until the period ends.
//!
//! Every change writes its event through the outbox in its transaction
//! (`subscription.plan_changed`, `subscription.api_access_changed`; metering writes
//! `subscription.period_closed`), ordered by API team.

pub mod api_keys;
pub mod api_teams;
pub mod metering;
pub mod procedures;
pub mod rest;
pub mod store;
pub mod types;

use self::procedures::{
    change_plan, disable_api_access, enable_api_access, get, plans, usage_history,
};
use crate::contract::errors;
use crate::http::rpc::RpcRouter;

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
