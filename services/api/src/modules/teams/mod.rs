//! App teams (session-authenticated UI teams): create, rename, list, members and roles,
//! invitations.
//!
//! Rules:
//! - Only active members see a team; to everybody else it does not exist (`NOT_FOUND`, the same
//!   answer as for an unknown id). A member who lacks the role gets `FORBIDDEN`.
//! - Owners can do everything; admins rename, invite members, and move people between
//!   `member` and `admin`, but never touch owners nor make anybody an owner.
//! - A team always keeps an owner while it has members (`LAST_OWNER`, 409). Every procedure
//!   that changes memberships first locks the team row (`FOR UPDATE`), so concurrent demotions
//!   or departures are serialised and cannot leave a team ownerless.
//! - The team row syncs to the team's scope; a membership row syncs to the team's scope and to
//!   the member's own scope. Every change records its changesets (and its event) in the
//!   transaction that makes it.
//!
//! Declared errors: `LAST_OWNER` (409), `ALREADY_MEMBER` (409), `INVITATION_NOT_PENDING` (409),
//! `INVITATION_EXPIRED` (410).

pub mod procedures;
pub mod store;
pub mod types;

use self::procedures::accept_invitation;
use self::procedures::change_role;
use self::procedures::create;
use self::procedures::decline_invitation;
use self::procedures::get;
use self::procedures::invite;
use self::procedures::leave;
use self::procedures::list;
use self::procedures::list_invitations;
use self::procedures::remove_member;
use self::procedures::rename;
use crate::contract::errors;
use crate::http::rpc::RpcRouter;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("teams.create", create)
        .query("teams.list", list)
        .query("teams.get", get)
        .mutation("teams.rename", rename)
        .mutation("teams.invite", invite)
        .errors(&[errors::ALREADY_MEMBER])
        .query("teams.listInvitations", list_invitations)
        .mutation("teams.acceptInvitation", accept_invitation)
        .errors(&[
            errors::INVITATION_NOT_PENDING,
            errors::INVITATION_EXPIRED,
            errors::ALREADY_MEMBER,
        ])
        .mutation("teams.declineInvitation", decline_invitation)
        .errors(&[errors::INVITATION_NOT_PENDING])
        .mutation("teams.changeRole", change_role)
        .errors(&[errors::LAST_OWNER, errors::SESSION_NOT_FRESH])
        .mutation("teams.removeMember", remove_member)
        .errors(&[errors::LAST_OWNER, errors::SESSION_NOT_FRESH])
        .mutation("teams.leave", leave)
        .errors(&[errors::LAST_OWNER])
}
