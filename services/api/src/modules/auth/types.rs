//! The `auth.*` procedures' inputs and outputs.

use domain::ids::{SessionId, UserId};
use domain::time::EpochMillis;
use serde::{Deserialize, Serialize};

use crate::http::validation::Input;
use crate::http::validation::{Issues, check_email};
use crate::modules::users::types::User;

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct DevLoginInput {
    pub(crate) email: String,
    pub(crate) name: String,
}

impl Input for DevLoginInput {
    fn check(&self, issues: &mut Issues) {
        check_email(issues, "email", self.email.trim());
        issues.string_length("name", self.name.trim(), 1, 100);
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DevLoginOutput {
    pub(crate) token: String,
    pub(crate) user_id: UserId,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionInfo {
    pub session_id: SessionId,
    pub created_at: EpochMillis,
    pub expires_at: EpochMillis,
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CurrentSession {
    /// `null` when the caller is not signed in.
    pub(crate) session: Option<SessionInfo>,
    pub(crate) user: Option<User>,
}

#[derive(Debug, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ListedSession {
    pub(crate) session_id: SessionId,
    pub(crate) created_at: EpochMillis,
    pub(crate) last_seen_at: EpochMillis,
    pub(crate) expires_at: EpochMillis,
    pub(crate) user_agent: Option<String>,
    pub(crate) ip_address: Option<String>,
    /// The session making this call.
    #[sqlx(default)]
    pub(crate) current: bool,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeSessionInput {
    pub(crate) session_id: SessionId,
}

impl Input for RevokeSessionInput {}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Revoked {
    pub(crate) revoked: u64,
}
