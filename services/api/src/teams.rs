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

use axum::extract::State;
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use messages::journal::v1::{TeamInvitationCreated, TeamMemberJoined, TeamMemberLeft};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::AppState;
use crate::changes::{Changes, Op, Scope, SyncedRow};
use crate::contract::{Text, errors};
use crate::error::ApiError;
use crate::rpc::{Input, NoInput, Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::session::{Protected, require_fresh};
use crate::users::NAME_MAX_CHARS;
use crate::validation::{EMAIL_MAX_BYTES, Issues, check_email};

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

/// How long an invitation stays acceptable.
pub const INVITATION_DAYS: i64 = 14;

/// A member's role; owners can do everything, admins manage members and content, members
/// read and write their own entries.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    PartialOrd,
    Ord,
    serde::Serialize,
    serde::Deserialize,
    schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    Member,
    Admin,
    Owner,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Member => "member",
            Self::Admin => "admin",
            Self::Owner => "owner",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "member" => Some(Self::Member),
            "admin" => Some(Self::Admin),
            "owner" => Some(Self::Owner),
            _ => None,
        }
    }
}

impl TryFrom<String> for Role {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        Self::parse(&text).ok_or_else(|| format!("unknown team role {text:?}"))
    }
}

/// The live teams `$1` is an active member of (the same rule as [`member_role`]), for
/// `team_id IN (…)` in visibility checks.
pub const MY_TEAMS_SQL: &str =
    "SELECT m.team_id FROM team_members m JOIN teams t ON t.team_id = m.team_id
                         WHERE m.user_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL";

/// The caller's role in a live team, or `None` when they are not an active member (or the
/// team is deleted). Use it for every team permission check.
pub async fn member_role(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
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

/// Account deletion: end every membership of `user_id` (in the caller's transaction),
/// recording the membership tombstones in `changes` (to the team's and the user's scope) and
/// a `team.member_left` (`left`) per team. A team where the user was the only member is
/// soft-deleted with its pending invitations revoked. The teams are locked (in id order) and
/// the last-owner rule is checked again under the lock: a team that would be left ownerless
/// with members answers `LAST_OWNER`. Returns the teams deleted, whose API keys the caller
/// must invalidate once the transaction commits ([`crate::api_keys::KeyVerifier::team_deleted`]).
pub async fn leave_all_teams(
    conn: &mut PgConnection,
    user_id: Uuid,
    changes: &mut Changes,
) -> Result<Vec<Uuid>, ApiError> {
    let memberships: Vec<(Uuid, String)> = sqlx::query_as(
        "SELECT t.team_id, m.role FROM teams t
           JOIN team_members m ON m.team_id = t.team_id
          WHERE m.user_id = $1 AND m.deleted_at IS NULL AND t.deleted_at IS NULL
          ORDER BY t.team_id
            FOR UPDATE OF t",
    )
    .bind(user_id)
    .fetch_all(&mut *conn)
    .await?;
    let mut deleted_teams = Vec::new();
    for (team_id, role) in memberships {
        let role = Role::try_from(role).map_err(ApiError::internal)?;
        let (_, team_deleted) =
            end_membership(&mut *conn, team_id, user_id, role, None, changes).await?;
        if team_deleted {
            deleted_teams.push(team_id);
        }
    }
    Ok(deleted_teams)
}

// ---------------------------------------------------------------------------------------
// Rows and outputs

/// A team row as clients see it (and as it syncs to `team.<id>`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub team_id: Uuid,
    pub name: String,
    pub created_by_user_id: Uuid,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl SyncedRow for Team {
    const TABLE: &'static str = "teams";
    fn row_id(&self) -> String {
        self.team_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

const TEAM_COLUMNS: &str =
    "team_id, name, created_by_user_id, created_at, updated_at, deleted_at, version";

/// A membership row (synced to the team's scope and the member's scope). `createdAt` is when
/// the member (last) joined: rejoining revives the row with a fresh `createdAt`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamMember {
    pub team_id: Uuid,
    pub user_id: Uuid,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub updated_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub deleted_at: Option<DateTime<Utc>>,
    pub version: i64,
}

impl TeamMember {
    fn scopes(&self) -> [Scope; 2] {
        [Scope::Team(self.team_id), Scope::User(self.user_id)]
    }
}

impl SyncedRow for TeamMember {
    const TABLE: &'static str = "team_members";
    fn row_id(&self) -> String {
        format!("{}:{}", self.team_id, self.user_id)
    }
    fn version(&self) -> i64 {
        self.version
    }
}

const MEMBER_COLUMNS: &str = "team_id, user_id, role, created_at, updated_at, deleted_at, version";

/// A team with the caller's role in it (`teams.create`, `teams.list`,
/// `teams.acceptInvitation`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamWithRole {
    #[serde(flatten)]
    #[sqlx(flatten)]
    pub team: Team,
    #[sqlx(try_from = "String")]
    pub role: Role,
}

/// One member as `teams.get` lists them.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MemberProfile {
    pub user_id: Uuid,
    pub name: String,
    pub email: String,
    pub avatar_url: Option<String>,
    #[sqlx(try_from = "String")]
    pub role: Role,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub joined_at: DateTime<Utc>,
}

/// `teams.get`: the team, the caller's role and the active members.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamDetails {
    #[serde(flatten)]
    pub team: Team,
    pub role: Role,
    pub members: Vec<MemberProfile>,
}

/// The role an invitation grants (owners are made by `teams.changeRole`, never invited).
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "lowercase")]
pub enum InvitedRole {
    #[default]
    Member,
    Admin,
}

impl From<InvitedRole> for Role {
    fn from(role: InvitedRole) -> Self {
        match role {
            InvitedRole::Member => Self::Member,
            InvitedRole::Admin => Self::Admin,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum InvitationStatus {
    Pending,
    Accepted,
    Declined,
    Revoked,
}

impl TryFrom<String> for InvitationStatus {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        match text.as_str() {
            "pending" => Ok(Self::Pending),
            "accepted" => Ok(Self::Accepted),
            "declined" => Ok(Self::Declined),
            "revoked" => Ok(Self::Revoked),
            _ => Err(format!("unknown invitation status {text:?}")),
        }
    }
}

/// An invitation, with the team's and the inviter's names for display.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamInvitation {
    pub team_invitation_id: Uuid,
    pub team_id: Uuid,
    pub team_name: String,
    /// Lowercased.
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub invited_by_user_id: Uuid,
    pub invited_by_name: String,
    #[sqlx(try_from = "String")]
    pub status: InvitationStatus,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub created_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds")]
    #[schemars(with = "i64")]
    pub expires_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_milliseconds_option")]
    #[schemars(with = "Option<i64>")]
    pub responded_at: Option<DateTime<Utc>>,
}

const INVITATION_SELECT: &str =
    "SELECT i.team_invitation_id, i.team_id, t.name AS team_name, i.email, i.role,
        i.invited_by_user_id, u.name AS invited_by_name, i.status, i.created_at,
        i.expires_at, i.responded_at
   FROM team_invitations i
   JOIN teams t ON t.team_id = i.team_id
   JOIN users u ON u.user_id = i.invited_by_user_id";

async fn load_invitation(
    conn: &mut PgConnection,
    team_invitation_id: Uuid,
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

fn last_owner(message: &str) -> ApiError {
    ApiError::defined("LAST_OWNER", StatusCode::CONFLICT, message)
}

/// Lock the live team row and return it with the caller's role; a team the caller is not an
/// active member of is `NOT_FOUND`. Every membership change starts here, so changes to one
/// team are serialised.
async fn lock_team(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
) -> Result<(Team, Role), ApiError> {
    let team: Team = sqlx::query_as(&format!(
        "SELECT {TEAM_COLUMNS} FROM teams WHERE team_id = $1 AND deleted_at IS NULL FOR UPDATE"
    ))
    .bind(team_id)
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("Team"))?;
    let role = member_role(conn, team_id, user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Team"))?;
    Ok((team, role))
}

/// Active members other than `user_id`: `(owners, everyone)`.
async fn other_members(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
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
async fn join(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
    role: Role,
    changes: &mut Changes,
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
    .fetch_optional(&mut *conn)
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
    changes.record(&member.scopes(), op, &member)?;
    bus::outbox::emit(
        conn,
        &TeamMemberJoined {
            team_id: team_id.to_string(),
            user_id: user_id.to_string(),
            role: role.as_str().to_owned(),
        },
    )
    .await?;
    Ok(member)
}

/// End `user_id`'s membership (whose current role is `role`) in the locked team:
/// `removed_by` is `None` when they leave on their own. The last owner cannot go while others
/// remain (`LAST_OWNER`); the last member takes the team with them (the team is soft-deleted
/// and its pending invitations revoked). Returns the tombstone and whether the team was
/// deleted.
async fn end_membership(
    conn: &mut PgConnection,
    team_id: Uuid,
    user_id: Uuid,
    role: Role,
    removed_by: Option<Uuid>,
    changes: &mut Changes,
) -> Result<(TeamMember, bool), ApiError> {
    let (other_owners, others) = other_members(&mut *conn, team_id, user_id).await?;
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
    .fetch_optional(&mut *conn)
    .await?
    .ok_or_else(|| ApiError::not_found("Member"))?;
    changes.record(&member.scopes(), Op::Delete, &member)?;
    let team_deleted = others == 0;
    if team_deleted {
        let team: Team = sqlx::query_as(&format!(
            "UPDATE teams SET deleted_at = now(), updated_at = now(), version = version + 1
              WHERE team_id = $1 RETURNING {TEAM_COLUMNS}"
        ))
        .bind(team_id)
        .fetch_one(&mut *conn)
        .await?;
        changes.record(&[Scope::Team(team_id)], Op::Delete, &team)?;
        sqlx::query(
            "UPDATE team_invitations SET status = 'revoked', responded_at = now()
              WHERE team_id = $1 AND status = 'pending'",
        )
        .bind(team_id)
        .execute(&mut *conn)
        .await?;
    }
    bus::outbox::emit(
        conn,
        &TeamMemberLeft {
            team_id: team_id.to_string(),
            user_id: user_id.to_string(),
            reason: if removed_by.is_some() {
                "removed"
            } else {
                "left"
            }
            .to_owned(),
            removed_by_user_id: removed_by.map(|id| id.to_string()).unwrap_or_default(),
        },
    )
    .await?;
    Ok((member, team_deleted))
}

/// The caller's (lowercased) address, which must be verified: an invitation is for whoever
/// owns the address, and anybody can create an account under an address they do not own
/// (e.g. a Google account whose email Google has not verified).
async fn verified_caller_email(conn: &mut PgConnection, user_id: Uuid) -> Result<String, ApiError> {
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
async fn lock_my_invitation(
    conn: &mut PgConnection,
    team_invitation_id: Uuid,
    user_id: Uuid,
) -> Result<TeamInvitation, ApiError> {
    let email = verified_caller_email(&mut *conn, user_id).await?;
    let team_id: Uuid = sqlx::query_scalar(
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

fn ensure_pending(invitation: &TeamInvitation) -> Result<(), ApiError> {
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

fn check_name(issues: &mut Issues, name: &str) {
    issues.string_length("name", name.trim(), 1, NAME_MAX_CHARS);
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    name: String,
}

impl Input for CreateInput {
    fn check(&self, issues: &mut Issues) {
        check_name(issues, &self.name);
    }
}

/// `teams.create {name}` → the team with the caller's role (`owner`). The team row, the
/// creator's membership, their changesets and `team.member_joined` in one transaction.
async fn create(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<CreateInput>,
) -> Result<Rpc<TeamWithRole>, ApiError> {
    let mut tx = state.db.begin().await?;
    let team: Team = sqlx::query_as(&format!(
        "INSERT INTO teams (name, created_by_user_id) VALUES ($1, $2) RETURNING {TEAM_COLUMNS}"
    ))
    .bind(input.name.trim())
    .bind(session.user_id)
    .fetch_one(&mut *tx)
    .await?;
    let mut changes = Changes::new();
    changes.record(&[Scope::Team(team.team_id)], Op::Insert, &team)?;
    join(
        &mut tx,
        team.team_id,
        session.user_id,
        Role::Owner,
        &mut changes,
    )
    .await?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(TeamWithRole {
        team,
        role: Role::Owner,
    }))
}

/// `teams.list` (GET-able, no input) → the caller's active teams with their role, by name.
async fn list(
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// `{teamId}`: the input of every procedure that names only a team (teams, API teams,
/// subscriptions).
pub struct TeamInput {
    pub team_id: Uuid,
}

impl Input for TeamInput {}

/// `teams.get {teamId}` (GET-able) → the team, the caller's role and the members (owners
/// first, then by joining time). Members only.
async fn get(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<TeamInput>,
) -> Result<Rpc<TeamDetails>, ApiError> {
    let mut conn = state.db.acquire().await?;
    let role = member_role(&mut conn, input.team_id, session.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("Team"))?;
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameInput {
    team_id: Uuid,
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    name: String,
}

impl Input for RenameInput {
    fn check(&self, issues: &mut Issues) {
        check_name(issues, &self.name);
    }
}

/// `teams.rename {teamId, name}` → the team. Admins and owners.
async fn rename(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<RenameInput>,
) -> Result<Rpc<Team>, ApiError> {
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    changes.record(&[Scope::Team(team.team_id)], Op::Update, &team)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(team))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InviteInput {
    team_id: Uuid,
    #[schemars(transform = Text::trimmed().format("email").max_bytes(EMAIL_MAX_BYTES))]
    email: String,
    #[serde(default)]
    role: InvitedRole,
}

impl Input for InviteInput {
    fn check(&self, issues: &mut Issues) {
        check_email(issues, "email", self.email.trim());
    }
}

/// `teams.invite {teamId, email, role?}` → the invitation (valid for 14 days). Admins invite
/// members, owners also admins. An active member's address is refused (`ALREADY_MEMBER`).
///
/// A pending invitation for the same address is **refreshed** in place: it keeps its id (so a
/// link from an earlier notification still works), takes the new role and inviter, and gets
/// a new 14-day expiry (an expired pending one comes back to life). Every call emits
/// `team.invitation_created`, so the notifier sends the invitation again.
async fn invite(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<InviteInput>,
) -> Result<Rpc<TeamInvitation>, ApiError> {
    let email = input.email.trim().to_lowercase();
    let role = Role::from(input.role);
    let mut tx = state.db.begin().await?;
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
    let team_invitation_id: Uuid = sqlx::query_scalar(&format!(
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
    bus::outbox::emit(
        &mut tx,
        &TeamInvitationCreated {
            team_invitation_id: invitation.team_invitation_id.to_string(),
            team_id: invitation.team_id.to_string(),
            team_name: invitation.team_name.clone(),
            email: invitation.email.clone(),
            role: invitation.role.as_str().to_owned(),
            invited_by_user_id: invitation.invited_by_user_id.to_string(),
            invited_by_name: invitation.invited_by_name.clone(),
            expires_at_ms: invitation.expires_at.timestamp_millis(),
        },
    )
    .await?;
    tx.commit().await?;
    Ok(Rpc(invitation))
}

/// `teams.listInvitations` (GET-able, no input) → the pending, unexpired invitations
/// addressed to the caller's email (case-insensitive), newest first.
async fn list_invitations(
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvitationInput {
    team_invitation_id: Uuid,
}

impl Input for InvitationInput {}

/// `teams.acceptInvitation {teamInvitationId}` → the team with the caller's new role. Only
/// the addressee (by email, case-insensitive) may accept; the invitation must be pending
/// (`INVITATION_NOT_PENDING`, 409) and unexpired (`INVITATION_EXPIRED`, 410). A former
/// member's soft-deleted membership is revived with the invited role. Should the caller
/// already be an active member, the invitation is marked accepted and their role is kept.
async fn accept_invitation(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<InvitationInput>,
) -> Result<Rpc<TeamWithRole>, ApiError> {
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    let role = match member_role(&mut tx, team.team_id, session.user_id).await? {
        Some(current) => current,
        None => {
            join(
                &mut tx,
                team.team_id,
                session.user_id,
                invitation.role,
                &mut changes,
            )
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
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(TeamWithRole { team, role }))
}

/// `teams.declineInvitation {teamInvitationId}` → the invitation, `declined`. Only the
/// addressee; it must be pending (`INVITATION_NOT_PENDING`); an expired one may be declined.
async fn decline_invitation(
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

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeRoleInput {
    team_id: Uuid,
    user_id: Uuid,
    role: Role,
}

impl Input for ChangeRoleInput {}

/// `teams.changeRole {teamId, userId, role}` → the membership. Owners set any role (their own
/// too); admins move people between `member` and `admin` but never touch an owner nor make
/// one. Demoting the last owner is `LAST_OWNER`. Setting the current role changes nothing.
/// Making or unmaking an owner is sensitive (a fresh session, else `SESSION_NOT_FRESH`).
async fn change_role(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<ChangeRoleInput>,
) -> Result<Rpc<TeamMember>, ApiError> {
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    changes.record(&member.scopes(), Op::Update, &member)?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(member))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberInput {
    team_id: Uuid,
    user_id: Uuid,
}

impl Input for MemberInput {}

/// `teams.removeMember {teamId, userId}` → the membership's tombstone. Admins remove members;
/// only owners remove admins and owners, and only with a fresh session (`SESSION_NOT_FRESH`).
/// The caller leaves with `teams.leave`, not here. The
/// tombstone syncs to the team and to the removed user; `team.member_left` (`removed`).
async fn remove_member(
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
    let mut tx = state.db.begin().await?;
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
    let mut changes = Changes::new();
    let (member, _) = end_membership(
        &mut tx,
        input.team_id,
        input.user_id,
        target_role,
        Some(session.user_id),
        &mut changes,
    )
    .await?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    Ok(Rpc(member))
}

/// `teams.leave` output: the caller's membership tombstone, and whether the team went with it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Left {
    #[serde(flatten)]
    pub membership: TeamMember,
    pub team_deleted: bool,
}

/// `teams.leave {teamId}` → the caller's membership tombstone. The last owner cannot leave
/// while the team has other members (`LAST_OWNER`). When the caller is the **only** member,
/// leaving soft-deletes the team as well (tombstone to the team's scope, pending invitations
/// revoked) and answers `teamDeleted: true`. `team.member_left` (`left`).
async fn leave(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcInput(input): RpcInput<TeamInput>,
) -> Result<Rpc<Left>, ApiError> {
    let mut tx = state.db.begin().await?;
    let (_, role) = lock_team(&mut tx, input.team_id, session.user_id).await?;
    let mut changes = Changes::new();
    let (membership, team_deleted) = end_membership(
        &mut tx,
        input.team_id,
        session.user_id,
        role,
        None,
        &mut changes,
    )
    .await?;
    changes.write(&mut tx).await?;
    tx.commit().await?;
    if team_deleted {
        state.api_keys.team_deleted(input.team_id).await;
    }
    Ok(Rpc(Left {
        membership,
        team_deleted,
    }))
}
