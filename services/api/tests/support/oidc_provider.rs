//! A stand-in for Google's OAuth 2.0 / OpenID Connect endpoints, speaking the protocol the
//! api's production code calls: `GET /authorize` (authorization code request with PKCE S256,
//! state and nonce; "the user consents" at once and is redirected back), `POST /token`
//! (form-encoded code exchange, client authenticated with HTTP Basic, PKCE verifier checked,
//! answers with an access token and an RS256-signed ID token) and `GET /jwks` (the public
//! signing keys, as Google's `oauth2/v3/certs`). It is strict where Google is strict, so a
//! test passes only when the client does the protocol right. It can also fail the way a
//! provider (or a proxy in front of it) fails: a 5xx, a garbled body, no answer at all.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic, dead_code)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Form, Query, State};
use axum::http::header::{AUTHORIZATION, CONTENT_TYPE, LOCATION};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use serde::Deserialize;
use serde_json::json;
use sha2::{Digest, Sha256};
use tokio::net::TcpListener;

#[path = "stand_in_keys.rs"]
mod stand_in_keys;
use stand_in_keys::{KEY_1, KEY_2, StandInKey};

pub const CLIENT_ID: &str = "stand-in-client";
pub const CLIENT_SECRET: &str = "stand-in-secret";

/// Who "signs in" at the provider next.
#[derive(Debug, Clone)]
pub struct Identity {
    pub sub: String,
    pub email: String,
    pub email_verified: bool,
    pub name: String,
}

/// How the provider misbehaves (to test the client's checks).
#[derive(Debug, Clone, Default)]
pub struct Faults {
    /// Put this nonce into the ID token instead of the requested one.
    pub wrong_nonce: Option<String>,
    /// Answer `/authorize` with `error=access_denied`.
    pub deny: bool,
    /// Sign the ID token with a key the JWKS does not hold, under the published key's id
    /// (a forged token).
    pub forged_signature: bool,
    /// How `/token` answers (its checks still run, and use the code up).
    pub token_answer: TokenAnswer,
}

/// What `/token` sends back.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum TokenAnswer {
    /// The tokens (the protocol's answer).
    #[default]
    Tokens,
    /// `500` with an HTML error page, as a failing provider or its proxy sends.
    ServerError,
    /// `200 application/json` whose body is cut off mid-document.
    Garbled,
    /// Nothing: the connection stays open and no status line ever comes.
    Silence,
    /// The status line and headers of a JSON answer, then never a byte of the body.
    StalledBody,
}

struct Grant {
    redirect_uri: String,
    code_challenge: String,
    nonce: String,
    identity: Identity,
}

#[derive(Default)]
struct Inner {
    identity: Option<Identity>,
    faults: Faults,
    grants: HashMap<String, Grant>,
    /// Every `/token` request that passed the checks.
    exchanges: usize,
    /// Every `/token` request received, whatever the answer.
    token_requests: usize,
    /// The query of every `/authorize` request.
    authorize_requests: Vec<HashMap<String, String>>,
    /// Signs ID tokens and is the only key `/jwks` serves; `rotate_key` switches to the second.
    rotated: bool,
    /// `/jwks` requests served.
    jwks_fetches: usize,
}

impl Inner {
    fn signing_key(&self) -> &'static StandInKey {
        if self.rotated { &KEY_2 } else { &KEY_1 }
    }
}

#[derive(Clone)]
pub struct StandInProvider {
    pub base_url: String,
    inner: Arc<Mutex<Inner>>,
}

impl StandInProvider {
    pub async fn start() -> Self {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base_url = format!("http://{}", listener.local_addr().unwrap());
        let app = Router::new()
            .route("/authorize", get(authorize))
            .route("/token", post(token))
            .route("/jwks", get(jwks))
            .with_state(Provider {
                issuer: base_url.clone(),
                inner: inner.clone(),
            });
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self { base_url, inner }
    }

    pub fn sign_in_as(&self, identity: Identity) {
        self.inner.lock().unwrap().identity = Some(identity);
    }

    pub fn set_faults(&self, faults: Faults) {
        self.inner.lock().unwrap().faults = faults;
    }

    pub fn exchanges(&self) -> usize {
        self.inner.lock().unwrap().exchanges
    }

    /// `/token` requests received (answered or not).
    pub fn token_requests(&self) -> usize {
        self.inner.lock().unwrap().token_requests
    }

    /// Sign with the second key from now on, and publish only it (a key rotation).
    pub fn rotate_key(&self) {
        self.inner.lock().unwrap().rotated = true;
    }

    pub fn jwks_fetches(&self) -> usize {
        self.inner.lock().unwrap().jwks_fetches
    }

    pub fn last_authorize_request(&self) -> HashMap<String, String> {
        self.inner
            .lock()
            .unwrap()
            .authorize_requests
            .last()
            .cloned()
            .unwrap()
    }

    /// The api's Google settings pointing at this provider.
    pub fn google_config(&self, api_base_url: &str) -> api::config::GoogleConfig {
        api::config::GoogleConfig {
            client_id: CLIENT_ID.to_owned(),
            client_secret: secrecy::SecretString::from(CLIENT_SECRET.to_owned()),
            auth_url: format!("{}/authorize", self.base_url).parse().unwrap(),
            token_url: format!("{}/token", self.base_url).parse().unwrap(),
            jwks_url: format!("{}/jwks", self.base_url).parse().unwrap(),
            issuer: self.base_url.clone(),
            redirect_url: format!("{api_base_url}/auth/google/callback")
                .parse()
                .unwrap(),
            http_timeout: api::config::GoogleConfig::DEFAULT_HTTP_TIMEOUT,
        }
    }
}

#[derive(Clone)]
struct Provider {
    issuer: String,
    inner: Arc<Mutex<Inner>>,
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response()
}

async fn authorize(
    State(provider): State<Provider>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut inner = provider.inner.lock().unwrap();
    inner.authorize_requests.push(query.clone());
    let param = |name: &str| query.get(name).cloned().unwrap_or_default();
    let redirect_uri = param("redirect_uri");
    // Errors before the redirect URI is trusted are shown to the user, not redirected.
    if param("client_id") != CLIENT_ID || redirect_uri.is_empty() {
        return oauth_error(StatusCode::BAD_REQUEST, "invalid_request", "unknown client");
    }
    let state = param("state");
    let redirect = |pairs: &[(&str, &str)]| {
        let mut url = url::Url::parse(&redirect_uri).unwrap();
        for (name, value) in pairs {
            url.query_pairs_mut().append_pair(name, value);
        }
        url.query_pairs_mut().append_pair("state", &state);
        (StatusCode::FOUND, [(LOCATION, url.to_string())]).into_response()
    };
    if param("response_type") != "code"
        || !param("scope").split(' ').any(|scope| scope == "openid")
        || param("code_challenge_method") != "S256"
        || param("code_challenge").is_empty()
        || param("nonce").is_empty()
        || state.is_empty()
    {
        return redirect(&[("error", "invalid_request")]);
    }
    if inner.faults.deny {
        return redirect(&[("error", "access_denied")]);
    }
    let Some(identity) = inner.identity.clone() else {
        return redirect(&[("error", "access_denied")]);
    };
    let code = format!("code-{}", uuid::Uuid::new_v4().simple());
    inner.grants.insert(
        code.clone(),
        Grant {
            redirect_uri: redirect_uri.clone(),
            code_challenge: param("code_challenge"),
            nonce: param("nonce"),
            identity,
        },
    );
    redirect(&[("code", &code)])
}

#[derive(Deserialize)]
struct TokenForm {
    grant_type: String,
    code: String,
    redirect_uri: String,
    code_verifier: Option<String>,
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

async fn token(
    State(provider): State<Provider>,
    headers: HeaderMap,
    Form(form): Form<TokenForm>,
) -> Response {
    let answer = {
        let mut inner = provider.inner.lock().unwrap();
        inner.token_requests += 1;
        inner.faults.token_answer
    };
    let tokens = exchange(&provider, &headers, form);
    match answer {
        TokenAnswer::Tokens => tokens,
        TokenAnswer::ServerError => (
            StatusCode::INTERNAL_SERVER_ERROR,
            [(CONTENT_TYPE, "text/html; charset=utf-8")],
            "<html><body><h1>500</h1>That's an error.</body></html>",
        )
            .into_response(),
        TokenAnswer::Garbled => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            r#"{"access_token":"at-1","token_type":"Bearer","id_tok"#,
        )
            .into_response(),
        TokenAnswer::Silence => std::future::pending().await,
        TokenAnswer::StalledBody => (
            StatusCode::OK,
            [(CONTENT_TYPE, "application/json")],
            Body::from_stream(futures::stream::pending::<Result<Bytes, std::io::Error>>()),
        )
            .into_response(),
    }
}

/// `/token`'s checks and, when they pass, the tokens.
fn exchange(provider: &Provider, headers: &HeaderMap, form: TokenForm) -> Response {
    let expected_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{CLIENT_ID}:{CLIENT_SECRET}"))
    );
    if headers.get(AUTHORIZATION).and_then(|v| v.to_str().ok()) != Some(expected_basic.as_str()) {
        return oauth_error(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            "bad client credentials",
        );
    }
    if form.grant_type != "authorization_code" {
        return oauth_error(StatusCode::BAD_REQUEST, "unsupported_grant_type", "");
    }
    let mut inner = provider.inner.lock().unwrap();
    // A code is single use.
    let Some(grant) = inner.grants.remove(&form.code) else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "unknown or used code",
        );
    };
    if grant.redirect_uri != form.redirect_uri {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "redirect_uri mismatch",
        );
    }
    let verifier = form.code_verifier.unwrap_or_default();
    if b64(&Sha256::digest(verifier.as_bytes())) != grant.code_challenge {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            "PKCE verification failed",
        );
    }
    inner.exchanges += 1;
    let now = chrono::Utc::now().timestamp();
    let claims = json!({
        "iss": provider.issuer,
        "aud": CLIENT_ID,
        "sub": grant.identity.sub,
        "email": grant.identity.email,
        "email_verified": grant.identity.email_verified,
        "name": grant.identity.name,
        "picture": "https://lh3.example.com/avatar.png",
        "nonce": inner.faults.wrong_nonce.clone().unwrap_or(grant.nonce),
        "iat": now,
        "exp": now + 3600,
        "azp": CLIENT_ID,
    });
    let published = inner.signing_key();
    let signer = if inner.faults.forged_signature {
        if inner.rotated { &KEY_1 } else { &KEY_2 }
    } else {
        published
    };
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = Some(published.kid.to_owned());
    let id_token = jsonwebtoken::encode(
        &header,
        &claims,
        &jsonwebtoken::EncodingKey::from_rsa_pem(signer.private_pem.as_bytes()).unwrap(),
    )
    .unwrap();
    axum::Json(json!({
        "access_token": format!("at-{}", uuid::Uuid::new_v4().simple()),
        "token_type": "Bearer",
        "expires_in": 3599,
        "scope": "openid email profile",
        "id_token": id_token,
    }))
    .into_response()
}

async fn jwks(State(provider): State<Provider>) -> Response {
    let mut inner = provider.inner.lock().unwrap();
    inner.jwks_fetches += 1;
    let key = inner.signing_key();
    axum::Json(json!({
        "keys": [{
            "kty": "RSA", "alg": "RS256", "use": "sig",
            "kid": key.kid, "n": key.n, "e": "AQAB",
        }]
    }))
    .into_response()
}
