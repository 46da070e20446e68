//! Teams, members, roles and invitations as clients see them, and the procedures' inputs.

use domain::ids::{TeamId, TeamInvitationId, UserId};
use domain::time::EpochMillis;
use serde::{Deserialize, Serialize};

use crate::contract::schema::Text;
use crate::http::validation::Input;
use crate::http::validation::{EMAIL_MAX_BYTES, Issues, NAME_MAX_CHARS, check_email};
use sync_protocol::changes::{Scope, SyncedRow};

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

/// A team row as clients see it (and as it syncs to `team.<id>`).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Team {
    pub team_id: TeamId,
    pub name: String,
    pub created_by_user_id: UserId,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub deleted_at: Option<EpochMillis>,
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

/// A membership row (synced to the team's scope and the member's scope). `createdAt` is when
/// the member (last) joined: rejoining revives the row with a fresh `createdAt`.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TeamMember {
    pub team_id: TeamId,
    pub user_id: UserId,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub deleted_at: Option<EpochMillis>,
    pub version: i64,
}

impl TeamMember {
    pub(crate) fn scopes(&self) -> [Scope; 2] {
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
    pub user_id: UserId,
    pub name: String,
    pub email: String,
    pub avatar_url: Option<String>,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub joined_at: EpochMillis,
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
    pub team_invitation_id: TeamInvitationId,
    pub team_id: TeamId,
    pub team_name: String,
    /// Lowercased.
    pub email: String,
    #[sqlx(try_from = "String")]
    pub role: Role,
    pub invited_by_user_id: UserId,
    pub invited_by_name: String,
    #[sqlx(try_from = "String")]
    pub status: InvitationStatus,
    pub created_at: EpochMillis,
    pub expires_at: EpochMillis,
    pub responded_at: Option<EpochMillis>,
}

fn check_name(issues: &mut Issues, name: &str) {
    issues.string_length("name", name.trim(), 1, NAME_MAX_CHARS);
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    pub(crate) name: String,
}

impl Input for CreateInput {
    fn check(&self, issues: &mut Issues) {
        check_name(issues, &self.name);
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
/// `{teamId}`: the input of every procedure that names only a team (teams, API teams,
/// subscriptions).
pub struct TeamInput {
    pub team_id: TeamId,
}

impl Input for TeamInput {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameInput {
    pub(crate) team_id: TeamId,
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    pub(crate) name: String,
}

impl Input for RenameInput {
    fn check(&self, issues: &mut Issues) {
        check_name(issues, &self.name);
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InviteInput {
    pub(crate) team_id: TeamId,
    #[schemars(transform = Text::trimmed().format("email").max_bytes(EMAIL_MAX_BYTES))]
    pub(crate) email: String,
    #[serde(default)]
    pub(crate) role: InvitedRole,
}

impl Input for InviteInput {
    fn check(&self, issues: &mut Issues) {
        check_email(issues, "email", self.email.trim());
    }
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InvitationInput {
    pub(crate) team_invitation_id: TeamInvitationId,
}

impl Input for InvitationInput {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangeRoleInput {
    pub(crate) team_id: TeamId,
    pub(crate) user_id: UserId,
    pub(crate) role: Role,
}

impl Input for ChangeRoleInput {}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MemberInput {
    pub(crate) team_id: TeamId,
    pub(crate) user_id: UserId,
}

impl Input for MemberInput {}

/// `teams.leave` output: the caller's membership tombstone, and whether the team went with it.
#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Left {
    #[serde(flatten)]
    pub membership: TeamMember,
    pub team_deleted: bool,
}
