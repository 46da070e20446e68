//! The `teams.*` procedures.

use axum::extract::State;
use axum::http::StatusCode;
use domain::ids::TeamInvitationId;
use messages::journal::v1::TeamInvitationCreated;

use super::store::{
    caller_role, end_membership, ensure_pending, join, last_owner, load_invitation,
    lock_my_invitation, lock_team, member_role, other_members, verified_caller_email,
};
use super::types::{
    ChangeRoleInput, CreateInput, InvitationInput, InviteInput, Left, MemberInput, MemberProfile,
    RenameInput, Role, Team, TeamDetails, TeamInput, TeamInvitation, TeamMember, TeamWithRole,
};
use crate::http::error::ApiError;
use crate::http::rpc::{NoInput, Rpc, RpcInput, RpcQuery};
use crate::modules::teams::store::INVITATION_SELECT;
use crate::modules::teams::store::MEMBER_COLUMNS;
use crate::modules::teams::store::TEAM_COLUMNS;
use crate::modules::teams::types::INVITATION_DAYS;
use crate::procedures::session::{Protected, require_fresh};
use crate::state::AppState;
use sync_protocol::changes::{Op, Scope};
use sync_protocol::synced_tx::{SyncedRecorder, SyncedTx};

/// `teams.create {name}` → the team with the caller's role (`owner`). The team row, the
/// creator's membership, their changesets and `team.member_joined` in one transaction.
pub(crate) async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<CreateInput>,
) -> Result<Rpc<TeamWithRole>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let team: Team = sqlx::query_as(&format!(
        "INSERT INTO teams (name, created_by_user_id) VALUES ($1, $2) RETURNING {TEAM_COLUMNS}"
    ))
    .bind(input.name.trim())
    .bind(session.user_id)
    .fetch_one(&mut *tx)
    .await?;
    tx.record(&[Scope::Team(team.team_id)], Op::Insert, &team)?;
    join(&mut tx, team.team_id, session.user_id, Role::Owner).await?;
    tx.commit().await?;
    Ok(Rpc(TeamWithRole {
        team,
        role: Role::Owner,
    }))
}

/// `teams.list` (GET-able, no input) → the caller's active teams with their role, by name.
pub(crate) async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<Vec<TeamWithRole>>, ApiError> {
    let teams: Vec<TeamWithRole> = sqlx::query_as(
        "SELECT t.team_id, t.name, t.created_by_user_id, t.created_at, t.updated_at,
                t.deleted_at, t.version, m.role
           FROM teams t JOIN team_members m ON m.team_id = t.team_id
          WHERE m.user_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL
          ORDER BY lower(t.name), t.created_at, t.team_id",
    )
    .bind(session.user_id)
    .fetch_all(&state.db)
    .await?;
    Ok(Rpc(teams))
}

/// `teams.get {teamId}` (GET-able) → the team, the caller's role and the members (owners
/// first, then by joining time). Members only.
pub(crate) async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<TeamInput>,
) -> Result<Rpc<TeamDetails>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let role = caller_role(&mut conn, input.team_id, session.user_id).await?;
    let team: Team = sqlx::query_as(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE team_id = $1 AND deleted_at IS NULL"
    ))
    .bind(input.team_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("Team"))?;
    let members: Vec<MemberProfile> = sqlx::query_as(
        "SELECT m.user_id, u.name, u.email, u.avatar_url, m.role, m.created_at AS joined_at
           FROM team_members m JOIN users u ON u.user_id = m.user_id
          WHERE m.team_id = $1 AND m.deleted_at IS NULL
          ORDER BY CASE m.role WHEN 'owner' THEN 0 WHEN 'admin' THEN 1 ELSE 2 END,
                   m.created_at, m.user_id",
    )
    .bind(input.team_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Rpc(TeamDetails {
        team,
        role,
        members,
    }))
}

/// `teams.rename {teamId, name}` → the team. Admins and owners.
pub(crate) async fn rename(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<RenameInput>,
) -> Result<Rpc<Team>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let (_, role) = lock_team(&mut tx, input.team_id, session.user_id).await?;
    if role < Role::Admin {
        return Err(ApiError::forbidden(
            "Only admins and owners can rename a team",
        ));
    }
    let team: Team = sqlx::query_as(&format!(
        "UPDATE teams SET name = $2, updated_at = now(), version = version + 1
          WHERE team_id = $1 RETURNING {TEAM_COLUMNS}"
    ))
    .bind(input.team_id)
    .bind(input.name.trim())
    .fetch_one(&mut *tx)
    .await?;
    tx.record(&[Scope::Team(team.team_id)], Op::Update, &team)?;
    tx.commit().await?;
    Ok(Rpc(team))
}

/// `teams.invite {teamId, email, role?}` → the invitation (valid for 14 days). Admins invite
/// members, owners also admins. An active member's address is refused (`ALREADY_MEMBER`).
///
/// A pending invitation for the same address is **refreshed** in place: it keeps its id (so a
/// link from an earlier notification still works), takes the new role and inviter, and gets
/// a new 14-day expiry (an expired pending one comes back to life). Every call emits
/// `team.invitation_created`, so the notifier sends the invitation again.
pub(crate) async fn invite(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<InviteInput>,
) -> Result<Rpc<TeamInvitation>, ApiError> {
    let email = input.email.trim().to_lowercase();
    let role = Role::from(input.role);
    let mut tx = SyncedTx::begin(&state.db).await?;
    let (team, caller_role) = lock_team(&mut tx, input.team_id, session.user_id).await?;
    if caller_role < Role::Admin {
        return Err(ApiError::forbidden(
            "Only admins and owners can invite to a team",
        ));
    }
    if role == Role::Admin && caller_role < Role::Owner {
        return Err(ApiError::forbidden("Only owners can invite admins"));
    }
    let already_member: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM team_members m JOIN users u ON u.user_id = m.user_id
                         WHERE m.team_id = $1 AND m.deleted_at IS NULL
                           AND u.deleted_at IS NULL AND lower(u.email) = $2)",
    )
    .bind(team.team_id)
    .bind(&email)
    .fetch_one(&mut *tx)
    .await?;
    if already_member {
        return Err(ApiError::defined(
            "ALREADY_MEMBER",
            StatusCode::CONFLICT,
            format!("{email} is already a member of this team"),
        ));
    }
    let team_invitation_id: TeamInvitationId = sqlx::query_scalar(&format!(
        "INSERT INTO team_invitations (team_id, email, role, invited_by_user_id, expires_at)
         VALUES ($1, $2, $3, $4, now() + interval '{INVITATION_DAYS} days')
         ON CONFLICT (team_id, lower(email)) WHERE status = 'pending' DO UPDATE
            SET role = EXCLUDED.role, invited_by_user_id = EXCLUDED.invited_by_user_id,
                email = EXCLUDED.email, created_at = now(), expires_at = EXCLUDED.expires_at
         RETURNING team_invitation_id"
    ))
    .bind(team.team_id)
    .bind(&email)
    .bind(role.as_str())
    .bind(session.user_id)
    .fetch_one(&mut *tx)
    .await?;
    let invitation = load_invitation(&mut tx, team_invitation_id).await?;
    tx.emit(&TeamInvitationCreated {
        team_invitation_id: invitation.team_invitation_id.to_string(),
        team_id: invitation.team_id.to_string(),
        team_name: invitation.team_name.clone(),
        email: invitation.email.clone(),
        role: invitation.role.as_str().to_owned(),
        invited_by_user_id: invitation.invited_by_user_id.to_string(),
        invited_by_name: invitation.invited_by_name.clone(),
        expires_at_ms: invitation.expires_at.millis(),
    });
    tx.commit().await?;
    Ok(Rpc(invitation))
}

/// `teams.listInvitations` (GET-able, no input) → the pending, unexpired invitations
/// addressed to the caller's email (case-insensitive), newest first.
pub(crate) async fn list_invitations(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(NoInput): RpcQuery<NoInput>,
) -> Result<Rpc<Vec<TeamInvitation>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let email = verified_caller_email(&mut conn, session.user_id).await?;
    let invitations: Vec<TeamInvitation> = sqlx::query_as(&format!(
        "{INVITATION_SELECT}
          WHERE lower(i.email) = $1 AND i.status = 'pending' AND i.expires_at > now()
            AND t.deleted_at IS NULL
          ORDER BY i.created_at DESC, i.team_invitation_id"
    ))
    .bind(&email)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Rpc(invitations))
}

/// `teams.acceptInvitation {teamInvitationId}` → the team with the caller's new role. Only
/// the addressee (by email, case-insensitive) may accept; the invitation must be pending
/// (`INVITATION_NOT_PENDING`, 409) and unexpired (`INVITATION_EXPIRED`, 410). A former
/// member's soft-deleted membership is revived with the invited role. Should the caller
/// already be an active member, the invitation is marked accepted and their role is kept.
pub(crate) async fn accept_invitation(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<InvitationInput>,
) -> Result<Rpc<TeamWithRole>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let invitation = lock_my_invitation(&mut tx, input.team_invitation_id, session.user_id).await?;
    ensure_pending(&invitation)?;
    // The database's clock, as `teams.listInvitations` uses: an invitation it still lists
    // must be acceptable even when this replica's clock runs ahead.
    let expired: bool = sqlx::query_scalar("SELECT $1 <= now()")
        .bind(invitation.expires_at)
        .fetch_one(&mut *tx)
        .await?;
    if expired {
        return Err(ApiError::defined(
            "INVITATION_EXPIRED",
            StatusCode::GONE,
            "This invitation has expired: ask for a new one",
        ));
    }
    let team: Team = sqlx::query_as(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE team_id = $1 AND deleted_at IS NULL"
    ))
    .bind(invitation.team_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("Team"))?;
    let role = match member_role(&mut tx, team.team_id, session.user_id).await? {
        Some(current) => current,
        None => {
            join(&mut tx, team.team_id, session.user_id, invitation.role)
                .await?
                .role
        }
    };
    sqlx::query(
        "UPDATE team_invitations SET status = 'accepted', responded_at = now()
          WHERE team_invitation_id = $1",
    )
    .bind(invitation.team_invitation_id)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Rpc(TeamWithRole { team, role }))
}

/// `teams.declineInvitation {teamInvitationId}` → the invitation, `declined`. Only the
/// addressee; it must be pending (`INVITATION_NOT_PENDING`); an expired one may be declined.
pub(crate) async fn decline_invitation(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<InvitationInput>,
) -> Result<Rpc<TeamInvitation>, ApiError> {
    let mut tx = state.db.begin().await?;
    let invitation = lock_my_invitation(&mut tx, input.team_invitation_id, session.user_id).await?;
    ensure_pending(&invitation)?;
    sqlx::query(
        "UPDATE team_invitations SET status = 'declined', responded_at = now()
          WHERE team_invitation_id = $1",
    )
    .bind(invitation.team_invitation_id)
    .execute(&mut *tx)
    .await?;
    let declined = load_invitation(&mut tx, invitation.team_invitation_id).await?;
    tx.commit().await?;
    Ok(Rpc(declined))
}

/// `teams.changeRole {teamId, userId, role}` → the membership. Owners set any role (their own
/// too); admins move people between `member` and `admin` but never touch an owner nor make
/// one. Demoting the last owner is `LAST_OWNER`. Setting the current role changes nothing.
/// Making or unmaking an owner is sensitive (a fresh session, else `SESSION_NOT_FRESH`).
pub(crate) async fn change_role(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<ChangeRoleInput>,
) -> Result<Rpc<TeamMember>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let (_, caller_role) = lock_team(&mut tx, input.team_id, session.user_id).await?;
    if caller_role < Role::Admin {
        return Err(ApiError::forbidden(
            "Only admins and owners can change roles",
        ));
    }
    let target: TeamMember = sqlx::query_as(&format!(
        "SELECT {MEMBER_COLUMNS} FROM team_members
          WHERE team_id = $1 AND user_id = $2 AND deleted_at IS NULL"
    ))
    .bind(input.team_id)
    .bind(input.user_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("Member"))?;
    if caller_role < Role::Owner && (target.role == Role::Owner || input.role == Role::Owner) {
        return Err(ApiError::forbidden(
            "Only owners can change an owner's role or make someone an owner",
        ));
    }
    if target.role == input.role {
        return Ok(Rpc(target));
    }
    // Ownership moves control of the team (and its API access): a fresh session only.
    if target.role == Role::Owner || input.role == Role::Owner {
        require_fresh(&session, &state.config)?;
    }
    if target.role == Role::Owner {
        let (other_owners, _) = other_members(&mut tx, input.team_id, input.user_id).await?;
        if other_owners == 0 {
            return Err(last_owner(
                "A team must keep an owner: make someone else an owner first",
            ));
        }
    }
    let member: TeamMember = sqlx::query_as(&format!(
        "UPDATE team_members SET role = $3, updated_at = now(), version = version + 1
          WHERE team_id = $1 AND user_id = $2 AND deleted_at IS NULL
          RETURNING {MEMBER_COLUMNS}"
    ))
    .bind(input.team_id)
    .bind(input.user_id)
    .bind(input.role.as_str())
    .fetch_one(&mut *tx)
    .await?;
    tx.record(&member.scopes(), Op::Update, &member)?;
    tx.commit().await?;
    Ok(Rpc(member))
}

/// `teams.removeMember {teamId, userId}` → the membership's tombstone. Admins remove members;
/// only owners remove admins and owners, and only with a fresh session (`SESSION_NOT_FRESH`).
/// The caller leaves with `teams.leave`, not here. The
/// tombstone syncs to the team and to the removed user; `team.member_left` (`removed`).
pub(crate) async fn remove_member(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<MemberInput>,
) -> Result<Rpc<TeamMember>, ApiError> {
    if input.user_id == session.user_id {
        return Err(ApiError::field(
            "userId",
            "custom",
            "To leave a team, use teams.leave",
        ));
    }
    let mut tx = SyncedTx::begin(&state.db).await?;
    let (_, caller_role) = lock_team(&mut tx, input.team_id, session.user_id).await?;
    if caller_role < Role::Admin {
        return Err(ApiError::forbidden(
            "Only admins and owners can remove members",
        ));
    }
    let target_role = member_role(&mut tx, input.team_id, input.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Member"))?;
    if target_role >= Role::Admin && caller_role < Role::Owner {
        return Err(ApiError::forbidden(
            "Only owners can remove admins and owners",
        ));
    }
    // Taking away someone's control of the team: a fresh session only.
    if target_role >= Role::Admin {
        require_fresh(&session, &state.config)?;
    }
    let (member, _) = end_membership(
        &mut tx,
        input.team_id,
        input.user_id,
        target_role,
        Some(session.user_id),
    )
    .await?;
    tx.commit().await?;
    Ok(Rpc(member))
}

/// `teams.leave {teamId}` → the caller's membership tombstone. The last owner cannot leave
/// while the team has other members (`LAST_OWNER`). When the caller is the **only** member,
/// leaving soft-deletes the team as well (tombstone to the team's scope, pending invitations
/// revoked) and answers `teamDeleted: true`. `team.member_left` (`left`).
pub(crate) async fn leave(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<Left>, ApiError> {
    let mut tx = SyncedTx::begin(&state.db).await?;
    let (_, role) = lock_team(&mut tx, input.team_id, session.user_id).await?;
    let (membership, team_deleted) =
        end_membership(&mut tx, input.team_id, session.user_id, role, None).await?;
    tx.commit().await?;
    if team_deleted {
        state.api_keys.team_deleted(input.team_id).await;
    }
    Ok(Rpc(Left {
        membership,
        team_deleted,
    }))
}
