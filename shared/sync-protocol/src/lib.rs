//! What the services share about sync: the scopes, synced rows and the changeset writer
//! ([`changes`]), the write helper every synced write goes through ([`synced_tx`]), the table
//! registry ([`tables`]), the stream cursor ([`cursor`]), the frames clients receive
//! ([`frames`]), and the sync token (below).
//!
//! The sync token (ARCHITECTURE §5 step 4, §9 `sync.token`): issued by the api to a signed-in
//! user, verified by the sync-streamer without touching the api's schema.
//!
//! Format: `<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, first part))>`, no
//! padding. The secret is `SYNC_TOKEN_SECRET`, configured identically on both services. The
//! claims carry the user, the session the token was issued from (so revoking the session
//! closes the streams), the user's team scopes at issue time, and the expiry.

pub mod changes;
pub mod cursor;
pub mod frames;
pub mod synced_tx;
pub mod tables;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use domain::ids::{SessionId, TeamId, UserId};
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use std::time::Duration;

/// The development default of `SYNC_TOKEN_SECRET` (refused by both services in production).
pub const DEVELOPMENT_SECRET: &str = "development-only-sync-token-secret-change-me";
/// Shorter secrets are refused at start: HMAC keys should carry at least 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;
/// The longest lifetime (`expiresAt - issuedAt`) a token may claim by default: the api's
/// default `SYNC_TOKEN_TTL_SECONDS`.
pub const DEFAULT_MAX_LIFETIME: Duration = Duration::from_secs(900);
/// How far in the future `issuedAt` may lie (the api's and the streamer's clocks differ).
pub const MAX_CLOCK_SKEW: Duration = Duration::from_secs(30);

/// Words that mark a value copied from a manifest or an example rather than generated.
/// Random secrets (base64, hex) of 32+ bytes contain none of them by chance in practice.
const PLACEHOLDER_MARKERS: [&str; 7] = [
    "replace",
    "changeme",
    "change-me",
    "change_me",
    "placeholder",
    "example",
    "development",
];
/// A generated secret of 32+ bytes uses many distinct characters; `aaaa…` or `0101…` does not.
const MIN_DISTINCT_SECRET_BYTES: usize = 8;

/// Why `SYNC_TOKEN_SECRET` cannot be used, if it cannot. The rule both services apply at
/// start: at least [`MIN_SECRET_BYTES`] always; outside development also not the built-in
/// default, not a placeholder and not a trivially repetitive value, since anyone who knows
/// the value can sign a token for any user.
pub fn secret_problem(secret: &str, production: bool) -> Option<&'static str> {
    if secret.len() < MIN_SECRET_BYTES {
        return Some("must be at least 32 bytes");
    }
    if !production {
        return None;
    }
    if secret == DEVELOPMENT_SECRET {
        return Some(
            "must be set (the development default is refused when ENVIRONMENT=production)",
        );
    }
    let lower = secret.to_ascii_lowercase();
    if PLACEHOLDER_MARKERS
        .iter()
        .any(|marker| lower.contains(marker))
    {
        return Some(
            "is a placeholder (refused when ENVIRONMENT=production): generate one, e.g. `openssl rand -base64 48`",
        );
    }
    let distinct: std::collections::BTreeSet<u8> = secret.bytes().collect();
    if distinct.len() < MIN_DISTINCT_SECRET_BYTES {
        return Some(
            "is too repetitive to be a random secret (refused when ENVIRONMENT=production)",
        );
    }
    None
}

/// What a sync token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncClaims {
    pub user_id: UserId,
    pub session_id: SessionId,
    /// The teams the user was an active member of when the token was issued.
    pub team_ids: Vec<TeamId>,
    /// Epoch milliseconds.
    pub issued_at: i64,
    /// Epoch milliseconds; the token (and any stream opened with it) ends then.
    pub expires_at: i64,
}

/// Why a token was refused (the stream answers 401 with the code).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("the sync token is malformed")]
    Malformed,
    #[error("the sync token's signature is invalid")]
    BadSignature,
    #[error("the sync token has expired")]
    Expired,
    #[error("the sync token claims a lifetime longer than the streamer accepts")]
    LifetimeTooLong,
    #[error("the sync token's issuedAt lies in the future")]
    IssuedInTheFuture,
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed | Self::BadSignature => "INVALID_SYNC_TOKEN",
            Self::Expired => "SYNC_TOKEN_EXPIRED",
            Self::LifetimeTooLong => "SYNC_TOKEN_LIFETIME_TOO_LONG",
            Self::IssuedInTheFuture => "SYNC_TOKEN_NOT_YET_VALID",
        }
    }
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct TokenKey {
    secret: SecretString,
    max_lifetime_ms: i64,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    /// A key accepting lifetimes up to [`DEFAULT_MAX_LIFETIME`].
    pub fn new(secret: SecretString) -> Self {
        Self {
            secret,
            max_lifetime_ms: millis(DEFAULT_MAX_LIFETIME),
        }
    }

    /// Refuse tokens whose `expiresAt - issuedAt` exceeds `max_lifetime`
    /// (`SYNC_TOKEN_MAX_LIFETIME_SECONDS`).
    pub fn with_max_lifetime(mut self, max_lifetime: Duration) -> Self {
        self.max_lifetime_ms = millis(max_lifetime);
        self
    }

    fn mac(&self) -> Hmac<Sha256> {
        // HMAC accepts keys of any length; this cannot fail.
        match Hmac::<Sha256>::new_from_slice(self.secret.expose_secret().as_bytes()) {
            Ok(mac) => mac,
            Err(_) => unreachable!("HMAC takes keys of any length"),
        }
    }

    /// The signed token for `claims`.
    pub fn sign(&self, claims: &SyncClaims) -> String {
        // Serializing a struct of uuids, integers and a vec cannot fail.
        let json = serde_json::to_vec(claims).unwrap_or_default();
        let payload = URL_SAFE_NO_PAD.encode(json);
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        format!("{payload}.{signature}")
    }

    /// The claims of a token signed with this key, not expired at `now_ms`, issued no later
    /// than `now_ms` (give or take [`MAX_CLOCK_SKEW`]) and claiming no longer a lifetime than
    /// this key accepts: a token leaked or signed with a leaked secret stays useful for
    /// minutes, not years.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<SyncClaims, TokenError> {
        let (payload, signature) = token.trim().split_once('.').ok_or(TokenError::Malformed)?;
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed)?;
        let mut mac = self.mac();
        mac.update(payload.as_bytes());
        // Constant-time comparison.
        mac.verify_slice(&signature)
            .map_err(|_| TokenError::BadSignature)?;
        let json = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed)?;
        let claims: SyncClaims =
            serde_json::from_slice(&json).map_err(|_| TokenError::Malformed)?;
        if claims.expires_at <= now_ms {
            return Err(TokenError::Expired);
        }
        if claims.issued_at > now_ms.saturating_add(millis(MAX_CLOCK_SKEW)) {
            return Err(TokenError::IssuedInTheFuture);
        }
        if claims.expires_at.saturating_sub(claims.issued_at) > self.max_lifetime_ms {
            return Err(TokenError::LifetimeTooLong);
        }
        Ok(claims)
    }
}

fn millis(duration: Duration) -> i64 {
    i64::try_from(duration.as_millis()).unwrap_or(i64::MAX)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(expires_at: i64) -> SyncClaims {
        SyncClaims {
            user_id: UserId::generate(),
            session_id: SessionId::generate(),
            team_ids: vec![TeamId::generate()],
            issued_at: 0,
            expires_at,
        }
    }

    #[test]
    fn a_signed_token_verifies_until_it_expires() {
        let key = TokenKey::new(SecretString::from(DEVELOPMENT_SECRET));
        let claims = claims(1_000);
        let token = key.sign(&claims);
        assert_eq!(key.verify(&token, 999).unwrap(), claims);
        assert_eq!(key.verify(&token, 1_000), Err(TokenError::Expired));
    }

    #[test]
    fn tampering_and_other_keys_are_refused() {
        let key = TokenKey::new(SecretString::from(DEVELOPMENT_SECRET));
        let other = TokenKey::new(SecretString::from(
            "another-secret-of-enough-length-0123456789",
        ));
        let token = key.sign(&claims(i64::MAX));
        assert_eq!(other.verify(&token, 0), Err(TokenError::BadSignature));
        let (payload, signature) = token.split_once('.').unwrap();
        let forged = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims(i64::MAX)).unwrap());
        assert_eq!(
            key.verify(&format!("{forged}.{signature}"), 0),
            Err(TokenError::BadSignature)
        );
        assert_eq!(key.verify(payload, 0), Err(TokenError::Malformed));
        assert_eq!(key.verify("a.b!", 0), Err(TokenError::Malformed));
    }

    #[test]
    fn a_token_claiming_a_long_lifetime_is_refused() {
        let key = TokenKey::new(SecretString::from(DEVELOPMENT_SECRET));
        let now = 1_700_000_000_000_i64;
        let ten_years = 10 * 365 * 24 * 3600 * 1000_i64;
        let mut forged = claims(now + ten_years);
        forged.issued_at = now;
        assert_eq!(
            key.verify(&key.sign(&forged), now),
            Err(TokenError::LifetimeTooLong)
        );
        assert_eq!(
            TokenError::LifetimeTooLong.code(),
            "SYNC_TOKEN_LIFETIME_TOO_LONG"
        );
        // The limit is the key's; a token of exactly that lifetime passes.
        let mut normal = claims(now + 900_000);
        normal.issued_at = now;
        assert_eq!(key.verify(&key.sign(&normal), now).unwrap(), normal);
        let strict = key.clone().with_max_lifetime(Duration::from_secs(60));
        assert_eq!(
            strict.verify(&key.sign(&normal), now),
            Err(TokenError::LifetimeTooLong)
        );
    }

    #[test]
    fn a_token_issued_in_the_future_or_without_issued_at_is_refused() {
        let key = TokenKey::new(SecretString::from(DEVELOPMENT_SECRET));
        let now = 1_700_000_000_000_i64;
        let mut early = claims(now + 10 * 60_000);
        early.issued_at = now + 5 * 60_000;
        assert_eq!(
            key.verify(&key.sign(&early), now),
            Err(TokenError::IssuedInTheFuture)
        );
        // Within the clock skew it passes.
        let mut skewed = claims(now + 10 * 60_000);
        skewed.issued_at = now + 10_000;
        assert!(key.verify(&key.sign(&skewed), now).is_ok());

        let json = serde_json::json!({
            "userId": UserId::generate(),
            "sessionId": SessionId::generate(),
            "teamIds": [],
            "expiresAt": now + 60_000,
        });
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&json).unwrap());
        let mut mac = key.mac();
        mac.update(payload.as_bytes());
        let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
        assert_eq!(
            key.verify(&format!("{payload}.{signature}"), now),
            Err(TokenError::Malformed)
        );
    }

    #[test]
    fn default_placeholder_short_and_repetitive_secrets_are_refused_in_production() {
        for refused in [
            DEVELOPMENT_SECRET,
            "REPLACE_ME_WITH_32_OR_MORE_RANDOM_BYTES",
            "development-only-sync-token-secret-0123456789abcdef",
            "please-change-me-to-something-random-0123",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "short",
        ] {
            assert!(secret_problem(refused, true).is_some(), "{refused}");
        }
        let generated = "q3X9vT0bW2e8Lr5NfK7yHcZ1aMdP4uGs6jQiVoEx";
        assert_eq!(secret_problem(generated, true), None);
        // Development accepts the default; a short secret is refused everywhere.
        assert_eq!(secret_problem(DEVELOPMENT_SECRET, false), None);
        assert!(secret_problem("short", false).is_some());
    }
}
