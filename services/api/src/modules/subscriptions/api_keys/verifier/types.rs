//! What verification answers and remembers: a verified key, the allow-list, load errors and
//! the refusals.

use domain::ids::{ApiKeyId, ApiTeamId, TeamId};
use std::net::IpAddr;
use std::time::Instant;

use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use ipnet::IpNet;
use serde::{Deserialize, Serialize};

use crate::http::error::ApiError;

/// A key that verified: who is calling.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedKey {
    pub api_key_id: ApiKeyId,
    pub api_team_id: ApiTeamId,
    pub team_id: TeamId,
    /// `jk_live_<id>`: safe to log.
    pub prefix: String,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A message between replicas (JSON on [`INVALIDATION_SUBJECT`]).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub(crate) enum Invalidation {
    #[serde(rename_all = "camelCase")]
    ApiKeyRevoked { api_key_id: ApiKeyId },
    #[serde(rename_all = "camelCase")]
    AllowlistChanged { api_team_id: ApiTeamId },
    /// The app team (and with it its API team and every key) was deleted.
    #[serde(rename_all = "camelCase")]
    TeamDeleted { team_id: TeamId },
    /// The API team's plan changed: cached plan rates of its keys are stale.
    #[serde(rename_all = "camelCase")]
    SubscriptionChanged { api_team_id: ApiTeamId },
}

/// An API team's allow-list as loaded at `loaded_at` (before its query ran).
#[derive(Debug)]
pub(crate) struct AllowList {
    pub(crate) networks: Vec<IpNet>,
    pub(crate) loaded_at: Instant,
}

impl AllowList {
    pub(crate) fn allows(&self, ip: IpAddr) -> bool {
        self.networks.is_empty() || self.networks.iter().any(|network| network.contains(&ip))
    }
}

/// Why a load failed; shared by every caller that waited on it.
#[derive(Debug)]
pub(crate) enum LoadError {
    Invalid,
    /// Postgres is unreachable: 503, not 500 (see [`crate::http::error::is_database_unavailable`]).
    Unavailable(String),
    Internal(String),
}

impl From<sqlx::Error> for LoadError {
    fn from(error: sqlx::Error) -> Self {
        if crate::http::error::is_database_unavailable(&error) {
            Self::Unavailable(error.to_string())
        } else {
            Self::Internal(error.to_string())
        }
    }
}

/// `401 INVALID_API_KEY`: unknown, malformed, wrong, expired or revoked — one answer for all.
pub fn invalid_key() -> ApiError {
    ApiError::defined(
        "INVALID_API_KEY",
        StatusCode::UNAUTHORIZED,
        "Invalid API key",
    )
}

/// `403 IP_NOT_ALLOWED`: the key is good but the API team's allow-list excludes the caller.
pub fn ip_not_allowed() -> ApiError {
    ApiError::defined(
        "IP_NOT_ALLOWED",
        StatusCode::FORBIDDEN,
        "This API key may not be used from this IP address",
    )
}

#[derive(sqlx::FromRow)]
pub(crate) struct KeyRow {
    pub(crate) api_key_id: ApiKeyId,
    pub(crate) api_team_id: ApiTeamId,
    pub(crate) team_id: TeamId,
    pub(crate) prefix: String,
    pub(crate) key_hash: String,
    pub(crate) expires_at: Option<DateTime<Utc>>,
    pub(crate) revoked_at: Option<DateTime<Utc>>,
}

impl From<&LoadError> for ApiError {
    fn from(error: &LoadError) -> Self {
        match error {
            LoadError::Invalid => invalid_key(),
            LoadError::Unavailable(cause) => ApiError::Unavailable(cause.clone()),
            LoadError::Internal(cause) => ApiError::Internal(cause.clone()),
        }
    }
}
