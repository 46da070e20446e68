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

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::header::{COOKIE, LOCATION, SET_COOKIE};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use moka::future::Cache;
use oauth2::basic::{
    BasicErrorResponse, BasicRevocationErrorResponse, BasicTokenIntrospectionResponse,
    BasicTokenType,
};
use oauth2::{
    AuthUrl, AuthorizationCode, ClientId, ClientSecret, CsrfToken, EndpointNotSet, EndpointSet,
    ExtraTokenFields, PkceCodeChallenge, PkceCodeVerifier, RedirectUrl, Scope,
    StandardRevocableToken, StandardTokenResponse, TokenUrl,
};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use url::Url;

use crate::AppState;
use crate::auth::session_origin;
use crate::client_ip::ClientIp;
use crate::config::GoogleConfig;
use crate::error::{ApiError, PlainError};
use crate::session::{self, hash_token, session_cookie};
use crate::users::{self, NewUser};
use platform::config::origin_of;

const STATE_COOKIE: &str = "oauth_state";
const STATE_TTL_MINUTES: i32 = 10;
/// Clock skew tolerated on the ID token's `exp` and `iat`.
const CLOCK_SKEW_SECONDS: i64 = 60;
/// Oldest `iat` accepted: the token comes straight from the token endpoint, so it was just
/// issued; an old one is a replay.
const MAX_ID_TOKEN_AGE_SECONDS: i64 = 600;
/// How long the provider's JWKS is trusted before it is fetched again (Google rotates keys
/// over days and publishes new ones well before use; an unknown `kid` refetches at once).
const JWKS_TTL: Duration = Duration::from_secs(3600);

/// The provider's signing keys (JWKS), cached by URL; shared by every sign-in of a replica.
pub struct ProviderKeys {
    sets: Cache<String, Arc<JwkSet>>,
}

impl Default for ProviderKeys {
    fn default() -> Self {
        Self {
            sets: Cache::builder()
                .max_capacity(4)
                .time_to_live(JWKS_TTL)
                .build(),
        }
    }
}

impl ProviderKeys {
    /// The key `kid` from the JWKS at `url`: from the cache, else fetched (single flight);
    /// a `kid` the cached set lacks fetches the set once more (a rotated key).
    async fn key(
        &self,
        http: &reqwest::Client,
        url: &Url,
        timeout: Duration,
        kid: &str,
    ) -> Result<DecodingKey, SignInFailure> {
        let cached = self.sets.get(url.as_str()).await;
        let set = match cached {
            Some(set) if set.find(kid).is_some() => set,
            Some(_) => {
                self.sets.invalidate(url.as_str()).await;
                self.load(http, url, timeout).await?
            }
            None => self.load(http, url, timeout).await?,
        };
        let jwk = set.find(kid).ok_or_else(|| {
            SignInFailure::new("invalid_id_token", format!("no key {kid:?} in the JWKS"))
        })?;
        DecodingKey::from_jwk(jwk)
            .map_err(|error| SignInFailure::new("invalid_id_token", format!("JWKS key: {error}")))
    }

    async fn load(
        &self,
        http: &reqwest::Client,
        url: &Url,
        timeout: Duration,
    ) -> Result<Arc<JwkSet>, SignInFailure> {
        self.sets
            .try_get_with(url.as_str().to_owned(), async {
                let response = http
                    .get(url.clone())
                    .timeout(timeout)
                    .send()
                    .await
                    .and_then(reqwest::Response::error_for_status)
                    .map_err(|error| error.to_string())?;
                let set: JwkSet = response.json().await.map_err(|error| error.to_string())?;
                Ok::<_, String>(Arc::new(set))
            })
            .await
            .map_err(|error| SignInFailure::new("provider_error", format!("JWKS: {error}")))
    }
}

/// The token response, keeping the OpenID Connect `id_token`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IdTokenFields {
    #[serde(default)]
    id_token: Option<String>,
}

impl ExtraTokenFields for IdTokenFields {}

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

/// Why a sign-in failed, as sent to the app in `?authError=`.
#[derive(Debug)]
struct SignInFailure {
    code: &'static str,
    detail: String,
}

impl SignInFailure {
    fn new(code: &'static str, detail: impl Into<String>) -> Self {
        Self {
            code,
            detail: detail.into(),
        }
    }
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
    let mut tx = state.db.begin().await.map_err(internal)?;
    let user = users::find_or_create(
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

fn internal(error: impl std::fmt::Display) -> SignInFailure {
    SignInFailure::new("server_error", error.to_string())
}

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct HttpClientError(String);

/// oauth2's HTTP calls through our reqwest client (no redirects: a token endpoint that
/// redirects is refused, which also closes an SSRF path), each bounded by `timeout` from
/// connecting to the end of the body (`GOOGLE_HTTP_TIMEOUT_SECONDS`).
async fn send(
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
    iss: String,
    aud: Audience,
    sub: String,
    exp: i64,
    iat: Option<i64>,
    azp: Option<String>,
    nonce: Option<String>,
    email: Option<String>,
    #[serde(default)]
    email_verified: Option<BoolOrString>,
    name: Option<String>,
    picture: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum Audience {
    One(String),
    Many(Vec<String>),
}

/// Some providers send `"email_verified": "true"`.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum BoolOrString {
    Bool(bool),
    Text(String),
}

impl IdTokenClaims {
    fn email_verified(&self) -> bool {
        match &self.email_verified {
            Some(BoolOrString::Bool(verified)) => *verified,
            Some(BoolOrString::Text(text)) => text == "true",
            None => false,
        }
    }
}

/// The ID token's claims once its signature verified against the provider's JWKS (RS256
/// only: the `alg` a token names is never trusted), with `iss`, `aud` and `exp` checked.
async fn verify_id_token(
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
fn check_claims(
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn config() -> GoogleConfig {
        GoogleConfig {
            client_id: "client-1".into(),
            client_secret: secrecy::SecretString::from("secret".to_owned()),
            auth_url: Url::parse("https://idp.test/auth").unwrap(),
            token_url: Url::parse("https://idp.test/token").unwrap(),
            jwks_url: Url::parse("https://idp.test/certs").unwrap(),
            issuer: "https://accounts.google.com".into(),
            redirect_url: Url::parse("http://localhost:8080/auth/google/callback").unwrap(),
            http_timeout: GoogleConfig::DEFAULT_HTTP_TIMEOUT,
        }
    }

    fn claims(overrides: serde_json::Value) -> IdTokenClaims {
        let mut claims = serde_json::json!({
            "iss": "https://accounts.google.com", "aud": "client-1", "sub": "123",
            "exp": 2_000_000_000_i64, "iat": 1_899_999_900_i64, "nonce": "n-1",
            "email": "a@example.com", "email_verified": true,
        });
        for (key, value) in overrides.as_object().unwrap() {
            claims[key] = value.clone();
        }
        serde_json::from_value(claims).unwrap()
    }

    #[test]
    fn id_token_claims_are_checked() {
        let now = chrono::DateTime::from_timestamp(1_900_000_000, 0).unwrap();
        let ok = claims(serde_json::json!({}));
        check_claims(&ok, &config(), "n-1", now).unwrap();
        assert!(ok.email_verified());
        // Google's bare issuer form and an audience list naming us as `azp` are accepted.
        check_claims(
            &claims(serde_json::json!({
                "iss": "accounts.google.com", "aud": ["x", "client-1"], "azp": "client-1",
            })),
            &config(),
            "n-1",
            now,
        )
        .unwrap();
        for (bad, why) in [
            (serde_json::json!({"iss": "https://evil.test"}), "issuer"),
            (serde_json::json!({"aud": "other-client"}), "audience"),
            (serde_json::json!({"azp": "other-client"}), "azp"),
            (serde_json::json!({"aud": ["x", "client-1"]}), "azp"),
            (serde_json::json!({"exp": 1_800_000_000_i64}), "expired"),
            (serde_json::json!({"iat": null}), "iat"),
            (serde_json::json!({"iat": 1_900_000_500_i64}), "future"),
            (
                serde_json::json!({"iat": 1_899_990_000_i64}),
                "too long ago",
            ),
            (serde_json::json!({"nonce": "replayed"}), "nonce"),
        ] {
            let error = check_claims(&claims(bad), &config(), "n-1", now).unwrap_err();
            assert!(error.detail.contains(why), "{why}: {}", error.detail);
        }
    }
}
