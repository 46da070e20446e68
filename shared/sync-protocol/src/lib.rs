//! The sync token (ARCHITECTURE §5 step 4, §9 `sync.token`): issued by the api to a signed-in
//! user, verified by the sync-streamer without touching the api's schema.
//!
//! Format: `<base64url(claims JSON)>.<base64url(HMAC-SHA256(secret, first part))>`, no
//! padding. The secret is `SYNC_TOKEN_SECRET`, configured identically on both services. The
//! claims carry the user, the session the token was issued from (so revoking the session
//! closes the streams), the user's team scopes at issue time, and the expiry.

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

/// The development default of `SYNC_TOKEN_SECRET` (refused by the api in production).
pub const DEVELOPMENT_SECRET: &str = "development-only-sync-token-secret-change-me";
/// Shorter secrets are refused at start: HMAC keys should carry at least 256 bits.
pub const MIN_SECRET_BYTES: usize = 32;

/// What a sync token asserts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SyncClaims {
    pub user_id: Uuid,
    pub session_id: Uuid,
    /// The teams the user was an active member of when the token was issued.
    pub team_ids: Vec<Uuid>,
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
}

impl TokenError {
    pub fn code(&self) -> &'static str {
        match self {
            Self::Malformed | Self::BadSignature => "INVALID_SYNC_TOKEN",
            Self::Expired => "SYNC_TOKEN_EXPIRED",
        }
    }
}

/// Signs and verifies tokens with one secret.
#[derive(Clone)]
pub struct TokenKey {
    secret: SecretString,
}

impl std::fmt::Debug for TokenKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("TokenKey([redacted])")
    }
}

impl TokenKey {
    pub fn new(secret: SecretString) -> Self {
        Self { secret }
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

    /// The claims of a token signed with this key and not expired at `now_ms`.
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
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn claims(expires_at: i64) -> SyncClaims {
        SyncClaims {
            user_id: Uuid::new_v4(),
            session_id: Uuid::new_v4(),
            team_ids: vec![Uuid::new_v4()],
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
}
