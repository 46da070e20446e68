//! API keys of an API team (see `api_teams` for who may do what):
//!
//! - `apiKeys.create` (sensitive, owners and admins): a new key, shown **once**; only its
//!   scrypt hash is stored ([`key`]).
//! - `apiKeys.list` (any member): the keys' metadata, never a hash.
//! - `apiKeys.revoke` (sensitive, owners and admins): marks the key revoked and writes
//!   `api_key.revoked` in one transaction, then tells every api replica to drop it
//!   ([`KeyVerifier::revoked`]).
//!
//! [`verifier`] checks presented keys for the open API.

pub mod key;
pub mod verifier;

pub use verifier::KeyVerifier;
pub use verifier::types::VerifiedKey;

use axum::extract::State;
use axum::http::StatusCode;
use chrono::Utc;
use domain::ids::{ApiKeyId, ApiTeamId, TeamId, UserId};
use messages::journal::v1::{ApiKeyCreated, ApiKeyRevoked};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};

use crate::contract::errors;
use crate::contract::schema::Text;
use crate::http::error::ApiError;
use crate::http::rpc::{Rpc, RpcInput, RpcQuery, RpcRouter};
use crate::http::validation::Input;
use crate::http::validation::NAME_MAX_CHARS;
use crate::http::validation::{EpochMillis, Issues};
use crate::modules::subscriptions::api_teams::{api_not_enabled, api_team_id, require_manager};
use crate::modules::teams::store::{caller_role, member_role};
use crate::procedures::session::{Protected, Sensitive};
use crate::state::AppState;

pub fn routes() -> RpcRouter {
    RpcRouter::new()
        .mutation("apiKeys.create", create)
        .errors(&[
            errors::API_NOT_ENABLED,
            errors::API_KEY_LIMIT,
            errors::SESSION_NOT_FRESH,
        ])
        .query("apiKeys.list", list)
        .mutation("apiKeys.revoke", revoke)
        .errors(&[errors::SESSION_NOT_FRESH])
}

/// Live (unrevoked, unexpired) keys one API team may hold.
pub const MAX_LIVE_KEYS: i64 = 100;
/// A new prefix is drawn when one collides; 62^8 prefixes make a second collision absurd.
const PREFIX_ATTEMPTS: usize = 3;

/// An API key's metadata as clients see it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApiKey {
    pub api_key_id: ApiKeyId,
    pub api_team_id: ApiTeamId,
    pub team_id: TeamId,
    pub name: String,
    /// `jk_live_<8 chars>`: how the key is recognised in lists and logs.
    pub prefix: String,
    pub created_by_user_id: UserId,
    pub created_at: EpochMillis,
    pub last_used_at: Option<EpochMillis>,
    pub expires_at: Option<EpochMillis>,
    pub revoked_at: Option<EpochMillis>,
    pub revoked_by_user_id: Option<UserId>,
}

/// Columns of [`ApiKey`] for a query over `api_keys k JOIN api_teams a`.
const KEY_COLUMNS: &str = "k.api_key_id, k.api_team_id, a.team_id, k.name, k.prefix,
    k.created_by_user_id, k.created_at, k.last_used_at, k.expires_at, k.revoked_at,
    k.revoked_by_user_id";

/// `apiKeys.create`: the key itself (this is the only time it is ever shown) and its metadata.
#[derive(Debug, Clone, Serialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreatedApiKey {
    #[serde(flatten)]
    pub api_key: ApiKey,
    pub key: String,
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateInput {
    team_id: TeamId,
    #[schemars(transform = Text::trimmed().min(1).max(NAME_MAX_CHARS))]
    name: String,
    /// Epoch milliseconds (or a `Date`); absent or `null` = never expires.
    #[serde(default)]
    expires_at: Option<EpochMillis>,
}

impl Input for CreateInput {
    fn check(&self, issues: &mut Issues) {
        issues.string_length("name", self.name.trim(), 1, NAME_MAX_CHARS);
        if let Some(expires_at) = self.expires_at
            && expires_at.at() <= Utc::now()
        {
            issues.custom("expiresAt", "Must be a time in the future");
        }
    }
}

/// `apiKeys.create {teamId, name, expiresAt?}` (sensitive) → `ApiKey & {key}`. Owners and
/// admins of a team with API access. The key is hashed before the transaction (scrypt takes
/// tens of milliseconds, no connection should wait on it); the transaction re-checks the
/// role, locks the API team, enforces [`MAX_LIVE_KEYS`], inserts the key and writes
/// `api_key.created`.
async fn create(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<CreateInput>,
) -> Result<Rpc<CreatedApiKey>, ApiError> {
    let expires_at = input.expires_at.map(EpochMillis::at);
    let name = input.name.trim();
    {
        // Refuse before spending a scrypt on a caller who may not create keys.
        let mut conn = state.db.acquire().await?;
        require_manager(caller_role(&mut conn, input.team_id, session.user_id).await?)?;
        api_team_id(&mut conn, input.team_id, false)
            .await?
            .ok_or_else(api_not_enabled)?;
    }
    for _ in 0..PREFIX_ATTEMPTS {
        let new_key = key::generate();
        let key_hash = state.api_keys.hash_new_key(new_key.key.clone()).await?;
        let mut tx = state.db.begin().await?;
        require_manager(caller_role(&mut tx, input.team_id, session.user_id).await?)?;
        let api_team_id = api_team_id(&mut tx, input.team_id, true)
            .await?
            .ok_or_else(api_not_enabled)?;
        let live: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM api_keys
              WHERE api_team_id = $1 AND revoked_at IS NULL
                AND (expires_at IS NULL OR expires_at > now())",
        )
        .bind(api_team_id)
        .fetch_one(&mut *tx)
        .await?;
        if live >= MAX_LIVE_KEYS {
            return Err(ApiError::defined(
                "API_KEY_LIMIT",
                StatusCode::CONFLICT,
                format!("A team can hold at most {MAX_LIVE_KEYS} live API keys: revoke one first"),
            ));
        }
        let api_key: Option<ApiKey> = sqlx::query_as(&format!(
            "WITH k AS (
                INSERT INTO api_keys
                       (api_team_id, name, prefix, key_hash, created_by_user_id, expires_at)
                VALUES ($1, $2, $3, $4, $5, $6)
                ON CONFLICT (prefix) DO NOTHING
                RETURNING *)
             SELECT {KEY_COLUMNS} FROM k JOIN api_teams a ON a.api_team_id = k.api_team_id"
        ))
        .bind(api_team_id)
        .bind(name)
        .bind(&new_key.prefix)
        .bind(&key_hash)
        .bind(session.user_id)
        .bind(expires_at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(api_key) = api_key else {
            // The prefix is taken: draw another key.
            tx.rollback().await?;
            continue;
        };
        // Ordered by key, so a consumer never sees a key revoked before it was created.
        bus::outbox::emit_ordered(
            &mut tx,
            &ApiKeyCreated {
                api_key_id: api_key.api_key_id.to_string(),
                api_team_id: api_key.api_team_id.to_string(),
                team_id: api_key.team_id.to_string(),
                prefix: api_key.prefix.clone(),
                name: api_key.name.clone(),
                created_by_user_id: session.user_id.to_string(),
                expires_at_ms: api_key.expires_at.map_or(0, |at| at.millis()),
            },
            &api_key.api_key_id.to_string(),
        )
        .await?;
        tx.commit().await?;
        tracing::info!(prefix = %api_key.prefix, api_key_id = %api_key.api_key_id, "api key created");
        return Ok(Rpc(CreatedApiKey {
            api_key,
            key: new_key.key.expose_secret().to_owned(),
        }));
    }
    Err(ApiError::internal(
        "no free api key prefix after several attempts",
    ))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ListInput {
    team_id: TeamId,
}

impl Input for ListInput {}

/// `apiKeys.list {teamId}` (GET-able) → `[ApiKey]`, revoked and expired ones included,
/// newest first; `[]` when API access is not enabled. Any member.
async fn list(
    State(state): State<AppState>,
    Protected(session): Protected,
    RpcQuery(input): RpcQuery<ListInput>,
) -> Result<Rpc<Vec<ApiKey>>, ApiError> {
    let mut conn = state.db.acquire().await?;
    caller_role(&mut conn, input.team_id, session.user_id).await?;
    let keys: Vec<ApiKey> = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN api_teams a ON a.api_team_id = k.api_team_id
          WHERE a.team_id = $1
          ORDER BY k.created_at DESC, k.api_key_id"
    ))
    .bind(input.team_id)
    .fetch_all(&mut *conn)
    .await?;
    Ok(Rpc(keys))
}

#[derive(Debug, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeInput {
    api_key_id: ApiKeyId,
}

impl Input for RevokeInput {}

/// `apiKeys.revoke {apiKeyId}` (sensitive) → `ApiKey`. Owners and admins of the key's team;
/// a key of a team the caller is not in is `NOT_FOUND`. Revoking a revoked key returns it
/// unchanged. After the commit every api replica is told to forget the key.
async fn revoke(
    State(state): State<AppState>,
    Sensitive(session): Sensitive,
    RpcInput(input): RpcInput<RevokeInput>,
) -> Result<Rpc<ApiKey>, ApiError> {
    let mut tx = state.db.begin().await?;
    let key: ApiKey = sqlx::query_as(&format!(
        "SELECT {KEY_COLUMNS} FROM api_keys k JOIN api_teams a ON a.api_team_id = k.api_team_id
          WHERE k.api_key_id = $1
            FOR UPDATE OF k"
    ))
    .bind(input.api_key_id)
    .fetch_optional(&mut *tx)
    .await?
    .ok_or_else(|| ApiError::not_found("API key"))?;
    // Someone outside the team must not learn that the key exists.
    let role = member_role(&mut tx, key.team_id, session.user_id)
        .await?
        .ok_or_else(|| ApiError::not_found("API key"))?;
    require_manager(role)?;
    if key.revoked_at.is_some() {
        return Ok(Rpc(key));
    }
    let revoked: ApiKey = sqlx::query_as(&format!(
        "WITH k AS (
            UPDATE api_keys SET revoked_at = now(), revoked_by_user_id = $2
             WHERE api_key_id = $1
             RETURNING *)
         SELECT {KEY_COLUMNS} FROM k JOIN api_teams a ON a.api_team_id = k.api_team_id"
    ))
    .bind(input.api_key_id)
    .bind(session.user_id)
    .fetch_one(&mut *tx)
    .await?;
    let revoked_at = revoked.revoked_at.unwrap_or_else(EpochMillis::now);
    bus::outbox::emit_ordered(
        &mut tx,
        &ApiKeyRevoked {
            api_key_id: revoked.api_key_id.to_string(),
            api_team_id: revoked.api_team_id.to_string(),
            team_id: revoked.team_id.to_string(),
            prefix: revoked.prefix.clone(),
            revoked_by_user_id: session.user_id.to_string(),
            revoked_at_ms: revoked_at.millis(),
        },
        &revoked.api_key_id.to_string(),
    )
    .await?;
    tx.commit().await?;
    state.api_keys.revoked(revoked.api_key_id).await;
    tracing::info!(prefix = %revoked.prefix, api_key_id = %revoked.api_key_id, "api key revoked");
    Ok(Rpc(revoked))
}
