//! A user as clients see them and the procedures' inputs and outputs.

use domain::ids::UserId;
use domain::time::EpochMillis;
use serde::{Deserialize, Serialize};

use crate::contract::schema::Text;
use crate::contract::schema::Timezone;
use crate::http::validation::Input;
use crate::http::validation::{
    Issues, NAME_MAX_CHARS, URL_MAX_BYTES, check_http_url, parse_timezone,
};
use sync_protocol::changes::SyncedRow;

/// A user's profile as clients see it (and as it syncs).
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct User {
    pub user_id: UserId,
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    pub timezone: String,
    pub email_verified: bool,
    pub created_at: EpochMillis,
    pub updated_at: EpochMillis,
    pub deleted_at: Option<EpochMillis>,
    pub version: i64,
}

impl SyncedRow for User {
    const TABLE: &'static str = "users";
    fn row_id(&self) -> String {
        self.user_id.to_string()
    }
    fn version(&self) -> i64 {
        self.version
    }
}

/// Who is signing in.
#[derive(Debug, Clone)]
pub struct NewUser {
    /// Lowercased.
    pub email: String,
    pub name: String,
    pub avatar_url: Option<String>,
    /// Google's `sub`, when signing in with Google.
    pub google_subject: Option<String>,
    /// The provider vouches for the address (Google's `email_verified`).
    pub email_verified: bool,
    /// `google` or `dev`, for the `user.created` event.
    pub via: &'static str,
}

/// `users.update` input: every field optional; `avatarUrl: null` removes the avatar.
#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateInput {
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    pub(crate) name: Option<String>,
    #[serde(default, deserialize_with = "crate::http::validation::explicit_null")]
    #[schemars(transform = Text::raw().format("http-url").max_bytes(URL_MAX_BYTES))]
    pub(crate) avatar_url: Option<Option<String>>,
    #[schemars(with = "Option<Timezone>")]
    pub(crate) timezone: Option<String>,
}

impl Input for UpdateInput {
    fn check(&self, issues: &mut Issues) {
        if let Some(name) = &self.name {
            issues.string_length("name", name.trim(), 1, NAME_MAX_CHARS);
        }
        if let Some(Some(url)) = &self.avatar_url {
            check_http_url(issues, "avatarUrl", url);
        }
        if let Some(zone) = &self.timezone {
            parse_timezone(issues, "timezone", zone);
        }
    }
}

#[derive(Debug, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Deleted {
    pub(crate) deleted_at: EpochMillis,
}
