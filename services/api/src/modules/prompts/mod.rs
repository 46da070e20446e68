//! Journaling prompts owned by a user or a team, optionally scheduled:
//! `prompts.create|list|update|delete|today`.
//!
//! - A personal prompt is seen and changed by its owner; a team prompt is seen by every active
//!   member and created or changed by the team's admins and owners (members get `FORBIDDEN`,
//!   everybody else `NOT_FOUND`).
//! - Every write records the prompt's changeset (owner's or team's scope) in its transaction.
//!   Prompts emit no events.
//! - A deleted prompt cannot be updated (`409 PROMPT_DELETED`); deleting it again answers it
//!   unchanged.
//!
//! `prompts.today` — the prompt of the caller's day `D` (`date`, or today in the caller's
//! `users.timezone`). The caller's day is the interval `[D 00:00, D+1 00:00)` in the caller's
//! zone. A scheduled prompt occurs at its `time` in its own `timezone` on every local date of
//! that zone whose ISO weekday is in `weekdays`; it is due on `D` when one of its occurrences
//! falls in the caller's day (so for a caller in the schedule's zone: when `D`'s weekday is
//! scheduled). Of the due prompts, the one whose occurrence comes first wins (ties: oldest
//! prompt, then id). Without a due prompt, one of the visible unscheduled prompts is picked,
//! ordered by id, at index `days(D) mod count` (stable for the day, rotating day by day).
//! Otherwise `prompt: null`.

pub mod procedures;
pub mod rest;
pub mod schedule;
pub mod store;
#[cfg(test)]
mod tests;
pub mod types;

use self::procedures::create;
use self::procedures::delete;
use self::procedures::list;
use self::procedures::today;
use self::procedures::update;
use crate::contract::errors;
use crate::http::error::ApiError;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("prompts.create", create)
        .query("prompts.list", list)
        .mutation("prompts.update", update)
        .errors(&[errors::EDIT_CONFLICT, errors::PROMPT_DELETED])
        .mutation("prompts.delete", delete)
        .query("prompts.today", today)
}
