//! Teams' SQL: membership lookups other features use, locking, joining and leaving.

use axum::http::StatusCode;
use domain::ids::{TeamId, TeamInvitationId, UserId};
use messages::journal::v1::{TeamMemberJoined, TeamMemberLeft};
use sqlx::PgConnection;

use super::types::{InvitationStatus, Role, Team, TeamInvitation, TeamMember};
use crate::http::error::ApiError;
use sync_protocol::changes::{Op, Scope};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// The live teams `$1` is an active member of (the same rule as [`member_role`]), for
/// `team_id IN (…)` in visibility checks.
pub const MY_TEAMS_SQL: &str =
    "SELECT m.team_id FROM team_members m JOIN teams t ON t.team_id = m.team_id
                         WHERE m.user_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL";

/// The caller's role in a live team, or `None` when they are not an active member (or the
/// team is deleted). Use it for every team permission check.
pub async fn member_role(
    conn: &mut PgConnection,
    team_id: TeamId,
    user_id: UserId,
) -> Result<Option<Role>, ApiError> {
    let role: Option<String> = sqlx::query_scalar(
        "SELECT m.role FROM team_members m JOIN teams t ON t.team_id = m.team_id
          WHERE m.team_id = $1 AND m.user_id = $2 AND m.deleted_at IS NULL
            AND t.deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    Ok(role.as_deref().and_then(Role::parse))
}

/// The caller's role in a live team; `NOT_FOUND` when they are not an active member (a team
/// one is not in does not exist for them).
pub async fn caller_role(
    conn: &mut PgConnection,
    team_id: TeamId,
    user_id: UserId,
) -> Result<Role, ApiError> {
    member_role(conn, team_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Team"))
}

/// Like [`caller_role`], and `FORBIDDEN` (saying `why`) below `minimum`.
pub async fn require_role(
    conn: &mut PgConnection,
    team_id: TeamId,
    user_id: UserId,
    minimum: Role,
    why: &'static str,
) -> Result<Role, ApiError> {
    let role = caller_role(conn, team_id, user_id).await?;
    if role < minimum {
        return Err(ApiError::forbidden(why));
    }
    Ok(role)
}

/// Account deletion: end every membership of `user_id` (in the caller's transaction), recording the
/// membership tombstones (to the team's and the user's scope) and a `team.member_left`
/// (`left`) per team. A team where the user was the only member is soft-deleted with its pending
/// invitations revoked. The teams are locked (in id order) and the last-owner rule is checked again
/// under the lock: a team that would be left ownerless with members answers `LAST_OWNER`. Returns
/// the teams deleted, whose API keys the caller must invalidate once the transaction commits
/// ([`crate::modules::subscriptions::api_keys::KeyVerifier::team_deleted`]).
pub async fn leave_all_teams(
    tx: &mut SyncedTx<'_>,
    user_id: UserId,
) -> Result<Vec<TeamId>, ApiError> {
    let memberships: Vec<(TeamId, String)> = sqlx::query_as(
        "SELECT t.team_id, m.role FROM teams t
           JOIN team_members m ON m.team_id = t.team_id
          WHERE m.user_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL
          ORDER BY t.team_id
            FOR UPDATE OF t",
    )
    .bind(user_id)
    .fetch_all(&mut **tx)
    .await?;
    let mut deleted_teams = Vec::new();
    for (team_id, role) in memberships {
        let role = Role::try_from(role).map_err(ApiError::internal)?;
        let (_, team_deleted) = end_membership(tx, team_id, user_id, role, None).await?;
        if team_deleted {
            deleted_teams.push(team_id);
        }
    }
    Ok(deleted_teams)
}

// ---------------------------------------------------------------------------------------
// Rows and outputs

pub(crate) const TEAM_COLUMNS: &str =
    "team_id, name, created_by_user_id, created_at, updated_at, deleted_at, version";

pub(crate) const MEMBER_COLUMNS: &str =
    "team_id, user_id, role, created_at, updated_at, deleted_at, version";

pub(crate) const INVITATION_SELECT: &str =
    "SELECT i.team_invitation_id, i.team_id, t.name AS team_name, i.email, i.role,
        i.invited_by_user_id, u.name AS invited_by_name, i.status, i.created_at,
        i.expires_at, i.responded_at
   FROM team_invitations i
   JOIN teams t ON t.team_id = i.team_id
   JOIN users u ON u.user_id = i.invited_by_user_id";

pub(crate) async fn load_invitation(
    conn: &mut PgConnection,
    team_invitation_id: TeamInvitationId,
) -> Result<TeamInvitation, ApiError> {
    sqlx::query_as(&format!(
        "{INVITATION_SELECT} WHERE i.team_invitation_id = $1"
    ))
    .bind(team_invitation_id)
    .fetch_optional(conn)
    .await?
    .ok_or_else(|| ApiError::not_found("Invitation"))
}

// ---------------------------------------------------------------------------------------
// Shared steps

pub(crate) fn last_owner(message: &str) -> ApiError {
    ApiError::defined("LAST_OWNER", StatusCode::CONFLICT, message)
}

/// Lock the live team row and return it with the caller's role; a team the caller is not an
/// active member of is `NOT_FOUND`. Every membership change starts here, so changes to one
/// team are serialised.
pub(crate) async fn lock_team(
    conn: &mut PgConnection,
    team_id: TeamId,
    user_id: UserId,
) -> Result<(Team, Role), ApiError> {
    let team: Team = sqlx::query_as(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE team_id = $1 AND deleted_at IS NULL FOR UPDATE"
    ))
    .bind(team_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("Team"))?;
    let role = caller_role(conn, team_id, user_id).await?;
    Ok((team, role))
}

/// Active members other than `user_id`: `(owners, everyone)`.
pub(crate) async fn other_members(
    conn: &mut PgConnection,
    team_id: TeamId,
    user_id: UserId,
) -> Result<(i64, i64), ApiError> {
    let counts: (i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE role = 'owner'), count(*) FROM team_members
          WHERE team_id = $1 AND user_id <> $2 AND deleted_at IS NULL",
    )
    .bind(team_id)
    .bind(user_id)
    .fetch_one(conn)
    .await?;
    Ok(counts)
}

/// Create the membership, or revive a soft-deleted one, with `role` (the team is locked).
pub(crate) async fn join(
    tx: &mut SyncedTx<'_>,
    team_id: TeamId,
    user_id: UserId,
    role: Role,
) -> Result<TeamMember, ApiError> {
    let member: TeamMember = sqlx::query_as(&format!(
        "INSERT INTO team_members (team_id, user_id, role) VALUES ($1, $2, $3)
         ON CONFLICT (team_id, user_id) DO UPDATE
            SET role = EXCLUDED.role, deleted_at = NULL, created_at = now(),
                updated_at = now(), version = team_members.version + 1
          WHERE team_members.deleted_at IS NOT NULL
         RETURNING {MEMBER_COLUMNS}"
    ))
    .bind(team_id)
    .bind(user_id)
    .bind(role.as_str())
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| {
        ApiError::defined(
            "ALREADY_MEMBER",
            StatusCode::CONFLICT,
            "Already a member of this team",
        )
    })?;
    let op = if member.version == 1 {
        Op::Insert
    } else {
        Op::Update
    };
    tx.record(&member.scopes(), op, &member)?;
    tx.emit(&TeamMemberJoined {
        team_id: team_id.to_string(),
        user_id: user_id.to_string(),
        role: role.as_str().to_owned(),
    });
    Ok(member)
}

/// End `user_id`'s membership (whose current role is `role`) in the locked team:
/// `removed_by` is `None` when they leave on their own. The last owner cannot go while others
/// remain (`LAST_OWNER`); the last member takes the team with them (the team is soft-deleted
/// and its pending invitations revoked). Returns the tombstone and whether the team was
/// deleted.
pub(crate) async fn end_membership(
    tx: &mut SyncedTx<'_>,
    team_id: TeamId,
    user_id: UserId,
    role: Role,
    removed_by: Option<UserId>,
) -> Result<(TeamMember, bool), ApiError> {
    let (other_owners, others) = other_members(tx, team_id, user_id).await?;
    if role == Role::Owner && other_owners == 0 && others > 0 {
        return Err(last_owner(
            "The last owner cannot leave a team that has other members: make someone else an owner first",
        ));
    }
    let member: TeamMember = sqlx::query_as(&format!(
        "UPDATE team_members SET deleted_at = now(), updated_at = now(), version = version + 1
          WHERE team_id = $1 AND user_id = $2 AND deleted_at IS NULL
          RETURNING {MEMBER_COLUMNS}"
    ))
    .bind(team_id)
    .bind(user_id)
    .fetch_optional(&mut **tx)
    .await?
    .ok_or_else(|| ApiError::not_found("Member"))?;
    tx.record(&member.scopes(), Op::Delete, &member)?;
    let team_deleted = others == 0;
    if team_deleted {
        let team: Team = sqlx::query_as(&format!(
            "UPDATE teams SET deleted_at = now(), updated_at = now(), version = version + 1
              WHERE team_id = $1 RETURNING {TEAM_COLUMNS}"
        ))
        .bind(team_id)
        .fetch_one(&mut **tx)
        .await?;
        tx.record(&[Scope::Team(team_id)], Op::Delete, &team)?;
        sqlx::query(
            "UPDATE team_invitations SET status = 'revoked', responded_at = now()
              WHERE team_id = $1 AND status = 'pending'",
        )
        .bind(team_id)
        .execute(&mut **tx)
        .await?;
    }
    tx.emit(&TeamMemberLeft {
        team_id: team_id.to_string(),
        user_id: user_id.to_string(),
        reason: if removed_by.is_some() {
            "removed"
        } else {
            "left"
        }
        .to_owned(),
        removed_by_user_id: removed_by.map(|id| id.to_string()).unwrap_or_default(),
    });
    Ok((member, team_deleted))
}

/// The caller's (lowercased) address, which must be verified: an invitation is for whoever
/// owns the address, and anybody can create an account under an address they do not own
/// (e.g. a Google account whose email Google has not verified).
pub(crate) async fn verified_caller_email(
    conn: &mut PgConnection,
    user_id: UserId,
) -> Result<String, ApiError> {
    let caller: Option<(String, bool)> = sqlx::query_as(
        "SELECT lower(email), email_verified FROM users WHERE user_id = $1 AND deleted_at IS NULL",
    )
    .bind(user_id)
    .fetch_optional(conn)
    .await?;
    match caller {
        None => Err(ApiError::not_found("User")),
        Some((_, false)) => Err(ApiError::forbidden(
            "Your email address is not verified: invitations are for verified addresses only",
        )),
        Some((email, true)) => Ok(email),
    }
}

/// An invitation addressed to the caller, locked, after its team (lock order: team, then
/// invitation, as in `teams.invite`). Anybody else's invitation is `NOT_FOUND`.
pub(crate) async fn lock_my_invitation(
    conn: &mut PgConnection,
    team_invitation_id: TeamInvitationId,
    user_id: UserId,
) -> Result<TeamInvitation, ApiError> {
    let email = verified_caller_email(&mut *conn, user_id).await?;
    let team_id: TeamId = sqlx::query_scalar(
        "SELECT team_id FROM team_invitations
          WHERE team_invitation_id = $1 AND lower(email) = $2",
    )
    .bind(team_invitation_id)
    .bind(&email)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("Invitation"))?;
    sqlx::query("SELECT 1 FROM teams WHERE team_id = $1 FOR UPDATE")
        .bind(team_id)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT 1 FROM team_invitations WHERE team_invitation_id = $1 FOR UPDATE")
        .bind(team_invitation_id)
        .execute(&mut *conn)
        .await?;
    load_invitation(conn, team_invitation_id).await
}

pub(crate) fn ensure_pending(invitation: &TeamInvitation) -> Result<(), ApiError> {
    if invitation.status != InvitationStatus::Pending {
        let status = match invitation.status {
            InvitationStatus::Accepted => "accepted",
            InvitationStatus::Declined => "declined",
            InvitationStatus::Revoked | InvitationStatus::Pending => "revoked",
        };
        return Err(ApiError::defined(
            "INVITATION_NOT_PENDING",
            StatusCode::CONFLICT,
            format!("This invitation was already {status}"),
        ));
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------
// Procedures
