//! Google sign-in: OAuth 2.0 authorization code flow with PKCE, `state` and an OpenID
//! Connect `nonce`, through the `oauth2` crate.
//!
//! 1. `GET /auth/google/start[?returnTo=<url on an allowed origin>]`: makes a PKCE pair, a
//!    random `state` and `nonce`; stores the verifier and nonce under the state's hash
//!    (`oauth_states`, 10 minutes, single use); sets the `oauth_state` cookie (binds the flow
//!    to this browser: login CSRF); redirects (303) to the provider.
//! 2. `GET /auth/google/callback?code&state`: checks the cookie against `state`, takes the
//!    stored row (deleting it), exchanges the code with the PKCE verifier at the token
//!    endpoint, and validates the ID token: its RS256 signature against the provider's JWKS
//!    (`GOOGLE_JWKS_URL`, cached an hour and fetched again when a token names a key id the
//!    cache lacks, as Google rotates keys), then `iss`, `aud` = our client id, `azp` (when
//!    present, and required with several audiences), `exp`, `iat` (not in the future, at most
//!    ten minutes old) and `nonce`. Outside development every Google URL must be https
//!    (config), so neither the code exchange nor the keys can be tampered with in transit.
//!    An address Google has not verified (`email_verified` false) never signs in: it could
//!    create or take over an account by an address its holder does not own
//!    (`authError=email_not_verified`). The user is found by Google subject, else linked by
//!    email, else created; a session starts (cookie) and the browser goes back to
//!    `returnTo` or `APP_URL`.
//!
//! Failures after the provider round trip redirect to the app with `?authError=<code>`, so
//! the user lands somewhere useful; a request that is not a sign-in in flight gets 400.

pub mod failure;
pub mod id_token;
pub mod provider_keys;

use axum::extract::{Query, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope, StandardRevocableToken,
    StandardTokenResponse, TokenUrl,
};
use platform::config::origin_of;
use secrecy::ExposeSecret;
use serde::Deserialize;
use url::Url;

use self::failure::{SignInFailure, internal};
use self::id_token::{IdTokenFields, check_claims, send, verify_id_token};
use crate::config::GoogleConfig;
use crate::http::client_ip::ClientIp;
use crate::http::error::{ApiError, PlainError};
use crate::modules::auth::session;
use crate::modules::auth::session::session_origin;
use crate::modules::auth::session::{hash_token, session_cookie};
use crate::modules::users;
use crate::modules::users::types::NewUser;
use crate::state::AppState;
use sync_protocol::synced_tx::SyncedTx;

const STATE_COOKIE: &str = "oauth_state";
const STATE_TTL_MINUTES: i32 = 10;
type GoogleTokenResponse = StandardTokenResponse<IdTokenFields, BasicTokenType>;

type GoogleClient = oauth2::Client<
    BasicErrorResponse,
    GoogleTokenResponse,
    BasicTokenIntrospectionResponse,
    StandardRevocableToken,
    BasicRevocationErrorResponse,
    EndpointSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointNotSet,
    EndpointSet,
>;

fn client(config: &GoogleConfig) -> Result<GoogleClient, ApiError> {
    Ok(oauth2::Client::new(ClientId::new(config.client_id.clone()))
        .set_client_secret(ClientSecret::new(
            config.client_secret.expose_secret().to_owned(),
        ))
        .set_auth_uri(AuthUrl::from_url(config.auth_url.clone()))
        .set_token_uri(TokenUrl::from_url(config.token_url.clone()))
        .set_redirect_uri(RedirectUrl::from_url(config.redirect_url.clone())))
}

fn google(state: &AppState) -> Result<&GoogleConfig, ApiError> {
    state
        .config
        .google
        .as_ref()
        .ok_or_else(|| ApiError::NotFound("Google sign-in is not configured".to_owned()))
}

fn random_token() -> String {
    let bytes: [u8; 32] = rand::random();
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StartQuery {
    return_to: Option<String>,
}

/// `GET /auth/google/start`.
pub async fn start(
    State(state): State<AppState>,
    client_ip: ClientIp,
    Query(query): Query<StartQuery>,
) -> Result<Response, PlainError> {
    let config = google(&state)?;
    state.auth_limiter.check(client_ip.0)?;
    let return_to = match query.return_to {
        None => None,
        Some(target) => Some(checked_return_to(&state, &target)?),
    };
    let (challenge, verifier) = PkceCodeChallenge::new_random_sha256();
    let nonce = random_token();
    let (authorize_url, csrf_state) = client(config)?
        .authorize_url(CsrfToken::new_random)
        .add_scope(Scope::new("openid".to_owned()))
        .add_scope(Scope::new("email".to_owned()))
        .add_scope(Scope::new("profile".to_owned()))
        .add_extra_param("nonce", &nonce)
        .add_extra_param("prompt", "select_account")
        .set_pkce_challenge(challenge)
        .url();
    // Expired flows are removed as new ones start; the table holds minutes of sign-ins.
    sqlx::query("DELETE FROM oauth_states WHERE expires_at < now()")
        .execute(&state.db)
        .await?;
    sqlx::query(
        "INSERT INTO oauth_states (state_hash, pkce_verifier, nonce, return_to, expires_at)
         VALUES ($1, $2, $3, $4, now() + make_interval(mins => $5))",
    )
    .bind(hash_token(csrf_state.secret()))
    .bind(verifier.secret())
    .bind(&nonce)
    .bind(return_to.as_ref().map(Url::as_str))
    .bind(STATE_TTL_MINUTES)
    .execute(&state.db)
    .await?;
    let cookie = format!(
        "{STATE_COOKIE}={}; HttpOnly; SameSite=Lax; Path=/auth/google; Max-Age={}{}",
        csrf_state.secret(),
        STATE_TTL_MINUTES * 60,
        if state.config.session_cookie_secure {
            "; Secure"
        } else {
            ""
        }
    );
    Ok((
        StatusCode::SEE_OTHER,
        [(LOCATION, authorize_url.to_string()), (SET_COOKIE, cookie)],
    )
        .into_response())
}

/// `returnTo` must be on an allowed origin: no open redirect.
fn checked_return_to(state: &AppState, target: &str) -> Result<Url, ApiError> {
    let url = Url::parse(target).map_err(|_| {
        ApiError::field(
            "returnTo",
            "invalid_format",
            "Invalid URL: expected an absolute URL",
        )
    })?;
    if !state.config.allowed_origins.contains(&origin_of(&url)) {
        return Err(ApiError::field(
            "returnTo",
            "custom",
            "returnTo must be on an allowed origin (ALLOWED_ORIGINS)",
        ));
    }
    Ok(url)
}

#[derive(Debug, Deserialize)]
pub struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    /// Set by the provider when the user declined or the request was refused.
    error: Option<String>,
}

#[derive(sqlx::FromRow)]
struct PendingSignIn {
    pkce_verifier: String,
    nonce: String,
    return_to: Option<String>,
}

/// `GET /auth/google/callback`.
pub async fn callback(
    State(state): State<AppState>,
    client_ip: ClientIp,
    headers: HeaderMap,
    Query(query): Query<CallbackQuery>,
) -> Result<Response, PlainError> {
    let config = google(&state)?;
    state.auth_limiter.check(client_ip.0)?;
    let Some(csrf_state) = query
        .state
        .filter(|value| !value.is_empty() && value.len() <= 256)
    else {
        return Err(PlainError(ApiError::field(
            "state",
            "invalid_type",
            "The sign-in request has no state",
        )));
    };
    if state_cookie(&headers).as_deref() != Some(csrf_state.as_str()) {
        return Err(PlainError(ApiError::forbidden(
            "This sign-in was not started in this browser (state cookie missing or different)",
        )));
    }
    // Single use: the row is gone whatever happens next.
    let pending: Option<PendingSignIn> = sqlx::query_as(
        "DELETE FROM oauth_states WHERE state_hash = $1 AND expires_at > now()
         RETURNING pkce_verifier, nonce, return_to",
    )
    .bind(hash_token(&csrf_state))
    .fetch_optional(&state.db)
    .await?;
    let Some(pending) = pending else {
        return Err(PlainError(ApiError::forbidden(
            "This sign-in expired or was already used; start again",
        )));
    };
    let landing = pending
        .return_to
        .as_deref()
        .and_then(|target| Url::parse(target).ok())
        .unwrap_or_else(|| state.config.app_url.clone());
    let clear_state_cookie =
        format!("{STATE_COOKIE}=; HttpOnly; SameSite=Lax; Path=/auth/google; Max-Age=0");
    let outcome = finish(
        &state,
        config,
        &query.code,
        query.error,
        pending,
        &headers,
        client_ip,
    )
    .await;
    let (location, session_cookie) = match outcome {
        Ok(cookie) => (landing, Some(cookie)),
        Err(failure) => {
            tracing::warn!(code = failure.code, detail = %failure.detail, "google sign-in failed");
            let mut target = landing;
            target
                .query_pairs_mut()
                .append_pair("authError", failure.code);
            (target, None)
        }
    };
    let mut response = (
        StatusCode::SEE_OTHER,
        [
            (LOCATION, location.to_string()),
            (SET_COOKIE, clear_state_cookie),
        ],
    )
        .into_response();
    if let Some(cookie) = session_cookie
        && let Ok(value) = cookie.parse()
    {
        response.headers_mut().append(SET_COOKIE, value);
    }
    Ok(response)
}

fn state_cookie(headers: &HeaderMap) -> Option<String> {
    headers
        .get_all(COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(name, _)| *name == STATE_COOKIE)
        .map(|(_, value)| value.trim().to_owned())
}

/// Exchange the code, validate the ID token, sign the user in. Returns the session cookie.
async fn finish(
    state: &AppState,
    config: &GoogleConfig,
    code: &Option<String>,
    provider_error: Option<String>,
    pending: PendingSignIn,
    headers: &HeaderMap,
    client_ip: ClientIp,
) -> Result<String, SignInFailure> {
    if let Some(error) = provider_error {
        let code = if error == "access_denied" {
            "access_denied"
        } else {
            "provider_error"
        };
        return Err(SignInFailure::new(code, error));
    }
    let code = code
        .as_deref()
        .filter(|code| !code.is_empty())
        .ok_or_else(|| SignInFailure::new("missing_code", "the callback has no code"))?;
    let http = state.http.clone();
    let timeout = config.http_timeout;
    let http_client = move |request: oauth2::HttpRequest| {
        let http = http.clone();
        async move { send(&http, timeout, request).await }
    };
    let token = client(config)
        .map_err(|error| SignInFailure::new("configuration", error.to_string()))?
        .exchange_code(AuthorizationCode::new(code.to_owned()))
        .set_pkce_verifier(PkceCodeVerifier::new(pending.pkce_verifier))
        .request_async(&http_client)
        .await
        .map_err(|error| SignInFailure::new("token_exchange_failed", error.to_string()))?;
    let id_token = token.extra_fields().id_token.as_deref().ok_or_else(|| {
        SignInFailure::new("invalid_id_token", "the token response has no id_token")
    })?;
    let claims = verify_id_token(state, config, id_token).await?;
    check_claims(&claims, config, &pending.nonce, chrono::Utc::now())?;
    if !claims.email_verified() {
        return Err(SignInFailure::new(
            "email_not_verified",
            "Google has not verified this email address",
        ));
    }
    let email = claims
        .email
        .as_deref()
        .map(|email| email.trim().to_lowercase())
        .filter(|email| email.contains('@'))
        .ok_or_else(|| SignInFailure::new("email_missing", "the ID token has no email"))?;
    let name = claims
        .name
        .clone()
        .filter(|name| !name.trim().is_empty())
        .unwrap_or_else(|| email.split('@').next().unwrap_or_default().to_owned());
    let mut tx = SyncedTx::begin(&state.db).await.map_err(internal)?;
    let user = users::store::find_or_create(
        &mut tx,
        NewUser {
            email,
            name: name.chars().take(100).collect(),
            avatar_url: claims
                .picture
                .clone()
                .filter(|url| url.starts_with("https://")),
            google_subject: Some(claims.sub.clone()),
            email_verified: claims.email_verified(),
            via: "google",
        },
    )
    .await
    .map_err(|error| match error {
        ApiError::Forbidden(message) => SignInFailure::new("account_link_refused", message),
        other => internal(other),
    })?;
    let token = session::create_session(&mut tx, user.user_id, &session_origin(headers, client_ip))
        .await
        .map_err(internal)?;
    tx.commit().await.map_err(internal)?;
    Ok(session_cookie(&state.config, &token))
}

#[cfg(test)]
mod tests;
