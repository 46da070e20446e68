//! Google's ID token: its signing keys (JWKS, cached), its claims and their checks.

use super::failure::SignInFailure;
use crate::config::GoogleConfig;
use crate::state::AppState;
use jsonwebtoken::{Algorithm, Validation};
use oauth2::ExtraTokenFields;
use serde::{Deserialize, Serialize};
use std::time::Duration;

/// Clock skew tolerated on the ID token's `exp` and `iat`.
const CLOCK_SKEW_SECONDS: i64 = 60;
/// Oldest `iat` accepted: the token comes straight from the token endpoint, so it was just
/// issued; an old one is a replay.
const MAX_ID_TOKEN_AGE_SECONDS: i64 = 600;
/// The token response, keeping the OpenID Connect `id_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    #[serde(default)]
    pub(crate) id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenFields {}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpClientError(String);

/// oauth2's HTTP calls through our reqwest client (no redirects: a token endpoint that
/// redirects is refused, which also closes an SSRF path), each bounded by `timeout` from
/// connecting to the end of the body (`GOOGLE_HTTP_TIMEOUT_SECONDS`).
pub(crate) async fn send(
    http: &reqwest::Client,
    timeout: Duration,
    request: oauth2::HttpRequest,
) -> Result<oauth2::HttpResponse, HttpClientError> {
    let (parts, body) = request.into_parts();
    let response = http
        .request(parts.method, parts.uri.to_string())
        .headers(parts.headers)
        .timeout(timeout)
        .body(body)
        .send()
        .await
        .map_err(|error| HttpClientError(error.to_string()))?;
    let mut builder = axum::http::Response::builder().status(response.status());
    for (name, value) in response.headers() {
        builder = builder.header(name, value);
    }
    let body = response
        .bytes()
        .await
        .map_err(|error| HttpClientError(error.to_string()))?;
    builder
        .body(body.to_vec())
        .map_err(|error| HttpClientError(error.to_string()))
}

/// The ID token claims we use.
#[derive(Debug, Clone, Deserialize)]
pub struct IdTokenClaims {
    pub(crate) iss: String,
    pub(crate) aud: Audience,
    pub(crate) sub: String,
    pub(crate) exp: i64,
    pub(crate) iat: Option<i64>,
    pub(crate) azp: Option<String>,
    pub(crate) nonce: Option<String>,
    pub(crate) email: Option<String>,
    #[serde(default)]
    pub(crate) email_verified: Option<BoolOrString>,
    pub(crate) name: Option<String>,
    pub(crate) picture: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Some providers send `"email_verified": "true"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub(crate) enum BoolOrString {
    Bool(bool),
    Text(String),
}

impl IdTokenClaims {
    pub(crate) fn email_verified(&self) -> bool {
        match &self.email_verified {
            Some(BoolOrString::Bool(verified)) => *verified,
            Some(BoolOrString::Text(text)) => text == "true",
            None => false,
        }
    }
}

/// The ID token's claims once its signature verified against the provider's JWKS (RS256
/// only: the `alg` a token names is never trusted), with `iss`, `aud` and `exp` checked.
pub(crate) async fn verify_id_token(
    state: &AppState,
    config: &GoogleConfig,
    id_token: &str,
) -> Result<IdTokenClaims, SignInFailure> {
    let invalid = |detail: String| SignInFailure::new("invalid_id_token", detail);
    let header = jsonwebtoken::decode_header(id_token)
        .map_err(|error| invalid(format!("not a JWT: {error}")))?;
    if header.alg != Algorithm::RS256 {
        return Err(invalid(format!("algorithm {:?} is not RS256", header.alg)));
    }
    let kid = header
        .kid
        .ok_or_else(|| invalid("the header names no key (kid)".to_owned()))?;
    let key = state
        .google_keys
        .key(&state.http, &config.jwks_url, config.http_timeout, &kid)
        .await?;
    let mut validation = Validation::new(Algorithm::RS256);
    validation.set_audience(&[&config.client_id]);
    validation.set_issuer(&[
        config.issuer.as_str(),
        config.issuer.trim_start_matches("https://"),
    ]);
    validation.set_required_spec_claims(&["exp", "iss", "aud", "sub"]);
    validation.leeway = CLOCK_SKEW_SECONDS.unsigned_abs();
    jsonwebtoken::decode::<IdTokenClaims>(id_token, &key, &validation)
        .map(|data| data.claims)
        .map_err(|error| invalid(format!("signature or claims: {error}")))
}

/// The claims checks (repeated after the library's, so they hold on their own): issuer,
/// audience and authorized party, expiry, issue time, nonce, subject.
pub(crate) fn check_claims(
    claims: &IdTokenClaims,
    config: &GoogleConfig,
    expected_nonce: &str,
    now: chrono::DateTime<chrono::Utc>,
) -> Result<(), SignInFailure> {
    let invalid = |detail: &str| SignInFailure::new("invalid_id_token", detail.to_owned());
    let bare_issuer = config.issuer.trim_start_matches("https://");
    if claims.iss != config.issuer && claims.iss != bare_issuer {
        return Err(invalid("issuer mismatch"));
    }
    let audience_ok = match &claims.aud {
        Audience::One(audience) => *audience == config.client_id,
        Audience::Many(audiences) => audiences.contains(&config.client_id),
    };
    if !audience_ok {
        return Err(invalid("audience mismatch"));
    }
    // `azp` is the client the token was issued to: ours, and required when the token is
    // meant for several audiences.
    let several_audiences = matches!(&claims.aud, Audience::Many(audiences) if audiences.len() > 1);
    match claims.azp.as_deref() {
        Some(azp) if azp != config.client_id => {
            return Err(invalid("authorized party (azp) mismatch"));
        }
        None if several_audiences => return Err(invalid("no authorized party (azp)")),
        _ => {}
    }
    if claims.exp + CLOCK_SKEW_SECONDS < now.timestamp() {
        return Err(invalid("expired"));
    }
    let Some(iat) = claims.iat else {
        return Err(invalid("no issue time (iat)"));
    };
    if iat > now.timestamp() + CLOCK_SKEW_SECONDS {
        return Err(invalid("issued in the future (iat)"));
    }
    if iat + MAX_ID_TOKEN_AGE_SECONDS + CLOCK_SKEW_SECONDS < now.timestamp() {
        return Err(invalid("issued too long ago (iat)"));
    }
    if claims.nonce.as_deref() != Some(expected_nonce) {
        return Err(invalid("nonce mismatch"));
    }
    if claims.sub.is_empty() {
        return Err(invalid("no subject"));
    }
    Ok(())
}
