//! The `cron_job_auth` tier: the cron hooks (`/cron/<job>`) answer only a caller holding
//! `CRON_SECRET`.

use axum::http::{HeaderMap, StatusCode};
use secrecy::ExposeSecret;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::http::error::ApiError;
use crate::state::AppState;

/// `cron_job_auth`: `Authorization: Bearer <CRON_SECRET>`, compared in constant time
/// (both sides hashed first, so not even the length leaks).
pub fn authorize(state: &AppState, headers: &HeaderMap) -> Result<(), ApiError> {
    let Some(secret) = &state.config.cron_job_secret else {
        return Err(ApiError::defined(
            "CRON_HOOKS_DISABLED",
            StatusCode::NOT_FOUND,
            "Cron hooks are disabled: CRON_SECRET is not set",
        ));
    };
    let presented = headers
        .get(axum::http::header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| value.strip_prefix("Bearer "))
        .ok_or(ApiError::Unauthorized(
            "Missing `Authorization: Bearer <cron job secret>`",
        ))?;
    let presented = Sha256::digest(presented.trim().as_bytes());
    let expected = Sha256::digest(secret.expose_secret().as_bytes());
    if bool::from(presented.ct_eq(&expected)) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("Invalid cron job secret"))
    }
}
